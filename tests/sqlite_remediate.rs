//! Remediation on SQLite (one database file per tenant): safe-only apply inside one
//! `BEGIN IMMEDIATE` transaction with the audit row, a no-op second run, racing replicas,
//! and a failing statement that rolls everything back.

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};

use contract_sqlx::plan::Remediation;
use contract_sqlx::{
    ApplyOptions, Contract, ContractSet, DriftKind, remediate, sqlite_tenant_files,
};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Sqlite, SqliteConnection};

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "events")]
#[allow(dead_code)]
struct Event {
    #[contract(primary_key)]
    id: i64,
    user_id: i64,
    score: f64,
    note: Option<String>,
    #[contract(default = "'new'")]
    status: String,
}

/// A contract whose second new column cannot be added (SQLite refuses a non-constant
/// default in `ADD COLUMN`).
#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "levels")]
#[allow(dead_code)]
struct Level {
    #[contract(primary_key)]
    id: i64,
    label: Option<String>,
    #[contract(default = "(CURRENT_TIMESTAMP)")]
    seen_at: Option<String>,
}

const FULL: &str = "CREATE TABLE events (id INTEGER PRIMARY KEY, user_id BIGINT NOT NULL, score REAL NOT NULL, \
                    note TEXT, status TEXT NOT NULL DEFAULT 'new')";

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(support::unique_name(prefix));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn open(dir: &Path, tenant: &str) -> SqliteConnection {
    SqliteConnectOptions::new()
        .filename(dir.join(format!("{tenant}.db")))
        .create_if_missing(true)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("open {tenant}: {e}"))
}

async fn create_tenant(dir: &Path, tenant: &str, ddl: &str) {
    let mut conn = open(dir, tenant).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(ddl.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{ddl}: {e}"));
    conn.close().await.expect("close");
}

async fn seed_events(dir: &Path, tenant: &str, create: &str) {
    create_tenant(
        dir,
        tenant,
        &format!("{create}; INSERT INTO events (id, user_id, score) VALUES (1, 7, 0.5)"),
    )
    .await;
}

/// `(status, attempts, statements)` of every audit row of `tenant`.
async fn audit(dir: &Path, tenant: &str) -> Vec<(String, i64, String)> {
    let mut conn = open(dir, tenant).await;
    let rows = sqlx::query_as(
        "SELECT status, attempts, statements FROM contract_audit ORDER BY started_at",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap_or_default();
    conn.close().await.expect("close");
    rows
}

async fn columns(dir: &Path, tenant: &str, table: &str) -> Vec<String> {
    let mut conn = open(dir, tenant).await;
    let names = sqlx::query_scalar("SELECT name FROM pragma_table_info(?) ORDER BY cid")
        .bind(table)
        .fetch_all(&mut conn)
        .await
        .expect("columns");
    conn.close().await.expect("close");
    names
}

#[tokio::test]
async fn safe_only_adds_missing_columns_refuses_type_change_and_audits_once() {
    let scratch = Scratch::new("contract_sqlite_remediate");
    seed_events(&scratch.0, "tenant_1", FULL).await;
    seed_events(
        &scratch.0,
        "tenant_2",
        "CREATE TABLE events (id INTEGER PRIMARY KEY, user_id BIGINT NOT NULL, score REAL NOT NULL)",
    )
    .await;
    seed_events(
        &scratch.0,
        "tenant_3",
        "CREATE TABLE events (id INTEGER PRIMARY KEY, user_id BIGINT NOT NULL, score REAL NOT NULL, note TEXT)",
    )
    .await;
    // An incompatible type: TEXT where f64 is read.
    seed_events(
        &scratch.0,
        "tenant_4",
        &FULL.replace("score REAL", "score TEXT"),
    )
    .await;
    let dir = sqlite_tenant_files(&scratch.0).await.expect("tenants");
    let contracts = ContractSet::<Sqlite>::new().with::<Event>();
    let options = ApplyOptions::default();

    let run = remediate(&dir, &contracts, &Remediation::SafeOnly, &options, None)
        .await
        .expect("remediate");
    assert!(run.failed.is_empty(), "{:?}", run.failed);
    let mut remediated: Vec<&str> = run.audits.iter().map(|a| a.tenant.as_str()).collect();
    remediated.sort_unstable();
    assert_eq!(remediated, ["tenant_2", "tenant_3"]);
    let t2 = run
        .audits
        .iter()
        .find(|a| a.tenant == "tenant_2")
        .expect("t2");
    assert_eq!(
        t2.statements,
        [
            r#"ALTER TABLE "events" ADD COLUMN "note" TEXT"#,
            r#"ALTER TABLE "events" ADD COLUMN "status" TEXT NOT NULL DEFAULT 'new'"#,
        ]
    );
    let t4 = run
        .plans
        .iter()
        .find(|p| p.tenant == "tenant_4")
        .expect("t4 plan");
    assert!(t4.steps.is_empty(), "{:?}", t4.steps);
    assert_eq!(t4.refusals.len(), 1, "{:?}", t4.refusals);
    assert_eq!(t4.refusals[0].kind, DriftKind::TypeMismatch);
    assert!(
        t4.refusals[0].reason.contains("table rebuild"),
        "{}",
        t4.refusals[0].reason
    );
    assert_eq!(
        run.after.tenants_with("compliant").count(),
        3,
        "{}",
        run.after
    );

    for tenant in ["tenant_2", "tenant_3"] {
        let names = columns(&scratch.0, tenant, "events").await;
        assert!(
            names.iter().any(|n| n == "note") && names.iter().any(|n| n == "status"),
            "{tenant}: {names:?}"
        );
        let mut conn = open(&scratch.0, tenant).await;
        let rows: Vec<Event> = sqlx::query_as("SELECT * FROM events")
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("decode {tenant}: {e}"));
        conn.close().await.expect("close");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].status, "new");
        assert_eq!(rows[0].note, None);
        let rows = audit(&scratch.0, tenant).await;
        assert_eq!(rows.len(), 1, "{tenant}: {rows:?}");
        assert_eq!((rows[0].0.as_str(), rows[0].1), ("applied", 1));
    }
    assert!(audit(&scratch.0, "tenant_1").await.is_empty());
    assert!(audit(&scratch.0, "tenant_4").await.is_empty());
    assert_eq!(
        columns(&scratch.0, "tenant_4", "events").await.len(),
        5,
        "tenant_4 untouched"
    );

    let again = remediate(&dir, &contracts, &Remediation::SafeOnly, &options, None)
        .await
        .expect("second run");
    assert!(again.audits.is_empty(), "{:?}", again.audits);
    assert!(again.failed.is_empty(), "{:?}", again.failed);
    assert_eq!(again.plans.len(), 1, "only tenant_4 is still drifted");
    for tenant in ["tenant_2", "tenant_3"] {
        assert_eq!(audit(&scratch.0, tenant).await.len(), 1);
    }
}

#[tokio::test]
async fn four_racing_replicas_remediate_each_tenant_once() {
    let scratch = Scratch::new("contract_sqlite_race");
    for i in 1..=6 {
        let create = if i <= 4 {
            "CREATE TABLE events (id INTEGER PRIMARY KEY, user_id BIGINT NOT NULL, score REAL NOT NULL)"
        } else {
            FULL
        };
        seed_events(&scratch.0, &format!("tenant_{i}"), create).await;
    }
    let contracts = ContractSet::<Sqlite>::new().with::<Event>();
    let mut runs = tokio::task::JoinSet::new();
    for _ in 0..4 {
        // Each replica opens its own pools, like a separate process.
        let dir = sqlite_tenant_files(&scratch.0).await.expect("tenants");
        let contracts = contracts.clone();
        runs.spawn(async move {
            remediate(
                &dir,
                &contracts,
                &Remediation::SafeOnly,
                &ApplyOptions::default(),
                None,
            )
            .await
        });
    }
    let mut total = 0;
    while let Some(run) = runs.join_next().await {
        let run = run.expect("task").expect("remediate");
        assert!(run.failed.is_empty(), "{:?}", run.failed);
        assert!(run.after.is_clean(), "{}", run.after);
        total += run.audits.len();
    }
    assert_eq!(total, 4);
    for i in 1..=6 {
        let rows = audit(&scratch.0, &format!("tenant_{i}")).await;
        assert_eq!(rows.len(), usize::from(i <= 4), "tenant_{i}: {rows:?}");
    }
}

#[tokio::test]
async fn failing_statement_rolls_back_the_whole_tenant() {
    let scratch = Scratch::new("contract_sqlite_fail");
    create_tenant(
        &scratch.0,
        "tenant_1",
        "CREATE TABLE levels (id INTEGER PRIMARY KEY); INSERT INTO levels (id) VALUES (1)",
    )
    .await;
    let dir = sqlite_tenant_files(&scratch.0).await.expect("tenants");
    let contracts = ContractSet::<Sqlite>::new().with::<Level>();
    let run = remediate(
        &dir,
        &contracts,
        &Remediation::SafeOnly,
        &ApplyOptions::default(),
        None,
    )
    .await
    .expect("remediate");
    assert!(run.audits.is_empty(), "{:?}", run.audits);
    assert_eq!(run.failed.len(), 1, "{:?}", run.failed);
    let error = &run.failed[0].error;
    assert!(
        error.contains("rolled back") && error.contains("seen_at"),
        "{error}"
    );
    // The first ADD COLUMN ran in the same transaction: it is gone too, and so is the row.
    assert_eq!(columns(&scratch.0, "tenant_1", "levels").await, ["id"]);
    assert!(audit(&scratch.0, "tenant_1").await.is_empty());
    assert_eq!(run.after.tenants_with("drifted").count(), 1);
}
