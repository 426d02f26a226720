use contract_sqlx::Contract;

#[derive(Contract)]
#[contract(table = "events", backends(postgres))]
struct Event {
    id: i64,
    file: std::fs::File,
}

fn main() {}
