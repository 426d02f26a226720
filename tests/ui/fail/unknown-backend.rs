use contract_sqlx::Contract;

#[derive(Contract)]
#[contract(table = "events", backends(postgres, oracle))]
struct Event {
    id: i64,
}

fn main() {}
