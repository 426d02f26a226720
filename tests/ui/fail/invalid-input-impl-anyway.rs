use contract_sqlx::{Contract, check::TypeChecks};

#[derive(Contract)]
#[contract(table = "events", primary_key)]
struct Event {
    id: i64,
}

// Only the bad attribute above is reported: the derive still implements the traits, so
// code using `Event` has no follow-on errors.
#[allow(dead_code)]
fn uses_the_contract() -> usize {
    let _ = Event::contract();
    <Event as TypeChecks<sqlx::Postgres>>::type_checks().len()
}

fn main() {}
