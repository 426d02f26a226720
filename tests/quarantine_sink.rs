//! The quarantine table as a [`QuarantineSink`] (what a broker consumer may use instead of
//! a dead-letter destination): a record is stored with its reason, path, contract and
//! bytes; storing it again (a consumer killed before its acknowledgement) is skipped; a
//! new message under another id is not.

use crate::support;

use contract_sqlx::TenantName;
use contract_sqlx::payload::PayloadContract;
use contract_sqlx::quarantine::{
    Quarantine, QuarantineRecord, QuarantineSink, QueueQuarantine, QueueTable, TableSink,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Job {
    user_id: i64,
}

fn records(tenant: &str) -> Vec<QuarantineRecord> {
    let contract = PayloadContract::<Job>::named("job").with_version("3");
    [
        ("m-1", &br#"{"user_id": "x"}"#[..]),
        ("77", &b"\xff not utf-8"[..]),
    ]
    .into_iter()
    .map(|(id, raw)| {
        let rejection = contract.check(raw).expect_err("poison");
        QuarantineRecord::new(tenant, "jobs.rabbit", id, &contract, &rejection, raw)
            .with_header("x-origin", "test")
    })
    .collect()
}

async fn stored_twice_counts_once<DB>(sink: &TableSink<DB>, pool: &sqlx::Pool<DB>, tenant: &str)
where
    DB: contract_sqlx::quarantine::QuarantineStore,
    TableSink<DB>: QuarantineSink,
{
    sink.ensure_table(tenant).await.expect("quarantine table");
    let batch = records(tenant);
    assert_eq!(sink.put(&batch).await.expect("first put"), 2);
    assert_eq!(
        sink.put(&batch).await.expect("second put"),
        0,
        "a repeat is skipped"
    );
    let site = QueueQuarantine::new(
        TenantName::new(tenant).unwrap(),
        QueueTable::new("jobs.rabbit"),
    );
    let rows = site.list(pool).await.expect("list");
    assert_eq!(rows.len(), 2, "{rows:?}");
    let by_id = |id: i64| rows.iter().find(|r| r.source_id == id).expect("row");
    let first = by_id(batch[0].source_id());
    assert_eq!(
        (
            first.reason.as_str(),
            first.field_path.as_deref(),
            first.contract_name.as_str()
        ),
        ("contract_mismatch", Some("user_id"), "job")
    );
    assert_eq!(first.payload_raw, br#"{"user_id": "x"}"#);
    let second = by_id(77);
    assert_eq!(
        (second.reason.as_str(), second.payload_raw.as_slice()),
        ("not_utf8", &b"\xff not utf-8"[..])
    );
    assert!(sink.describe().contains("contract_quarantine"));
}

#[tokio::test]
async fn sqlite_table_sink_stores_each_record_once() {
    let dir = support::TempDir::new("contract_sink");
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.0.join("tenant.sqlite"))
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options)
        .await
        .expect("sqlite");
    let sink = TableSink::new(pool.clone(), Quarantine::default());
    stored_twice_counts_once(&sink, &pool, "tenant_a").await;
    pool.close().await;
}

#[tokio::test]
async fn postgres_table_sink_stores_each_record_once() {
    let db = support::PgScratch::create("contract_sink").await;
    let sink = TableSink::new(db.pool.clone(), Quarantine::default());
    stored_twice_counts_once(&sink, &db.pool, "tenant_b").await;
    db.drop_db().await;
}

/// On MySQL/MariaDB the quarantine table lives in the tenant's database and its
/// `quarantined_at` has no default: the sink sets it (every put failed with "Field
/// 'quarantined_at' doesn't have a default value", so a broker consumer storing its poison
/// there retried the batch for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_table_sink_stores_each_record_once() {
    let pool = support::mysql_pool().await;
    let tenant = support::unique_name("sink_once");
    let _cleanup = support::MySqlDatabases(vec![tenant.clone()]);
    support::exec(&pool, format!("CREATE DATABASE `{tenant}`")).await;
    let sink = TableSink::new(pool.clone(), Quarantine::default());
    stored_twice_counts_once(&sink, &pool, &tenant).await;
}

/// A record's texts are public fields (and a consumer may fill them from anywhere): a NUL
/// in the error or the field path, which PostgreSQL's `text` refuses, is stored escaped
/// instead of failing the write (and with it the tenant's batch, again and again).
#[tokio::test]
async fn postgres_table_sink_stores_texts_holding_a_nul() {
    let db = support::PgScratch::create("contract_sink_nul").await;
    let sink = TableSink::new(db.pool.clone(), Quarantine::default());
    sink.ensure_table("tenant_n")
        .await
        .expect("quarantine table");
    let mut record = records("tenant_n").swap_remove(0);
    record.error = "unknown variant `da\0rk`".to_owned();
    record.field_path = Some("shade\0".to_owned());
    assert_eq!(
        sink.put(std::slice::from_ref(&record)).await.expect("put"),
        1
    );
    let site = QueueQuarantine::new(
        TenantName::new("tenant_n").unwrap(),
        QueueTable::new("jobs.rabbit"),
    );
    let rows = site.list(&db.pool).await.expect("list");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].error, "unknown variant `da\\u0000rk`");
    assert_eq!(rows[0].field_path.as_deref(), Some("shade\\u0000"));
    db.drop_db().await;
}

/// Two consumers store the same record at once: a broker redelivered the message to a
/// second consumer while the first was still storing it. The caller holds the quarantine
/// table (its quarantine table made) so that both puts reach their insert before either
/// commits, until `release`; `waiting` counts the transactions waiting for a lock. Exactly
/// one row must be stored and counted (both puts used to find no waiting row and both
/// inserted). A put that fails instead stores nothing and leaves its message
/// unacknowledged; storing it again is then skipped.
async fn stored_at_once_counts_once<DB, W>(
    sink: &TableSink<DB>,
    pool: &sqlx::Pool<DB>,
    tenant: &str,
    release: tokio::sync::oneshot::Sender<()>,
    waiting: W,
) where
    DB: contract_sqlx::quarantine::QuarantineStore,
    TableSink<DB>: QuarantineSink,
    W: AsyncFn() -> i64,
{
    let record = records(tenant).swap_remove(0);
    let put = || sink.put(std::slice::from_ref(&record));
    let release_when_both_wait = async {
        let mut both = false;
        for _ in 0..400 {
            if waiting().await >= 2 {
                both = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        release.send(()).expect("the holder waits");
        both
    };
    let (first, second, both) = tokio::join!(put(), put(), release_when_both_wait);
    assert!(
        both,
        "the two puts never both waited: {:?}, {:?}",
        first.as_ref().map_err(ToString::to_string),
        second.as_ref().map_err(ToString::to_string)
    );
    let mut stored = 0;
    for outcome in [first, second] {
        match outcome {
            Ok(n) => stored += n,
            Err(e) => assert!(e.to_string().contains("will be delivered again"), "{e}"),
        }
    }
    let again = sink
        .put(std::slice::from_ref(&record))
        .await
        .expect("again");
    assert_eq!(
        stored + again,
        1,
        "stored at once: {stored}, again: {again}"
    );
    let site = QueueQuarantine::new(
        TenantName::new(tenant).unwrap(),
        QueueTable::new("jobs.rabbit"),
    );
    let rows = site.list(pool).await.expect("list");
    assert_eq!(rows.len(), 1, "{rows:?}");
}

/// Runs `hold` (statements that lock) in a transaction of its own, begun by `begin`,
/// until the returned sender is used, then commits it.
macro_rules! holding {
    ($pool:expr, $begin:expr, $hold:expr) => {{
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let (taken, is_taken) = tokio::sync::oneshot::channel::<()>();
        let (pool, hold) = ($pool.clone(), $hold);
        let holder = tokio::spawn(async move {
            let mut tx = pool.begin_with($begin).await.expect("hold");
            sqlx::raw_sql(sqlx::AssertSqlSafe(hold))
                .execute(&mut *tx)
                .await
                .expect("the lock");
            let _ = taken.send(());
            let _ = released.await;
            tx.commit().await.expect("release");
        });
        is_taken.await.expect("the lock is held");
        (release, holder)
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_table_sink_stores_a_record_put_twice_at_once_once() {
    let db = support::PgScratch::create("contract_sink_race").await;
    // The sink's sessions default to REPEATABLE READ, under which a snapshot taken before
    // the wait would miss the first put's row: the sink asks for READ COMMITTED itself.
    support::exec(
        &db.pool,
        format!(
            "ALTER DATABASE \"{}\" SET default_transaction_isolation = 'repeatable read'",
            db.name
        ),
    )
    .await;
    let sink_pool = sqlx::PgPool::connect(&db.url).await.expect("sink pool");
    let sink = TableSink::new(sink_pool.clone(), Quarantine::default());
    sink.ensure_table("tenant_r")
        .await
        .expect("quarantine table");
    let lock = "LOCK TABLE public.contract_quarantine IN SHARE MODE".to_owned();
    let (release, holder) = holding!(db.pool, "BEGIN", lock);
    let waiting = async || -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND datname = current_database()",
        )
        .fetch_one(&db.pool)
        .await
        .expect("activity")
    };
    stored_at_once_counts_once(&sink, &db.pool, "tenant_r", release, waiting).await;
    holder.await.expect("holder");
    sink_pool.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_table_sink_stores_a_record_put_twice_at_once_once() {
    let pool = support::mysql_pool().await;
    let tenant = support::unique_name("sink_race");
    let _cleanup = support::MySqlDatabases(vec![tenant.clone()]);
    support::exec(&pool, format!("CREATE DATABASE `{tenant}`")).await;
    let sink = TableSink::new(pool.clone(), Quarantine::default());
    sink.ensure_table(&tenant).await.expect("quarantine table");
    // A locking read of the queue's waiting rows at REPEATABLE READ locks the gap a new
    // row goes into.
    let lock = format!(
        "SELECT id FROM `{tenant}`.contract_quarantine \
         WHERE tenant = '{tenant}' AND queue = 'jobs.rabbit' AND replayed_at IS NULL FOR UPDATE"
    );
    let begin = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; START TRANSACTION";
    let (release, holder) = holding!(pool, begin, lock);
    // A blocked statement shows in the process list (InnoDB's own views did not list
    // these inserts as waiting): a put's insert, or its wait for the record's user lock.
    let waiting = async || -> i64 {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.processlist \
             WHERE info LIKE CONCAT('INSERT INTO `', ?, '`%') OR info LIKE 'SELECT GET_LOCK(%'",
        )
        .bind(&tenant)
        .fetch_one(&pool)
        .await
        .expect("processlist")
    };
    stored_at_once_counts_once(&sink, &pool, &tenant, release, waiting).await;
    holder.await.expect("holder");
}
