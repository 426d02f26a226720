use contract_sqlx::Contract;

#[derive(Contract)]
#[contract(table = "events")]
struct Event<T> {
    id: i64,
    payload: T,
}

fn main() {}
