use contract_sqlx::Contract;

#[derive(Contract)]
#[contract(table = "events")]
#[sqlx(rename_all = "SCREAMING-KEBAB-CASE")]
struct Event {
    user_id: i64,
}

fn main() {}
