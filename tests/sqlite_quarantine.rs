//! Quarantine on SQLite (one file per tenant, the quarantine table beside the queue):
//! counts conserved, idempotent, a reused `INTEGER PRIMARY KEY` never overwrites a waiting
//! message, bytes that are not UTF-8 survive the round trip, failures name the missing
//! table, replay re-checks, and a table of the previous release is upgraded.

use crate::support;

use std::path::PathBuf;

use contract_sqlx::TenantName;
use contract_sqlx::payload::{PayloadContract, RejectReason, Rejection};
use contract_sqlx::quarantine::{HeldReason, PayloadType, QueueQuarantine, QueueTable};
use serde::Deserialize;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Job {
    user_id: i64,
    kind: String,
}

/// A scratch database file in its own directory, removed on drop with its `-wal`/`-shm`
/// companions.
struct Scratch(PathBuf, #[allow(dead_code)] support::TempDir);

impl Scratch {
    fn new(prefix: &str) -> Self {
        let dir = support::TempDir::new(prefix);
        Self(dir.0.join("db.sqlite"), dir)
    }
}

async fn tenant_pool(scratch: &Scratch) -> SqlitePool {
    SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(&scratch.0)
                .create_if_missing(true),
        )
        .await
        .unwrap()
}

async fn create_jobs(pool: &SqlitePool) {
    sqlx::raw_sql(
        "CREATE TABLE jobs (id INTEGER PRIMARY KEY, payload TEXT NOT NULL,
            enqueued_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP, attempts INTEGER NOT NULL DEFAULT 0)",
    )
    .execute(pool)
    .await
    .unwrap();
}

async fn count(pool: &SqlitePool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

fn contract() -> PayloadContract<Job> {
    PayloadContract::named("job").with_version("1")
}

/// A contract that accepts any JSON document.
fn any_json() -> PayloadContract<serde_json::Value> {
    PayloadContract::named("any")
}

fn jobs() -> QueueQuarantine {
    QueueQuarantine::new(
        TenantName::new("tenant_s").unwrap(),
        QueueTable::new("jobs"),
    )
}

/// Claims batches until the queue is empty, quarantining the poison and acking the rest
/// in each batch's transaction. Returns (processed, quarantined).
async fn consume(
    pool: &SqlitePool,
    site: &QueueQuarantine,
    contract: &PayloadContract<Job>,
) -> (u64, u64) {
    let (mut processed, mut quarantined) = (0, 0);
    loop {
        let mut tx = pool.begin().await.unwrap();
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "UPDATE jobs SET attempts = attempts + 1
             WHERE id IN (SELECT id FROM jobs ORDER BY id LIMIT 6)
             RETURNING id, CAST(payload AS BLOB)",
        )
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        if rows.is_empty() {
            tx.rollback().await.unwrap();
            return (processed, quarantined);
        }
        let checked: Vec<(i64, &[u8], Result<Job, Rejection>)> = rows
            .iter()
            .map(|(id, raw)| (*id, raw.as_slice(), contract.check(raw)))
            .collect();
        let rejected: Vec<(i64, &[u8], &Rejection)> = checked
            .iter()
            .filter_map(|(id, raw, r)| r.as_ref().err().map(|e| (*id, *raw, e)))
            .collect();
        quarantined += site
            .quarantine(&mut *tx, contract, &rejected)
            .await
            .unwrap();
        for (id, _, r) in &checked {
            if r.is_ok() {
                processed += sqlx::query("DELETE FROM jobs WHERE id = ?")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .unwrap()
                    .rows_affected();
            }
        }
        tx.commit().await.unwrap();
    }
}

#[tokio::test]
async fn sqlite_poison_is_quarantined_replayed_and_never_lost() {
    let scratch = Scratch::new("contract_sqlite_quarantine");
    let pool = tenant_pool(&scratch).await;
    let (site, contract) = (jobs(), contract());
    create_jobs(&pool).await;
    // 20 messages: every fifth misses `kind`, id 3 is not JSON, id 8 is not UTF-8.
    for i in 1..=20_i64 {
        let raw: Vec<u8> = match i {
            3 => b"{oops".to_vec(),
            8 => b"{\"user_id\": 8, \"kind\": \"\xff\"}".to_vec(),
            _ if i % 5 == 0 => format!(r#"{{"user_id": {i}}}"#).into_bytes(),
            _ => format!(r#"{{"user_id": {i}, "kind": "email"}}"#).into_bytes(),
        };
        // Bound as a blob on purpose: SQLite keeps bytes that are not UTF-8 in any column.
        sqlx::query("INSERT INTO jobs (id, payload) VALUES (?, ?)")
            .bind(i)
            .bind(raw)
            .execute(&pool)
            .await
            .unwrap();
    }
    site.ensure_table(&pool).await.unwrap();
    site.ensure_table(&pool).await.unwrap();

    let scan = site.backlog_scan(&pool, &contract).await.unwrap();
    assert_eq!((scan.total, scan.valid, scan.rejected()), (20, 14, 6));
    assert_eq!(scan.rejected_by_reason.get("contract_mismatch"), Some(&4));
    assert_eq!(scan.rejected_by_reason.get("invalid_json"), Some(&1));
    assert_eq!(scan.rejected_by_reason.get("not_utf8"), Some(&1));
    assert_eq!(
        count(&pool, "SELECT count(*) FROM jobs").await,
        20,
        "the scan consumes nothing"
    );

    let (processed, moved) = consume(&pool, &site, &contract).await;
    let left = count(&pool, "SELECT count(*) FROM jobs").await;
    let stored = count(&pool, "SELECT count(*) FROM contract_quarantine").await;
    assert_eq!((left, processed, moved, stored), (0, 14, 6, 6));

    let listed = site.list(&pool).await.unwrap();
    let ids: Vec<i64> = listed.iter().map(|m| m.source_id).collect();
    assert_eq!(ids, [3, 5, 8, 10, 15, 20]);
    assert_eq!(listed[0].reason, "invalid_json");
    assert_eq!(listed[0].payload, None);
    assert_eq!(listed[1].reason, "contract_mismatch");
    assert_eq!(listed[1].payload.as_deref(), Some(r#"{"user_id": 5}"#));
    assert!(listed[1].error.contains("missing field `kind`"));
    assert_eq!(listed[1].attempts, 1);
    assert!(listed[1].enqueued_at.is_some());
    assert_eq!(listed[2].reason, "not_utf8");
    assert_eq!(
        listed[2].payload_raw,
        b"{\"user_id\": 8, \"kind\": \"\xff\"}"
    );
    assert!(
        listed
            .iter()
            .all(|m| m.contract_fingerprint == contract.fingerprint())
    );

    // Quarantining again is a no-op.
    let again: Vec<(i64, Vec<u8>, Rejection)> = listed
        .iter()
        .map(|m| {
            (
                m.source_id,
                m.payload_raw.clone(),
                contract.check(&m.payload_raw).unwrap_err(),
            )
        })
        .collect();
    let refs: Vec<(i64, &[u8], &Rejection)> = again
        .iter()
        .map(|(id, raw, e)| (*id, raw.as_slice(), e))
        .collect();
    let mut conn = pool.acquire().await.unwrap();
    // A bare connection works too: the move runs in its own transaction.
    let n = site.quarantine(&mut *conn, &contract, &refs).await.unwrap();
    drop(conn);
    assert_eq!(n, 0);
    assert_eq!(site.list(&pool).await.unwrap(), listed);

    // Replay re-checks: with a contract that accepts any JSON document, the four JSON
    // ones go back (ids and bytes restored, attempts 0); `{oops` and the bytes that are
    // not UTF-8 stay waiting.
    let report = site.replay(&pool, &any_json()).await.unwrap();
    assert_eq!(report.replayed, 4);
    let still: Vec<(i64, RejectReason)> = report
        .still_rejected
        .iter()
        .map(|s| (s.source_id, s.rejection.reason))
        .collect();
    assert_eq!(
        still,
        [(3, RejectReason::InvalidJson), (8, RejectReason::NotUtf8)]
    );
    assert_eq!(site.replay(&pool, &any_json()).await.unwrap().replayed, 0);
    let back: Vec<(i64, Vec<u8>, i64)> =
        sqlx::query_as("SELECT id, CAST(payload AS BLOB), attempts FROM jobs ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        back.iter().map(|r| r.0).collect::<Vec<_>>(),
        [5, 10, 15, 20]
    );
    for (id, raw, attempts) in &back {
        let m = listed.iter().find(|m| m.source_id == *id).unwrap();
        assert_eq!(raw, &m.payload_raw);
        assert_eq!(*attempts, 0);
    }

    // Still poison for the consumer: re-quarantined as new rows, every one kept.
    let (processed, moved) = consume(&pool, &site, &contract).await;
    assert_eq!((processed, moved), (0, 4));
    let listed = site.list(&pool).await.unwrap();
    assert_eq!(listed.len(), 10);
    assert_eq!(listed.iter().filter(|m| m.is_waiting()).count(), 6);
    assert_eq!(count(&pool, "SELECT count(*) FROM jobs").await, 0);
    pool.close().await;
}

#[tokio::test]
async fn sqlite_backlog_scan_reads_every_page() {
    let scratch = Scratch::new("contract_sqlite_backlog");
    let pool = tenant_pool(&scratch).await;
    sqlx::raw_sql(
        "CREATE TABLE q (msg_id INTEGER PRIMARY KEY, body TEXT NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1203)
         INSERT INTO q SELECT i, CASE WHEN i % 100 = 0 THEN '{}'
             ELSE '{\"user_id\": ' || i || ', \"kind\": \"sms\"}' END FROM n;",
    )
    .execute(&pool)
    .await
    .unwrap();
    let table = QueueTable::new("q")
        .with_id("msg_id")
        .with_payload("body", PayloadType::Text);
    let site = QueueQuarantine::new(TenantName::new("tenant_p").unwrap(), table);
    let scan = site
        .backlog_scan(&pool, &PayloadContract::<Job>::new())
        .await
        .unwrap();
    assert_eq!((scan.total, scan.valid, scan.rejected()), (1203, 1191, 12));
    pool.close().await;
}

#[tokio::test]
async fn sqlite_quarantine_never_overwrites_a_waiting_message_when_a_queue_id_is_reused() {
    let scratch = Scratch::new("contract_sqlite_reuse");
    let pool = tenant_pool(&scratch).await;
    let (site, contract) = (jobs(), contract());
    create_jobs(&pool).await;
    site.ensure_table(&pool).await.unwrap();
    // `INTEGER PRIMARY KEY` hands out max(id) + 1: the freed id 1 comes back.
    let (a, b) = (r#"{"from": "A"}"#, r#"{"from": "B"}"#);
    for p in [a, b] {
        let id: i64 = sqlx::query_scalar("INSERT INTO jobs (payload) VALUES (?) RETURNING id")
            .bind(p)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(id, 1);
        assert_eq!(consume(&pool, &site, &contract).await, (0, 1));
    }
    let listed = site.list(&pool).await.unwrap();
    let raws: Vec<&[u8]> = listed.iter().map(|m| m.payload_raw.as_slice()).collect();
    assert_eq!(
        raws,
        [a.as_bytes(), b.as_bytes()],
        "both waiting messages kept"
    );

    // The first goes back; the second waits until id 1 is free.
    let report = site.replay(&pool, &any_json()).await.unwrap();
    assert_eq!(report.replayed, 1);
    assert_eq!(report.held.len(), 1);
    assert_eq!(report.held[0].why, HeldReason::IdInUse);
    let queued: String = sqlx::query_scalar("SELECT payload FROM jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(queued, a);
    sqlx::query("DELETE FROM jobs")
        .execute(&pool)
        .await
        .unwrap();
    let report = site.replay(&pool, &any_json()).await.unwrap();
    assert_eq!((report.replayed, report.waiting()), (1, 0));
    let queued: String = sqlx::query_scalar("SELECT payload FROM jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(queued, b);
    pool.close().await;
}

#[tokio::test]
async fn sqlite_poison_of_every_kind_moves_with_its_bytes() {
    let scratch = Scratch::new("contract_sqlite_kinds");
    let pool = tenant_pool(&scratch).await;
    let site = jobs();
    let contract = contract().with_max_bytes(200);
    create_jobs(&pool).await;
    site.ensure_table(&pool).await.unwrap();
    let payloads: [Vec<u8>; 4] = [
        br#"{"user_id":"x","kind":"\ud800"}"#.to_vec(),
        br#"{"user_id": 1, "kind": 2, "k": "\u0000"}"#.to_vec(),
        b"{\"user_id\": 1, \"kind\": \"\xc3\x28\"}".to_vec(),
        format!(r#"{{"user_id": 1, "kind": "{}"}}"#, "x".repeat(300)).into_bytes(),
    ];
    for p in &payloads {
        sqlx::query("INSERT INTO jobs (payload) VALUES (?)")
            .bind(p)
            .execute(&pool)
            .await
            .unwrap();
    }
    assert_eq!(consume(&pool, &site, &contract).await, (0, 4));
    let listed = site.list(&pool).await.unwrap();
    let raws: Vec<&Vec<u8>> = listed.iter().map(|m| &m.payload_raw).collect();
    assert_eq!(raws, payloads.iter().collect::<Vec<_>>());
    let reasons: Vec<&str> = listed.iter().map(|m| m.reason.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "contract_mismatch",
            "contract_mismatch",
            "not_utf8",
            "too_large"
        ]
    );
    // The same rule on every backend: no parsed copy of a lone surrogate or `\u0000`.
    assert!(listed.iter().all(|m| m.payload.is_none()), "{listed:?}");
    pool.close().await;
}

#[tokio::test]
async fn sqlite_quarantine_failure_says_which_table_is_missing() {
    let scratch = Scratch::new("contract_sqlite_missing");
    let pool = tenant_pool(&scratch).await;
    let (site, contract) = (jobs(), contract());
    create_jobs(&pool).await;
    sqlx::query("INSERT INTO jobs (payload) VALUES ('{}')")
        .execute(&pool)
        .await
        .unwrap();
    let rejection = contract.check(b"{}").unwrap_err();
    let poison = [(1, &b"{}"[..], &rejection)];
    let mut tx = pool.begin().await.unwrap();
    let text = site
        .quarantine(&mut *tx, &contract, &poison)
        .await
        .unwrap_err()
        .to_string();
    for part in [
        "tenant `tenant_s`",
        "queue `jobs`",
        "the quarantine table \"contract_quarantine\" does not exist",
        "ensure_table",
    ] {
        assert!(text.contains(part), "{part}: {text}");
    }
    assert!(!text.contains("server is up"), "{text}");
    tx.rollback().await.unwrap();

    site.ensure_table(&pool).await.unwrap();
    let wrong = QueueQuarantine::new(
        TenantName::new("tenant_s").unwrap(),
        QueueTable::new("jobz"),
    );
    let mut tx = pool.begin().await.unwrap();
    let text = wrong
        .quarantine(&mut *tx, &contract, &poison)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("the queue table \"jobz\" does not exist") && text.contains("queue `jobz`"),
        "{text}"
    );
    tx.rollback().await.unwrap();
    pool.close().await;
}

#[tokio::test]
async fn sqlite_replay_re_enqueues_only_what_the_contract_now_accepts() {
    let scratch = Scratch::new("contract_sqlite_recheck");
    let pool = tenant_pool(&scratch).await;
    let (site, contract) = (jobs(), contract());
    create_jobs(&pool).await;
    sqlx::raw_sql(
        r#"INSERT INTO jobs (payload) VALUES ('{"user_id": 1}'), ('{"kind": "sms"}'), ('{"user_id": 3}')"#,
    )
    .execute(&pool)
    .await
    .unwrap();
    site.ensure_table(&pool).await.unwrap();
    assert_eq!(consume(&pool, &site, &contract).await, (0, 3));
    // The fixed contract makes `kind` optional but still needs `user_id`.
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct JobV2 {
        user_id: i64,
        kind: Option<String>,
    }
    let fixed = PayloadContract::<JobV2>::named("job").with_version("2");
    let report = site.replay(&pool, &fixed).await.unwrap();
    assert_eq!(report.replayed, 2);
    let still: Vec<i64> = report.still_rejected.iter().map(|s| s.source_id).collect();
    assert_eq!(still, [2]);
    assert!(
        report.still_rejected[0]
            .rejection
            .message
            .contains("user_id")
    );
    let queued: Vec<i64> = sqlx::query_scalar("SELECT id FROM jobs ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(queued, [1, 3]);
    let waiting: Vec<_> = site
        .list(&pool)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.is_waiting())
        .collect();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].payload_raw, br#"{"kind": "sms"}"#);
    pool.close().await;
}

#[tokio::test]
async fn sqlite_ensure_table_upgrades_a_table_with_the_old_unique_key() {
    let scratch = Scratch::new("contract_sqlite_upgrade");
    let pool = tenant_pool(&scratch).await;
    let (site, contract) = (jobs(), contract());
    create_jobs(&pool).await;
    // The table as the previous release created it, with one waiting row.
    sqlx::raw_sql(
        "CREATE TABLE contract_quarantine (id INTEGER PRIMARY KEY, tenant TEXT NOT NULL,
            queue TEXT NOT NULL, source_id INTEGER NOT NULL, payload TEXT, payload_raw BLOB NOT NULL,
            enqueued_at, attempts INTEGER NOT NULL DEFAULT 0, reason TEXT NOT NULL, field_path TEXT,
            error TEXT NOT NULL, contract_name TEXT NOT NULL, contract_fingerprint TEXT NOT NULL,
            quarantined_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
            replayed_at TEXT, replay_count INTEGER NOT NULL DEFAULT 0,
            UNIQUE (tenant, queue, source_id));
         CREATE INDEX contract_quarantine_by_time ON contract_quarantine (tenant, queue, quarantined_at);
         INSERT INTO contract_quarantine (tenant, queue, source_id, payload_raw, reason, error,
            contract_name, contract_fingerprint)
         VALUES ('tenant_s', 'jobs', 1, X'7B7D', 'contract_mismatch', 'old', 'job', 'f');",
    )
    .execute(&pool)
    .await
    .unwrap();
    site.ensure_table(&pool).await.unwrap();
    site.ensure_table(&pool).await.unwrap();
    let unique = count(
        &pool,
        "SELECT count(*) FROM pragma_index_list('contract_quarantine') WHERE origin = 'u'",
    )
    .await;
    assert_eq!(unique, 0);
    sqlx::query("INSERT INTO jobs (id, payload) VALUES (1, '{}')")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(consume(&pool, &site, &contract).await, (0, 1));
    let listed = site.list(&pool).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].error, "old");
    assert!(listed.iter().all(|m| m.source_id == 1 && m.is_waiting()));
    pool.close().await;
}
