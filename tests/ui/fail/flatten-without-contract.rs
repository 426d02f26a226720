use contract_sqlx::Contract;

#[derive(sqlx::FromRow)]
struct Audit {
    created_by: String,
}

#[derive(Contract)]
#[contract(table = "events", backends(postgres))]
struct Event {
    id: i64,
    #[sqlx(flatten)]
    audit: Audit,
}

fn main() {}
