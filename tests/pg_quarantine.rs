//! Quarantine on PostgreSQL: a consumer claims batches with `FOR UPDATE SKIP LOCKED`,
//! checks each payload, quarantines the poison and acks the rest in one transaction.
//! Counts are conserved, quarantine is idempotent, replay puts messages back, and a
//! message rejected again after replay is kept, never lost.

#[path = "support/mod.rs"]
mod support;

use contract_sqlx::TenantName;
use contract_sqlx::payload::{PayloadContract, RejectReason, Rejection};
use contract_sqlx::quarantine::{self, PayloadType, Quarantine, QueueTable};
use serde::Deserialize;
use sqlx::PgPool;
use support::{PgScratch, exec};

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Job {
    user_id: i64,
    kind: Kind,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Email,
    Sms,
}

fn contract() -> PayloadContract<Job> {
    PayloadContract::named("job").with_version("1")
}

/// 50 messages: ids ending in 3 have a string `user_id`, ids ending in 7 miss it, and
/// 25 and 50 have an unknown `kind`: 12 poison, 38 valid.
fn payload(i: i64) -> String {
    if i % 10 == 3 {
        format!(r#"{{"user_id": "u{i}", "kind": "email"}}"#)
    } else if i % 10 == 7 {
        r#"{"kind": "sms"}"#.to_owned()
    } else if i % 25 == 0 {
        format!(r#"{{"user_id": {i}, "kind": "fax"}}"#)
    } else {
        format!(r#"{{"user_id": {i}, "kind": "email"}}"#)
    }
}

const POISON: i64 = 12;

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn seed_queue(pool: &PgPool, schema: &str, payload_type: &str) {
    exec(
        pool,
        &format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.jobs (id int8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                payload {payload_type} NOT NULL, enqueued_at timestamptz NOT NULL DEFAULT now(),
                attempts int4 NOT NULL DEFAULT 0)"
        ),
    )
    .await;
}

/// One consumer pass: claim batches until the queue is empty; per batch one transaction
/// that quarantines the rejected and acks (deletes) the accepted. Returns (processed,
/// quarantined).
async fn consume(pool: &PgPool, tenant: &TenantName, batch: i64) -> (u64, u64) {
    let (table, q, contract) = (QueueTable::new("jobs"), Quarantine::default(), contract());
    let (mut processed, mut quarantined) = (0, 0);
    loop {
        let mut tx = pool.begin().await.unwrap();
        // The fetch pattern of every Postgres queue: a CTE fence around the locking
        // SELECT, then the claim.
        let claim = format!(
            "WITH claimed AS (
                SELECT id FROM {tenant}.jobs ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
             UPDATE {tenant}.jobs AS j SET attempts = j.attempts + 1 FROM claimed AS c
             WHERE j.id = c.id RETURNING j.id, j.payload::text"
        );
        let rows: Vec<(i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(claim))
            .bind(batch)
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        if rows.is_empty() {
            tx.rollback().await.unwrap();
            return (processed, quarantined);
        }
        let checked: Vec<(i64, &[u8], Result<Job, Rejection>)> = rows
            .iter()
            .map(|(id, raw)| (*id, raw.as_bytes(), contract.check(raw.as_bytes())))
            .collect();
        let rejected: Vec<(i64, &[u8], &Rejection)> = checked
            .iter()
            .filter_map(|(id, raw, r)| r.as_ref().err().map(|e| (*id, *raw, e)))
            .collect();
        let accepted: Vec<i64> = checked
            .iter()
            .filter(|(_, _, r)| r.is_ok())
            .map(|(id, _, _)| *id)
            .collect();
        quarantined +=
            quarantine::quarantine(&mut *tx, tenant, "jobs", &table, &q, &contract, &rejected)
                .await
                .unwrap();
        let acked = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {tenant}.jobs WHERE id = ANY($1)"
        )))
        .bind(&accepted)
        .execute(&mut *tx)
        .await
        .unwrap();
        processed += acked.rows_affected();
        tx.commit().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_is_quarantined_in_the_batch_transaction_and_replayed_without_loss() {
    let db = PgScratch::create("contract_pgq").await;
    let pool = &db.pool;
    let tenant = TenantName::new("tenant_a").unwrap();
    let (table, q, contract) = (QueueTable::new("jobs"), Quarantine::default(), contract());
    seed_queue(pool, "tenant_a", "jsonb").await;
    for i in 1..=50 {
        sqlx::query("INSERT INTO tenant_a.jobs (payload) VALUES ($1::jsonb)")
            .bind(payload(i))
            .execute(pool)
            .await
            .unwrap();
    }
    // Racing replicas create the table once, without error.
    let (a, b) = tokio::join!(
        quarantine::ensure_table(pool, &q),
        quarantine::ensure_table(pool, &q)
    );
    a.unwrap();
    b.unwrap();
    quarantine::ensure_table(pool, &q).await.unwrap();

    // The backlog scan counts by reason and consumes nothing.
    let scan = quarantine::backlog_scan(pool, &tenant, &table, &contract)
        .await
        .unwrap();
    assert_eq!(scan.total, 50);
    assert_eq!(scan.valid, 38);
    assert_eq!(scan.rejected(), 12);
    assert_eq!(scan.rejected_by_reason.get("contract_mismatch"), Some(&12));
    assert_eq!(count(pool, "SELECT count(*) FROM tenant_a.jobs").await, 50);

    // Two consumers in parallel, batches of 7: every message ends up in exactly one place.
    let ((p1, q1), (p2, q2)) = tokio::join!(consume(pool, &tenant, 7), consume(pool, &tenant, 7));
    let (processed, moved) = (p1 + p2, q1 + q2);
    let left = count(pool, "SELECT count(*) FROM tenant_a.jobs").await;
    let stored = count(pool, "SELECT count(*) FROM public.contract_quarantine").await;
    assert_eq!((left, processed, moved, stored), (0, 38, 12, POISON));

    let listed = quarantine::list(pool, &tenant, "jobs", &q).await.unwrap();
    let ids: Vec<i64> = listed.iter().map(|m| m.source_id).collect();
    assert_eq!(ids, [3, 7, 13, 17, 23, 25, 27, 33, 37, 43, 47, 50]);
    let m3 = &listed[0];
    assert_eq!(m3.reason, "contract_mismatch");
    assert_eq!(m3.field_path.as_deref(), Some("user_id"));
    assert!(
        m3.error.contains("invalid type: string \"u3\""),
        "{}",
        m3.error
    );
    assert_eq!(
        m3.attempts, 1,
        "the claim's attempt is copied from the deleted row"
    );
    assert!(m3.enqueued_at.as_deref().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(m3.contract_name, "job");
    assert_eq!(m3.contract_fingerprint, contract.fingerprint());
    // jsonb keeps its own canonical text: the raw payload is what the consumer read.
    let raw: serde_json::Value = serde_json::from_slice(&m3.payload_raw).unwrap();
    assert_eq!(
        raw,
        serde_json::from_str::<serde_json::Value>(&payload(3)).unwrap()
    );
    assert!(m3.payload.is_some());
    assert_eq!(m3.replayed_at, None);
    let m7 = &listed[1];
    assert_eq!(m7.field_path, None);
    assert!(m7.error.contains("missing field `user_id`"), "{}", m7.error);
    assert_eq!(listed[5].field_path.as_deref(), Some("kind"));

    // Quarantining the same messages again is a no-op.
    let again: Vec<(i64, Vec<u8>, Rejection)> = listed
        .iter()
        .map(|m| {
            let e = contract.check(&m.payload_raw).unwrap_err();
            (m.source_id, m.payload_raw.clone(), e)
        })
        .collect();
    let again_refs: Vec<(i64, &[u8], &Rejection)> = again
        .iter()
        .map(|(id, raw, e)| (*id, raw.as_slice(), e))
        .collect();
    let mut tx = pool.begin().await.unwrap();
    let n = quarantine::quarantine(
        &mut *tx,
        &tenant,
        "jobs",
        &table,
        &q,
        &contract,
        &again_refs,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(n, 0);
    assert_eq!(
        quarantine::list(pool, &tenant, "jobs", &q).await.unwrap(),
        listed
    );

    // Replay puts them back with their ids and attempts 0, once.
    let replayed = quarantine::replay(pool, &tenant, "jobs", &table, &q)
        .await
        .unwrap();
    assert_eq!(replayed, 12);
    assert_eq!(
        quarantine::replay(pool, &tenant, "jobs", &table, &q)
            .await
            .unwrap(),
        0
    );
    let back: Vec<(i64, i32)> =
        sqlx::query_as("SELECT id, attempts FROM tenant_a.jobs ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(back.iter().map(|r| r.0).collect::<Vec<_>>(), ids);
    assert!(back.iter().all(|r| r.1 == 0));
    let after_replay = quarantine::list(pool, &tenant, "jobs", &q).await.unwrap();
    assert!(
        after_replay
            .iter()
            .all(|m| m.replayed_at.is_some() && m.replay_count == 1)
    );

    // The contract was not fixed: they are rejected again. Re-quarantine keeps every one
    // (the quarantine row is updated and pending again), none is lost.
    let (processed, moved) = consume(pool, &tenant, 5).await;
    assert_eq!((processed, moved), (0, 12));
    assert_eq!(count(pool, "SELECT count(*) FROM tenant_a.jobs").await, 0);
    let requarantined = quarantine::list(pool, &tenant, "jobs", &q).await.unwrap();
    assert_eq!(requarantined.len(), 12);
    assert!(
        requarantined
            .iter()
            .all(|m| m.replayed_at.is_none() && m.replay_count == 1 && m.attempts == 1)
    );
    assert_eq!(
        quarantine::replay(pool, &tenant, "jobs", &table, &q)
            .await
            .unwrap(),
        12
    );

    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_batch_moves_nothing() {
    let db = PgScratch::create("contract_pgq_rb").await;
    let pool = &db.pool;
    let tenant = TenantName::new("tenant_b").unwrap();
    let (table, q, contract) = (QueueTable::new("jobs"), Quarantine::default(), contract());
    seed_queue(pool, "tenant_b", "jsonb").await;
    exec(
        pool,
        r#"INSERT INTO tenant_b.jobs (payload) VALUES ('{"kind": "sms"}')"#,
    )
    .await;
    quarantine::ensure_table(pool, &q).await.unwrap();
    let raw = br#"{"kind": "sms"}"#;
    let rejection = contract.check(raw).unwrap_err();
    let mut tx = pool.begin().await.unwrap();
    let n = quarantine::quarantine(
        &mut *tx,
        &tenant,
        "jobs",
        &table,
        &q,
        &contract,
        &[(1, raw, &rejection)],
    )
    .await
    .unwrap();
    assert_eq!(n, 1);
    tx.rollback().await.unwrap();
    assert_eq!(count(pool, "SELECT count(*) FROM tenant_b.jobs").await, 1);
    assert!(
        quarantine::list(pool, &tenant, "jobs", &q)
            .await
            .unwrap()
            .is_empty()
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_queue_keeps_payloads_that_are_not_json_verbatim() {
    let db = PgScratch::create("contract_pgq_text").await;
    let pool = &db.pool;
    let tenant = TenantName::new("tenant_c").unwrap();
    let table = QueueTable::new("jobs").with_payload("payload", PayloadType::Text);
    let q = Quarantine {
        schema: "ops".into(),
        table: "poison \"box\"".into(),
    };
    let contract = contract().with_max_bytes(64);
    seed_queue(pool, "tenant_c", "text").await;
    exec(pool, "CREATE SCHEMA ops").await;
    let payloads = [
        "not json at all".to_owned(),
        r#"{"user_id": "\u0000", "kind": "sms"}"#.to_owned(),
        format!(
            r#"{{"user_id": 1, "kind": "sms", "pad": "{}"}}"#,
            "x".repeat(100)
        ),
        r#"{"user_id": 1, "kind": "sms"}"#.to_owned(),
    ];
    for p in &payloads {
        sqlx::query("INSERT INTO tenant_c.jobs (payload) VALUES ($1)")
            .bind(p)
            .execute(pool)
            .await
            .unwrap();
    }
    quarantine::ensure_table(pool, &q).await.unwrap();
    let scan = quarantine::backlog_scan(pool, &tenant, &table, &contract)
        .await
        .unwrap();
    assert_eq!(scan.total, 4);
    assert_eq!(scan.valid, 1);
    for reason in [
        RejectReason::InvalidJson,
        RejectReason::ContractMismatch,
        RejectReason::TooLarge,
    ] {
        assert_eq!(
            scan.rejected_by_reason.get(reason.as_str()),
            Some(&1),
            "{scan:?}"
        );
    }

    let rejections: Vec<Rejection> = payloads[..3]
        .iter()
        .map(|p| contract.check(p.as_bytes()).unwrap_err())
        .collect();
    let rejected: Vec<(i64, &[u8], &Rejection)> = (1..)
        .zip(payloads.iter().zip(&rejections))
        .map(|(id, (p, r))| (id, p.as_bytes(), r))
        .collect();
    // A duplicate id in the input counts once.
    let mut with_dup = rejected.clone();
    with_dup.push(rejected[0]);
    let mut tx = pool.begin().await.unwrap();
    let n = quarantine::quarantine(&mut *tx, &tenant, "jobs", &table, &q, &contract, &with_dup)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(n, 3);

    let listed = quarantine::list(pool, &tenant, "jobs", &q).await.unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0].reason, "invalid_json");
    assert_eq!(
        listed[0].payload, None,
        "not JSON: only payload_raw holds it"
    );
    assert_eq!(listed[1].reason, "contract_mismatch");
    assert_eq!(
        listed[1].payload, None,
        "jsonb cannot hold \\u0000: raw only"
    );
    assert_eq!(listed[2].reason, "too_large");
    for (m, p) in listed.iter().zip(&payloads) {
        assert_eq!(m.payload_raw, p.as_bytes());
    }

    assert_eq!(
        quarantine::replay(pool, &tenant, "jobs", &table, &q)
            .await
            .unwrap(),
        3
    );
    let back: Vec<String> = sqlx::query_scalar("SELECT payload FROM tenant_c.jobs ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(back, payloads, "replay restores the payloads byte for byte");
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_scan_reads_every_page() {
    let db = PgScratch::create("contract_pgq_scan").await;
    let pool = &db.pool;
    let tenant = TenantName::new("tenant_d").unwrap();
    seed_queue(pool, "tenant_d", "jsonb").await;
    exec(
        pool,
        r#"INSERT INTO tenant_d.jobs (payload)
           SELECT CASE WHEN i % 100 = 0 THEN '[]'::jsonb
               ELSE jsonb_build_object('user_id', i, 'kind', 'sms') END
           FROM generate_series(1, 1203) AS i"#,
    )
    .await;
    let scan = quarantine::backlog_scan(pool, &tenant, &QueueTable::new("jobs"), &contract())
        .await
        .unwrap();
    assert_eq!((scan.total, scan.valid, scan.rejected()), (1203, 1191, 12));
    db.drop_db().await;
}
