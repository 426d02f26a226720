use contract_sqlx::Contract;

#[derive(Contract)]
#[contract(table = "events")]
struct Event;

fn main() {}
