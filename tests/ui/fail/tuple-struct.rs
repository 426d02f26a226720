use contract_sqlx::Contract;

#[derive(Contract)]
#[contract(table = "events")]
struct Event(i64, String);

fn main() {}
