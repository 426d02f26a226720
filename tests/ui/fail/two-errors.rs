use contract_sqlx::Contract;

#[derive(Contract)]
#[contract(table = "events")]
#[sqlx(rename_all = "snake")]
struct Event {
    id: i64,
    #[contract(primary_kye)]
    user_id: i64,
}

fn main() {}
