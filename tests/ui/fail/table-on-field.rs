use contract_sqlx::Contract;

#[derive(Contract)]
#[contract(table = "events")]
struct Event {
    #[contract(table = "users")]
    user_id: i64,
}

fn main() {}
