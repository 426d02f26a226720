use contract_sqlx::Contract;

#[derive(Contract)]
#[contract(table = "events")]
struct Event {
    #[contract(primary)]
    id: i64,
}

fn main() {}
