//! Derive pass case: every supported field type family compiles, per backend.
#![allow(dead_code)]

use contract_sqlx::{Contract, check::TypeChecks};
use sqlx::types::Json;

#[derive(serde::Deserialize)]
struct Payload {
    kind: String,
}

/// Types every backend decodes: checked for PostgreSQL, MySQL and SQLite.
#[derive(sqlx::FromRow, Contract)]
#[contract(table = "everywhere")]
struct Everywhere {
    small: i16,
    int: i32,
    big: i64,
    tiny: i8,
    real: f32,
    double: f64,
    flag: bool,
    text: String,
    bytes: Vec<u8>,
    value: serde_json::Value,
    json: Json<Payload>,
    full_json: sqlx::types::Json<Vec<Payload>>,
    id: uuid::Uuid,
    chrono_at: chrono::DateTime<chrono::Utc>,
    chrono_naive: chrono::NaiveDateTime,
    chrono_date: chrono::NaiveDate,
    time_at: time::OffsetDateTime,
    time_naive: time::PrimitiveDateTime,
    time_date: time::Date,
    maybe: Option<i64>,
    maybe_text: Option<String>,
}

/// PostgreSQL-only types: arrays and NUMERIC as `Decimal` (SQLite has neither).
#[derive(sqlx::FromRow, Contract)]
#[contract(table = "pg_only", backends(postgres))]
struct PgOnly {
    ids: Vec<i64>,
    labels: Vec<String>,
    maybe_ids: Option<Vec<i64>>,
    amount: rust_decimal::Decimal,
}

/// Unsigned integers: MySQL and SQLite only (PostgreSQL has no unsigned types).
#[derive(sqlx::FromRow, Contract)]
#[contract(table = "unsigned", backends(mysql, sqlite))]
struct Unsigned {
    a: u8,
    b: u16,
    c: u32,
}

/// Container default: every column optional, flattened ones included.
#[derive(sqlx::FromRow, Contract, Default)]
#[contract(embedded)]
struct Inner {
    note: Option<String>,
}

#[derive(sqlx::FromRow, Contract, Default)]
#[contract(table = "defaults")]
#[sqlx(default)]
struct Defaults {
    a: i64,
    #[sqlx(flatten)]
    inner: Inner,
}

type MaybeId = Option<i64>;

#[derive(sqlx::FromRow, Contract)]
#[contract(table = "aliases", backends(sqlite))]
struct Aliases {
    via_alias: MaybeId,
}

fn main() {
    let c = Everywhere::contract();
    assert_eq!(c.columns.len(), 21);
    assert!(
        c.column("json").unwrap().json
            && c.column("value").unwrap().json
            && c.column("full_json").unwrap().json
    );
    assert!(!c.column("text").unwrap().json && !c.column("text").unwrap().nullable);
    assert!(c.column("maybe").unwrap().nullable);
    assert_eq!(c.column("maybe").unwrap().rust_type, "Option<i64>");
    assert_eq!(
        c.column("full_json").unwrap().rust_type,
        "sqlx::types::Json<Vec<Payload>>"
    );
    assert_eq!(
        <Everywhere as TypeChecks<sqlx::Postgres>>::type_checks().len(),
        21
    );
    assert_eq!(
        <Everywhere as TypeChecks<sqlx::MySql>>::type_checks().len(),
        21
    );
    assert_eq!(
        <Everywhere as TypeChecks<sqlx::Sqlite>>::type_checks().len(),
        21
    );

    assert_eq!(
        <PgOnly as TypeChecks<sqlx::Postgres>>::type_checks().len(),
        4
    );
    assert!(PgOnly::contract().column("maybe_ids").unwrap().nullable);
    assert_eq!(
        <Unsigned as TypeChecks<sqlx::MySql>>::type_checks().len(),
        3
    );

    let d = Defaults::contract();
    assert!(d.columns.iter().all(|c| c.optional));
    assert_eq!(d.columns.len(), 2);

    assert!(Aliases::contract().columns[0].nullable);
}
