use contract_sqlx::Contract;

#[derive(Contract)]
#[contract(table = "events")]
struct Event {
    id: i64,
    #[sqlx(try_from = "String", json(nullable))]
    payload: Option<String>,
}

fn main() {}
