//! The contract-test helpers users call from their own test suites.

use crate::support;

use contract_sqlx::{Contract, report::DriftKind, testing};
use sqlx::Postgres;
use support::PgScratch;

#[derive(sqlx::FromRow, Contract)]
#[contract(table = "orders")]
#[allow(dead_code)]
struct Order {
    id: i64,
    note: Option<String>,
}

/// The same table read with a different type: must not pass against an old snapshot.
#[derive(sqlx::FromRow, Contract)]
#[contract(table = "orders")]
#[allow(dead_code)]
struct OrderRetyped {
    id: i32,
    note: Option<String>,
}

#[tokio::test]
async fn assert_contract_passes_on_a_matching_schema_and_reports_drift_otherwise() {
    let scratch = PgScratch::create("contract_testing").await;
    sqlx::raw_sql(
        "CREATE SCHEMA app; CREATE TABLE app.orders (id int8 NOT NULL, note text); \
         CREATE SCHEMA old; CREATE TABLE old.orders (id int4 NOT NULL);",
    )
    .execute(&scratch.pool)
    .await
    .expect("schema");
    testing::assert_contract::<Order, Postgres>(&scratch.pool, "app").await;

    let findings = testing::check_contract::<Order, Postgres>(&scratch.pool, "old")
        .await
        .expect("check");
    let kinds: Vec<_> = findings
        .iter()
        .map(|f| (f.kind, f.column.as_deref()))
        .collect();
    assert_eq!(
        kinds,
        [
            (DriftKind::TypeMismatch, Some("id")),
            (DriftKind::MissingColumn, Some("note"))
        ]
    );

    let pool = scratch.pool.clone();
    let panic =
        tokio::spawn(
            async move { testing::assert_contract::<Order, Postgres>(&pool, "old").await },
        )
        .await
        .expect_err("must panic");
    let message = panic
        .into_panic()
        .downcast::<String>()
        .map(|s| *s)
        .unwrap_or_default();
    assert!(
        message.contains("contract Order does not hold on `old`"),
        "{message}"
    );
    assert!(
        message.contains("old.orders.id: expected int8 (i64), found integer"),
        "{message}"
    );
    scratch.drop_db().await;
}

#[tokio::test]
async fn snapshot_round_trip_and_offline_failure_after_a_type_change() {
    let scratch = PgScratch::create("contract_snapshot").await;
    sqlx::raw_sql("CREATE SCHEMA app; CREATE TABLE app.orders (id int8 NOT NULL, note text);")
        .execute(&scratch.pool)
        .await
        .expect("schema");
    let dir = support::TempDir::new("orders_snapshot");
    let path = dir.0.join("orders.json");
    assert!(testing::write_snapshot::<Order, Postgres>(&scratch.pool, "app", &path).await);
    scratch.drop_db().await;

    // Offline from here on: no database.
    testing::assert_snapshot::<Order>(&path);
    let failure = std::panic::catch_unwind(|| testing::assert_snapshot::<OrderRetyped>(&path))
        .expect_err("must fail");
    let message = failure.downcast::<String>().map(|s| *s).unwrap_or_default();
    assert!(message.contains("app.orders.id"), "{message}");
    assert!(
        message.contains("not verified in the snapshot"),
        "{message}"
    );
}
