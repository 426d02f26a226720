use contract_sqlx::Contract;

struct Money {
    cents: i64,
}

#[derive(Contract)]
#[contract(table = "events", backends(sqlite))]
struct Event {
    id: i64,
    price: Money,
}

fn main() {}
