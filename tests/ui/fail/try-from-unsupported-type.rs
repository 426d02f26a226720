use contract_sqlx::Contract;

#[derive(Contract)]
#[contract(table = "events", backends(postgres))]
struct Event {
    id: i64,
    #[sqlx(try_from = "std::time::Instant")]
    seen_at: u64,
}

fn main() {}
