use contract_sqlx::Contract;

#[derive(Contract)]
#[contract(table = "events")]
union Event {
    id: i64,
    code: u32,
}

fn main() {}
