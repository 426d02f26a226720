//! What the SQLite backend leaves behind in the tenant pools it shares with consumers: a
//! remediation cancelled while it waits for the write lock never hands a connection with
//! foreign keys off back to the pool; the directory's connection budget never cuts or
//! blocks a consumer's batch and leaves the consumer's pool hooks in force.

use crate::support;

use std::path::Path;
use std::time::Duration;

use contract_sqlx::plan::Remediation;
use contract_sqlx::{
    Contract, Guard, SchemaEpoch,
    check::ContractSet,
    remediate,
    tenants::{ConnectionBudget, sqlite_tenant_files_with},
};
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
        ConnectionBudget::default(),
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

/// Whether the connection has the TEMP table `name` (connection-local: it tells one
/// connection from another).
async fn has_temp_table(conn: &mut SqliteConnection, name: &str) -> bool {
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM temp.sqlite_master WHERE name = ?")
        .bind(name)
        .fetch_one(conn)
        .await
        .expect("temp catalog")
        == 1
}

/// Waits until the pool has an idle connection: a dropped connection is handed back on a
/// task of its own.
async fn idle_again(pool: &sqlx::SqlitePool) {
    for _ in 0..2_000 {
        if pool.num_idle() > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the released connection never became idle (closed by the budget?)");
}

#[tokio::test]
async fn connection_budget_never_cuts_or_blocks_batches_and_keeps_consumer_hooks() {
    const FILES: usize = 6;
    let scratch = support::TempDir::new("contract_sqlite_budget_consumers");
    for i in 0..FILES {
        let mut conn = open(&scratch.0, &format!("tenant_{i}")).await;
        run_sql(
            &mut conn,
            "CREATE TABLE events (id INTEGER PRIMARY KEY, user_id BIGINT NOT NULL)",
        )
        .await;
        conn.close().await.expect("close");
    }
    // The consumer's hooks: a marker made by `after_connect` on every new connection, and
    // the schema epoch's `before_acquire`.
    let epoch = SchemaEpoch::new();
    let options = epoch
        .install(SqlitePoolOptions::new().max_connections(2))
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::raw_sql("CREATE TEMP TABLE opened_by_consumer_hook (x)")
                    .execute(conn)
                    .await
                    .map(|_| ())
            })
        });
    // One connection for six files.
    let dir = sqlite_tenant_files_with(
        &scratch.0,
        options,
        SqliteConnectOptions::new(),
        ConnectionBudget::new(1),
    )
    .await
    .expect("tenants");
    let pool_of = |i: usize| dir.pool_of(&format!("tenant_{i}")).expect("pool").clone();

    // A batch in every file at once, each holding its connection in a transaction while
    // the guard passes over all of them: six connections in use on a budget of one.
    let mut batches = Vec::new();
    for i in 0..FILES {
        let mut tx = pool_of(i)
            .begin()
            .await
            .expect("begin: never waits on the budget");
        sqlx::query("INSERT INTO events (user_id) VALUES (?)")
            .bind(i64::try_from(i).expect("small"))
            .execute(&mut *tx)
            .await
            .expect("insert");
        batches.push(tx);
    }
    let control = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(scratch.0.join("guard_control"))
                .create_if_missing(true),
        )
        .await
        .expect("control pool");
    let guard = Guard::<Sqlite>::builder()
        .contract::<Event>()
        .directory(dir.clone())
        .in_memory_control()
        .start(&control)
        .await
        .expect("guard");
    guard.revalidate().await.expect("revalidate");
    assert!((0..FILES).all(|i| guard.gate(&format!("tenant_{i}")).is_open()));
    for tx in batches {
        tx.commit()
            .await
            .expect("the batch's connection was not cut");
    }
    for i in 0..FILES {
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
            .fetch_one(&pool_of(i))
            .await
            .expect("count");
        assert_eq!(rows, 1, "tenant_{i}");
    }
    drop(guard);
    control.close().await;
    // The releases above run the budget's hook asynchronously; until the fleet is back
    // within its one connection (idle), a release would rightly close tenant_0's
    // connection instead of pooling it.
    let mut settled = false;
    for _ in 0..2_000 {
        let open: u32 = (0..FILES).map(|i| pool_of(i).size()).sum();
        let idle: usize = (0..FILES).map(|i| pool_of(i).num_idle()).sum();
        if open <= 1 && usize::try_from(open).is_ok_and(|open| open == idle) {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        settled,
        "the fleet never settled within its budget of one idle connection"
    );

    // Within the budget a released connection stays open and is reused; the consumer's
    // `after_connect` ran on it, and its `before_acquire` still recycles it after an
    // epoch bump.
    let pool = pool_of(0);
    let mut conn = pool.acquire().await.expect("acquire");
    assert!(has_temp_table(&mut conn, "opened_by_consumer_hook").await);
    run_sql(&mut conn, "CREATE TEMP TABLE this_connection (x)").await;
    drop(conn);
    idle_again(&pool).await;
    let mut conn = pool.acquire().await.expect("acquire");
    assert!(has_temp_table(&mut conn, "this_connection").await, "reused");
    drop(conn);
    idle_again(&pool).await;
    epoch.bump();
    let mut conn = pool.acquire().await.expect("acquire");
    assert!(
        !has_temp_table(&mut conn, "this_connection").await,
        "recycled by the epoch"
    );
    assert!(has_temp_table(&mut conn, "opened_by_consumer_hook").await);
}

#[tokio::test]
async fn connection_budget_closes_idle_connections_of_the_least_recently_used_files() {
    let scratch = support::TempDir::new("contract_sqlite_budget_lru");
    for tenant in ["tenant_a", "tenant_b", "tenant_c"] {
        open(&scratch.0, tenant).await.close().await.expect("close");
    }
    let dir = sqlite_tenant_files_with(
        &scratch.0,
        SqlitePoolOptions::new().max_connections(2),
        SqliteConnectOptions::new(),
        ConnectionBudget::new(2),
    )
    .await
    .expect("tenants");
    let pool = |t: &str| dir.pool_of(t).expect("pool").clone();
    let size = |t: &str| pool(t).size();
    for tenant in ["tenant_a", "tenant_b", "tenant_c", "tenant_b"] {
        let pool = pool(tenant);
        sqlx::query("SELECT 1").execute(&pool).await.expect("query");
        idle_again(&pool).await;
    }
    // `tenant_a` was used least recently: its connection made room for `tenant_c`'s.
    assert_eq!(
        (size("tenant_a"), size("tenant_b"), size("tenant_c")),
        (0, 1, 1)
    );
}
