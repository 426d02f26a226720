use contract_sqlx::Contract;

// `Vec<i64>` is a PostgreSQL array; MySQL and SQLite cannot decode it, and all three
// backends are enabled here. The fix is #[contract(backends(postgres))].
#[derive(Contract)]
#[contract(table = "samples")]
struct Sample {
    id: i64,
    values: Vec<i64>,
}

fn main() {}
