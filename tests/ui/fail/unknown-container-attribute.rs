use contract_sqlx::Contract;

#[derive(Contract)]
#[contract(table = "events", tabel = "events")]
struct Event {
    id: i64,
}

fn main() {}
