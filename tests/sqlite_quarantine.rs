//! Quarantine on SQLite (one file per tenant, the quarantine table beside the queue):
//! counts conserved, idempotent, replay, re-quarantine after replay keeps the message,
//! bytes that are not UTF-8 survive the round trip.

#[path = "support/mod.rs"]
mod support;

use std::path::PathBuf;

use contract_sqlx::TenantName;
use contract_sqlx::payload::{PayloadContract, Rejection};
use contract_sqlx::quarantine::{self, Quarantine, QueueTable};
use serde::Deserialize;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Job {
    user_id: i64,
    kind: String,
}

/// A scratch file removed on drop (with its `-wal`/`-shm` companions).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = self.0.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
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

async fn count(pool: &SqlitePool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Claims batches until the queue is empty, quarantining the poison and acking the rest
/// in each batch's transaction. Returns (processed, quarantined).
async fn consume(
    pool: &SqlitePool,
    tenant: &TenantName,
    contract: &PayloadContract<Job>,
) -> (u64, u64) {
    let (table, q) = (QueueTable::new("jobs"), Quarantine::default());
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
        quarantined +=
            quarantine::quarantine(&mut *tx, tenant, "jobs", &table, &q, contract, &rejected)
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
    let scratch = Scratch(std::env::temp_dir().join(format!(
        "{}.sqlite",
        support::unique_name("contract_sqlite_quarantine")
    )));
    let pool = tenant_pool(&scratch).await;
    let tenant = TenantName::new("tenant_s").unwrap();
    let (table, q) = (QueueTable::new("jobs"), Quarantine::default());
    let contract = PayloadContract::<Job>::named("job").with_version("1");
    sqlx::raw_sql(
        "CREATE TABLE jobs (id INTEGER PRIMARY KEY, payload TEXT NOT NULL,
            enqueued_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP, attempts INTEGER NOT NULL DEFAULT 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
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
    quarantine::ensure_table(&pool, &q).await.unwrap();
    quarantine::ensure_table(&pool, &q).await.unwrap();

    let scan = quarantine::backlog_scan(&pool, &tenant, &table, &contract)
        .await
        .unwrap();
    assert_eq!((scan.total, scan.valid, scan.rejected()), (20, 14, 6));
    assert_eq!(scan.rejected_by_reason.get("contract_mismatch"), Some(&4));
    assert_eq!(scan.rejected_by_reason.get("invalid_json"), Some(&1));
    assert_eq!(scan.rejected_by_reason.get("not_utf8"), Some(&1));
    assert_eq!(
        count(&pool, "SELECT count(*) FROM jobs").await,
        20,
        "the scan consumes nothing"
    );

    let (processed, moved) = consume(&pool, &tenant, &contract).await;
    let left = count(&pool, "SELECT count(*) FROM jobs").await;
    let stored = count(&pool, "SELECT count(*) FROM contract_quarantine").await;
    assert_eq!((left, processed, moved, stored), (0, 14, 6, 6));

    let listed = quarantine::list(&pool, &tenant, "jobs", &q).await.unwrap();
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
    let n = quarantine::quarantine(&mut *conn, &tenant, "jobs", &table, &q, &contract, &refs)
        .await
        .unwrap();
    drop(conn);
    assert_eq!(n, 0);
    assert_eq!(
        quarantine::list(&pool, &tenant, "jobs", &q).await.unwrap(),
        listed
    );

    // Replay restores ids and bytes, attempts 0.
    assert_eq!(
        quarantine::replay(&pool, &tenant, "jobs", &table, &q)
            .await
            .unwrap(),
        6
    );
    assert_eq!(
        quarantine::replay(&pool, &tenant, "jobs", &table, &q)
            .await
            .unwrap(),
        0
    );
    let back: Vec<(i64, Vec<u8>, i64)> =
        sqlx::query_as("SELECT id, CAST(payload AS BLOB), attempts FROM jobs ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(back.iter().map(|r| r.0).collect::<Vec<_>>(), ids);
    for ((_, raw, attempts), m) in back.iter().zip(&listed) {
        assert_eq!(raw, &m.payload_raw);
        assert_eq!(*attempts, 0);
    }

    // Still poison: re-quarantined, every one kept and pending again.
    let (processed, moved) = consume(&pool, &tenant, &contract).await;
    assert_eq!((processed, moved), (0, 6));
    let listed = quarantine::list(&pool, &tenant, "jobs", &q).await.unwrap();
    assert_eq!(listed.len(), 6);
    assert!(
        listed
            .iter()
            .all(|m| m.replayed_at.is_none() && m.replay_count == 1)
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM jobs").await, 0);
    pool.close().await;
}

#[tokio::test]
async fn sqlite_backlog_scan_reads_every_page() {
    let scratch = Scratch(std::env::temp_dir().join(format!(
        "{}.sqlite",
        support::unique_name("contract_sqlite_backlog")
    )));
    let pool = tenant_pool(&scratch).await;
    let tenant = TenantName::new("tenant_p").unwrap();
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
        .with_payload("body", contract_sqlx::quarantine::PayloadType::Text);
    let contract = PayloadContract::<Job>::new();
    let scan = quarantine::backlog_scan(&pool, &tenant, &table, &contract)
        .await
        .unwrap();
    assert_eq!((scan.total, scan.valid, scan.rejected()), (1203, 1191, 12));
    pool.close().await;
}
