use contract_sqlx::Contract;

#[derive(Contract)]
#[contract(table = "events")]
enum Event {
    Created { id: i64 },
}

fn main() {}
