use contract_sqlx::Contract;

#[derive(Contract)]
#[contract(table = "events")]
struct Event {
    id: i64,
    #[sqlx(json(nullable))]
    tags: Vec<String>,
}

fn main() {}
