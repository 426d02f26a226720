use contract_sqlx::Contract;

use sqlx as _; // Audit below is a plain struct: neither `Contract` nor `FromRow`.
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
