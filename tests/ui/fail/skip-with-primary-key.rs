use contract_sqlx::Contract;

#[derive(Contract)]
#[contract(table = "events")]
struct Event {
    #[sqlx(skip)]
    #[contract(primary_key)]
    id: i64,
}

fn main() {}
