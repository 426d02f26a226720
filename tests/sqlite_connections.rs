//! What the SQLite backend leaves behind in the tenant pools it shares with consumers: a
//! remediation cancelled while it waits for the write lock never hands a connection with
//! foreign keys off back to the pool.

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::time::Duration;

use contract_sqlx::plan::Remediation;
use contract_sqlx::{Contract, check::ContractSet, remediate, sqlite_tenant_files_with};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{ConnectOptions, Connection, Sqlite, SqliteConnection};

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "events")]
#[allow(dead_code)]
struct Event {
    #[contract(primary_key)]
    id: i64,
    user_id: i64,
}

async fn open(dir: &Path, tenant: &str) -> SqliteConnection {
    SqliteConnectOptions::new()
        .filename(dir.join(format!("{tenant}.db")))
        .create_if_missing(true)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("open {tenant}: {e}"))
}

async fn run_sql(conn: &mut SqliteConnection, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test]
async fn cancelled_rebuild_never_pools_a_connection_with_foreign_keys_off() {
    let scratch = support::TempDir::new("contract_sqlite_cancel");
    // `user_id` is TEXT where the contract reads i64: a type change, so a table rebuild,
    // which turns foreign keys off on its connection. `children` cascades from `events`.
    let mut setup = open(&scratch.0, "tenant_1").await;
    run_sql(
        &mut setup,
        "CREATE TABLE events (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL);
         CREATE TABLE children (id INTEGER PRIMARY KEY,
             event_id INTEGER NOT NULL REFERENCES events (id) ON DELETE CASCADE);
         INSERT INTO events (id, user_id) VALUES (1, '7'), (2, '8');
         INSERT INTO children (id, event_id) VALUES (1, 1), (2, 1);",
    )
    .await;
    setup.close().await.expect("close");
    // One connection per pool: whoever acquires next gets the very connection the
    // cancelled remediation used.
    let dir = sqlite_tenant_files_with(
        &scratch.0,
        SqlitePoolOptions::new().max_connections(1),
        SqliteConnectOptions::new(),
    )
    .await
    .expect("tenants");
    let contracts = ContractSet::<Sqlite>::new().with::<Event>();
    let dry = remediate(&dir, &contracts, Remediation::DryRun)
        .run()
        .await
        .expect("dry run");
    let plan = dry
        .awaiting_approval
        .get("tenant_1")
        .expect("a rebuild plan");
    assert_eq!(plan.steps.len(), 1, "{:?}", plan.refusals);

    // Another writer holds the file's write lock: the rebuild waits in `BEGIN IMMEDIATE`,
    // with foreign keys already off, until the caller gives up on it.
    let mut writer = open(&scratch.0, "tenant_1").await;
    run_sql(&mut writer, "BEGIN IMMEDIATE").await;
    let cancelled = tokio::time::timeout(
        Duration::from_secs(2),
        remediate(&dir, &contracts, Remediation::Approved(plan.hash.clone())).run(),
    )
    .await;
    assert!(
        cancelled.is_err(),
        "the remediation should still be waiting for the write lock: {cancelled:?}"
    );
    run_sql(&mut writer, "ROLLBACK").await;
    writer.close().await.expect("close");

    // The next user of the pool: foreign keys are enforced as on any fresh connection.
    let pool = dir.pool_of("tenant_1").expect("pool");
    let mut conn = pool.acquire().await.expect("acquire");
    let enforced: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(&mut *conn)
        .await
        .expect("pragma");
    sqlx::query("DELETE FROM events WHERE id = 1")
        .execute(&mut *conn)
        .await
        .expect("delete a parent");
    let orphans: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM children WHERE event_id = 1")
        .fetch_one(&mut *conn)
        .await
        .expect("count children");
    let dangling = sqlx::query("INSERT INTO children (id, event_id) VALUES (3, 404)")
        .execute(&mut *conn)
        .await;
    assert_eq!(
        (enforced, orphans, dangling.is_err()),
        (1, 0, true),
        "PRAGMA foreign_keys = {enforced}; children left after deleting their parent: {orphans}; \
         a child of a missing parent was {}",
        if dangling.is_ok() {
            "accepted"
        } else {
            "refused"
        }
    );
}
