use contract_sqlx::Contract;

#[derive(Contract)]
#[contract(embedded)]
struct Audit {
    created_by: String,
}

#[derive(Contract)]
#[contract(table = "events")]
struct Event {
    id: i64,
    #[sqlx(flatten, json)]
    audit: Audit,
}

fn main() {}
