use contract_sqlx::Contract;

#[derive(Contract)]
struct Event {
    id: i64,
}

fn main() {}
