use contract_sqlx::Contract;

#[derive(Contract)]
#[contract(embedded, table = "audit")]
struct Audit {
    created_by: String,
}

fn main() {}
