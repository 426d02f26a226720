use contract_sqlx::Contract;

#[derive(Contract)]
#[contract(table = "events")]
#[contract(table = "events_v2")]
struct Event {
    id: i64,
}

fn main() {}
