//! Quarantine on PostgreSQL: a consumer claims batches with `FOR UPDATE SKIP LOCKED`,
//! checks each payload, quarantines the poison and acks the rest in one transaction.
//! Counts are conserved, quarantine is idempotent and never overwrites a waiting message,
//! a poison the quarantine's `jsonb` refuses still moves, failures name the missing
//! table, and replay puts back only what the contract now accepts.

use crate::support;

use contract_sqlx::payload::{PayloadContract, RejectReason, Rejection};
use contract_sqlx::quarantine::{
    HeldReason, PayloadType, Quarantine, QuarantineError, QueueQuarantine, QueueTable,
};
use contract_sqlx::{Error, TenantName};
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

/// A contract that accepts any JSON document: "the fixed contract" of the replay tests.
fn any_json() -> PayloadContract<serde_json::Value> {
    PayloadContract::named("any").with_version("2")
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
        format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.jobs (id int8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                payload {payload_type} NOT NULL, enqueued_at timestamptz NOT NULL DEFAULT now(),
                attempts int4 NOT NULL DEFAULT 0)"
        ),
    )
    .await;
}

fn jobs(tenant: &str) -> QueueQuarantine {
    QueueQuarantine::new(TenantName::new(tenant).unwrap(), QueueTable::new("jobs"))
}

/// One consumer pass: claim batches until the queue is empty; per batch one transaction
/// that quarantines the rejected and acks (deletes) the accepted. Returns (processed,
/// quarantined).
async fn consume(pool: &PgPool, site: &QueueQuarantine, batch: i64) -> (u64, u64) {
    let contract = contract();
    let tenant = site.tenant();
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
        quarantined += site
            .quarantine(&mut *tx, &contract, &rejected)
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
    let (site, contract) = (jobs("tenant_a"), contract());
    seed_queue(pool, "tenant_a", "jsonb").await;
    for i in 1..=50 {
        sqlx::query("INSERT INTO tenant_a.jobs (payload) VALUES ($1::jsonb)")
            .bind(payload(i))
            .execute(pool)
            .await
            .unwrap();
    }
    // Racing replicas create the table once, without error.
    let (a, b) = tokio::join!(site.ensure_table(pool), site.ensure_table(pool));
    a.unwrap();
    b.unwrap();
    site.ensure_table(pool).await.unwrap();

    // The backlog scan counts by reason and consumes nothing.
    let scan = site.backlog_scan(pool, &contract).await.unwrap();
    assert_eq!(scan.total, 50);
    assert_eq!(scan.valid, 38);
    assert_eq!(scan.rejected(), 12);
    assert_eq!(scan.rejected_by_reason.get("contract_mismatch"), Some(&12));
    assert_eq!(count(pool, "SELECT count(*) FROM tenant_a.jobs").await, 50);

    // Two consumers in parallel, batches of 7: every message ends up in exactly one place.
    let ((p1, q1), (p2, q2)) = tokio::join!(consume(pool, &site, 7), consume(pool, &site, 7));
    let (processed, moved) = (p1 + p2, q1 + q2);
    let left = count(pool, "SELECT count(*) FROM tenant_a.jobs").await;
    let stored = count(pool, "SELECT count(*) FROM public.contract_quarantine").await;
    assert_eq!((left, processed, moved, stored), (0, 38, 12, POISON));

    let listed = site.list(pool).await.unwrap();
    let ids: Vec<i64> = listed.iter().map(|m| m.source_id).collect();
    assert_eq!(ids, [3, 7, 13, 17, 23, 25, 27, 33, 37, 43, 47, 50]);
    let m3 = &listed[0];
    assert_eq!(
        (m3.tenant.as_str(), m3.queue.as_str()),
        ("tenant_a", "jobs")
    );
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
    assert!(m3.is_waiting());
    let m7 = &listed[1];
    assert_eq!(m7.field_path, None);
    assert!(m7.error.contains("missing field `user_id`"), "{}", m7.error);
    assert_eq!(listed[5].field_path.as_deref(), Some("kind"));

    // Quarantining the same messages again is a no-op: they are no longer in the queue.
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
    let n = site
        .quarantine(&mut *tx, &contract, &again_refs)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(n, 0);
    assert_eq!(site.list(pool).await.unwrap(), listed);

    // The contract is unchanged: replay re-checks and puts nothing back.
    let report = site.replay(pool, &contract).await.unwrap();
    assert_eq!((report.replayed, report.still_rejected.len()), (0, 12));
    assert_eq!(count(pool, "SELECT count(*) FROM tenant_a.jobs").await, 0);

    // A contract that accepts them: back with their ids and attempts 0, once.
    let report = site.replay(pool, &any_json()).await.unwrap();
    assert_eq!((report.replayed, report.waiting()), (12, 0));
    assert_eq!(site.replay(pool, &any_json()).await.unwrap().replayed, 0);
    let back: Vec<(i64, i32)> =
        sqlx::query_as("SELECT id, attempts FROM tenant_a.jobs ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(back.iter().map(|r| r.0).collect::<Vec<_>>(), ids);
    assert!(back.iter().all(|r| r.1 == 0));
    let after_replay = site.list(pool).await.unwrap();
    assert!(
        after_replay
            .iter()
            .all(|m| m.replayed_at.is_some() && m.replay_count == 1)
    );

    // The consumer's contract still rejects them: each is quarantined again as a new
    // row, beside its replayed one; none is lost, none overwritten.
    let (processed, moved) = consume(pool, &site, 5).await;
    assert_eq!((processed, moved), (0, 12));
    assert_eq!(count(pool, "SELECT count(*) FROM tenant_a.jobs").await, 0);
    let all = site.list(pool).await.unwrap();
    assert_eq!(all.len(), 24);
    let waiting: Vec<_> = all.iter().filter(|m| m.is_waiting()).collect();
    assert_eq!(waiting.len(), 12);
    assert!(
        waiting
            .iter()
            .all(|m| m.replay_count == 0 && m.attempts == 1)
    );
    assert_eq!(site.replay(pool, &any_json()).await.unwrap().replayed, 12);

    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_batch_moves_nothing() {
    let db = PgScratch::create("contract_pgq_rb").await;
    let pool = &db.pool;
    let (site, contract) = (jobs("tenant_b"), contract());
    seed_queue(pool, "tenant_b", "jsonb").await;
    exec(
        pool,
        r#"INSERT INTO tenant_b.jobs (payload) VALUES ('{"kind": "sms"}')"#,
    )
    .await;
    site.ensure_table(pool).await.unwrap();
    let raw = br#"{"kind": "sms"}"#;
    let rejection = contract.check(raw).unwrap_err();
    let mut tx = pool.begin().await.unwrap();
    let n = site
        .quarantine(&mut *tx, &contract, &[(1, raw, &rejection)])
        .await
        .unwrap();
    assert_eq!(n, 1);
    tx.rollback().await.unwrap();
    assert_eq!(count(pool, "SELECT count(*) FROM tenant_b.jobs").await, 1);
    assert!(site.list(pool).await.unwrap().is_empty());
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_queue_keeps_payloads_that_are_not_json_verbatim() {
    let db = PgScratch::create("contract_pgq_text").await;
    let pool = &db.pool;
    let site = QueueQuarantine::new(
        TenantName::new("tenant_c").unwrap(),
        QueueTable::new("jobs").with_payload("payload", PayloadType::Text),
    )
    .with_quarantine(
        Quarantine::default()
            .with_schema("ops")
            .with_table("poison \"box\""),
    );
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
    site.ensure_table(pool).await.unwrap();
    let scan = site.backlog_scan(pool, &contract).await.unwrap();
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
    let n = site
        .quarantine(&mut *tx, &contract, &with_dup)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(n, 3);

    let listed = site.list(pool).await.unwrap();
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

    // Replay re-checks: text that is not JSON is never accepted and keeps waiting; the
    // other two go back byte for byte.
    let report = site.replay(pool, &any_json()).await.unwrap();
    assert_eq!(report.replayed, 2);
    assert_eq!(report.still_rejected.len(), 1);
    assert_eq!(report.still_rejected[0].source_id, 1);
    assert_eq!(
        report.still_rejected[0].rejection.reason,
        RejectReason::InvalidJson
    );
    let back: Vec<String> = sqlx::query_scalar("SELECT payload FROM tenant_c.jobs ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(
        back,
        payloads[1..],
        "replay restores the payloads byte for byte"
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_scan_reads_every_page() {
    let db = PgScratch::create("contract_pgq_scan").await;
    let pool = &db.pool;
    seed_queue(pool, "tenant_d", "jsonb").await;
    exec(
        pool,
        r#"INSERT INTO tenant_d.jobs (payload)
           SELECT CASE WHEN i % 100 = 0 THEN '[]'::jsonb
               ELSE jsonb_build_object('user_id', i, 'kind', 'sms') END
           FROM generate_series(1, 1203) AS i"#,
    )
    .await;
    let scan = jobs("tenant_d")
        .backlog_scan(pool, &contract())
        .await
        .unwrap();
    assert_eq!((scan.total, scan.valid, scan.rejected()), (1203, 1191, 12));
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_never_overwrites_a_waiting_message_when_a_queue_id_is_reused() {
    let db = PgScratch::create("contract_pgq_reuse").await;
    let pool = &db.pool;
    let site = jobs("tenant_r");
    seed_queue(pool, "tenant_r", "jsonb").await;
    site.ensure_table(pool).await.unwrap();
    // The producer chooses ids: A is quarantined, then B arrives under A's id 1.
    let (a, b) = (
        r#"{"kind": "sms", "from": "A"}"#,
        r#"{"kind": "sms", "from": "B"}"#,
    );
    for p in [a, b] {
        sqlx::query(
            "INSERT INTO tenant_r.jobs (id, payload) OVERRIDING SYSTEM VALUE VALUES (1, $1::jsonb)",
        )
        .bind(p)
        .execute(pool)
        .await
        .unwrap();
        assert_eq!(consume(pool, &site, 10).await, (0, 1));
    }
    let text = |raw: &[u8]| serde_json::from_slice::<serde_json::Value>(raw).unwrap();
    let listed = site.list(pool).await.unwrap();
    let stored: Vec<_> = listed.iter().map(|m| text(&m.payload_raw)).collect();
    assert_eq!(
        stored,
        [text(a.as_bytes()), text(b.as_bytes())],
        "both waiting messages are kept, in quarantine order"
    );

    // One id, two waiting messages: the first goes back, the second waits for the id.
    let report = site.replay(pool, &any_json()).await.unwrap();
    assert_eq!(report.replayed, 1);
    assert_eq!(report.held.len(), 1);
    assert_eq!(
        (report.held[0].source_id, &report.held[0].why),
        (1, &HeldReason::IdInUse)
    );
    let queued: String = sqlx::query_scalar("SELECT payload::text FROM tenant_r.jobs")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(text(queued.as_bytes()), text(a.as_bytes()));
    // Once A is consumed the id is free, and B follows.
    exec(pool, "DELETE FROM tenant_r.jobs WHERE id = 1").await;
    let report = site.replay(pool, &any_json()).await.unwrap();
    assert_eq!((report.replayed, report.waiting()), (1, 0));
    let queued: String = sqlx::query_scalar("SELECT payload::text FROM tenant_r.jobs")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(text(queued.as_bytes()), text(b.as_bytes()));
    assert!(
        site.list(pool)
            .await
            .unwrap()
            .iter()
            .all(|m| !m.is_waiting())
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_the_payload_column_rejects_does_not_stall_the_tenant() {
    let db = PgScratch::create("contract_pgq_stall").await;
    let pool = &db.pool;
    let site = QueueQuarantine::new(
        TenantName::new("tenant_j").unwrap(),
        QueueTable::new("jobs").with_payload("payload", PayloadType::Json),
    );
    seed_queue(pool, "tenant_j", "json").await;
    site.ensure_table(pool).await.unwrap();
    // `json` keeps them verbatim; the quarantine's `jsonb` refuses each of the first three
    // (lone surrogate, `\u0000`, a number beyond `numeric`), and the consumer's contract
    // rejects them. The last one is valid.
    let payloads = [
        r#"{"user_id":"x","kind":"\ud800"}"#,
        r#"{"user_id": 1, "kind": "\u0000"}"#,
        r#"{"user_id": "x", "n": 1e1000000}"#,
        r#"{"user_id": 1, "kind": "sms"}"#,
    ];
    for p in payloads {
        sqlx::query("INSERT INTO tenant_j.jobs (payload) VALUES ($1::json)")
            .bind(p)
            .execute(pool)
            .await
            .unwrap();
    }
    assert_eq!(consume(pool, &site, 10).await, (1, 3));
    assert_eq!(count(pool, "SELECT count(*) FROM tenant_j.jobs").await, 0);
    let listed = site.list(pool).await.unwrap();
    let raws: Vec<&[u8]> = listed.iter().map(|m| m.payload_raw.as_slice()).collect();
    assert_eq!(
        raws,
        payloads[..3]
            .iter()
            .map(|p| p.as_bytes())
            .collect::<Vec<_>>()
    );
    assert!(
        listed
            .iter()
            .all(|m| m.payload.is_none() && m.reason == "contract_mismatch")
    );
    // The rejection of `\u0000` quotes it; a text column cannot hold NUL: escaped.
    assert!(listed[1].error.contains("\\u0000"), "{}", listed[1].error);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_failure_says_which_table_is_missing() {
    let db = PgScratch::create("contract_pgq_missing").await;
    let pool = &db.pool;
    let (site, contract) = (jobs("tenant_m"), contract());
    seed_queue(pool, "tenant_m", "jsonb").await;
    exec(
        pool,
        r#"INSERT INTO tenant_m.jobs (payload) VALUES ('{"kind": "sms"}')"#,
    )
    .await;
    let raw = br#"{"kind": "sms"}"#;
    let rejection = contract.check(raw).unwrap_err();
    let poison = [(1, &raw[..], &rejection)];

    // No quarantine table yet.
    let mut tx = pool.begin().await.unwrap();
    let err = site
        .quarantine(&mut *tx, &contract, &poison)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(&err, Error::Quarantine(q) if matches!(**q, QuarantineError::QuarantineTableMissing { .. })),
        "{text}"
    );
    for part in [
        "tenant `tenant_m`",
        "queue `jobs`",
        "\"public\".\"contract_quarantine\"",
        "ensure_table",
    ] {
        assert!(text.contains(part), "{part}: {text}");
    }
    assert!(!text.contains("server is up"), "{text}");
    // The savepoint was rolled back: the caller's transaction goes on.
    let still: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_m.jobs")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(still, 1);
    tx.commit().await.unwrap();
    let err = site.list(pool).await.unwrap_err().to_string();
    assert!(
        err.contains("the quarantine table") && err.contains("listing"),
        "{err}"
    );

    // The quarantine exists, the queue table does not.
    site.ensure_table(pool).await.unwrap();
    let wrong = QueueQuarantine::new(
        TenantName::new("tenant_m").unwrap(),
        QueueTable::new("jobz"),
    );
    let mut tx = pool.begin().await.unwrap();
    let err = wrong
        .quarantine(&mut *tx, &contract, &poison)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("the queue table \"tenant_m\".\"jobz\" does not exist")
            && text.contains("queue `jobz`"),
        "{text}"
    );
    drop(tx);
    let err = wrong
        .backlog_scan(pool, &contract)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the queue table") && err.contains("scanning"),
        "{err}"
    );

    // Anything else says what the database refused, not that the server may be down.
    let err = QueueQuarantine::new(
        TenantName::new("tenant_m").unwrap(),
        QueueTable::new("jobs"),
    )
    .with_quarantine(Quarantine::default().with_schema("no_such_schema"))
    .ensure_table(pool)
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("creating the quarantine table") && err.contains("no_such_schema"),
        "{err}"
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_re_enqueues_only_what_the_contract_now_accepts() {
    let db = PgScratch::create("contract_pgq_recheck").await;
    let pool = &db.pool;
    let site = jobs("tenant_v");
    seed_queue(pool, "tenant_v", "jsonb").await;
    site.ensure_table(pool).await.unwrap();
    exec(
        pool,
        r#"INSERT INTO tenant_v.jobs (payload) VALUES
            ('{"user_id": 1, "kind": "fax"}'), ('{"kind": "sms"}'), ('{"user_id": 3, "kind": "fax"}')"#,
    )
    .await;
    assert_eq!(consume(pool, &site, 10).await, (0, 3));

    // The fixed contract knows `fax` but still needs `user_id`.
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct JobV2 {
        user_id: i64,
        kind: String,
    }
    let fixed = PayloadContract::<JobV2>::named("job").with_version("2");
    let report = site.replay(pool, &fixed).await.unwrap();
    assert_eq!(report.replayed, 2);
    assert_eq!(report.still_rejected.len(), 1);
    let still = &report.still_rejected[0];
    assert_eq!(
        (still.source_id, still.rejection.reason),
        (2, RejectReason::ContractMismatch)
    );
    assert!(still.rejection.message.contains("missing field `user_id`"));
    assert_eq!(
        report.still_rejected_by_reason().get("contract_mismatch"),
        Some(&1)
    );
    let queued: Vec<i64> = sqlx::query_scalar("SELECT id FROM tenant_v.jobs ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(queued, [1, 3]);
    // The rejected one keeps waiting, its quarantined copy intact.
    let waiting: Vec<_> = site
        .list(pool)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.is_waiting())
        .collect();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].payload_raw, br#"{"kind": "sms"}"#);

    // A payload the queue column refuses is held, not lost: `\u0000` cannot go back into
    // a `jsonb` queue even though the contract accepts it.
    exec(
        pool,
        "CREATE TABLE tenant_v.copy (LIKE tenant_v.jobs INCLUDING ALL)",
    )
    .await;
    exec(pool, r#"INSERT INTO public.contract_quarantine (tenant, queue, source_id, payload_raw,
        reason, error, contract_name, contract_fingerprint)
        VALUES ('tenant_v', 'copy', 9, convert_to('{"a": "\u0000"}', 'UTF8'), 'contract_mismatch', 'e', 'job', 'f')"#).await;
    let copy = QueueQuarantine::new(
        TenantName::new("tenant_v").unwrap(),
        QueueTable::new("copy"),
    );
    let report = copy.replay(pool, &any_json()).await.unwrap();
    assert_eq!(report.replayed, 0);
    assert!(
        matches!(&report.held[..], [h] if matches!(&h.why, HeldReason::QueueRefused { error } if error.contains("Unicode escape"))),
        "{report:?}"
    );
    assert_eq!(
        copy.list(pool)
            .await
            .unwrap()
            .iter()
            .filter(|m| m.is_waiting())
            .count(),
        1
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_table_upgrades_a_table_with_the_old_unique_key() {
    let db = PgScratch::create("contract_pgq_upgrade").await;
    let pool = &db.pool;
    let site = jobs("tenant_u");
    seed_queue(pool, "tenant_u", "jsonb").await;
    // The table as the previous release created it.
    exec(
        pool,
        "CREATE TABLE public.contract_quarantine (
            id int8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY, tenant text NOT NULL,
            queue text NOT NULL, source_id int8 NOT NULL, payload jsonb, payload_raw bytea NOT NULL,
            enqueued_at timestamptz, attempts int8 NOT NULL DEFAULT 0, reason text NOT NULL,
            field_path text, error text NOT NULL, contract_name text NOT NULL,
            contract_fingerprint text NOT NULL, quarantined_at timestamptz NOT NULL DEFAULT now(),
            replayed_at timestamptz, replay_count int4 NOT NULL DEFAULT 0,
            UNIQUE (tenant, queue, source_id));
         CREATE INDEX contract_quarantine_by_time ON public.contract_quarantine (tenant, queue, quarantined_at);
         INSERT INTO public.contract_quarantine (tenant, queue, source_id, payload_raw, reason,
            error, contract_name, contract_fingerprint)
         VALUES ('tenant_u', 'jobs', 1, '\\x7b7d', 'contract_mismatch', 'old', 'job', 'f')",
    )
    .await;
    let (a, b) = tokio::join!(site.ensure_table(pool), site.ensure_table(pool));
    a.unwrap();
    b.unwrap();
    site.ensure_table(pool).await.unwrap();
    let unique = count(
        pool,
        "SELECT count(*) FROM pg_constraint
         WHERE conrelid = 'public.contract_quarantine'::regclass AND contype = 'u'",
    )
    .await;
    assert_eq!(unique, 0);
    // The old row is kept, and a new message under the same id gets a row of its own.
    exec(
        pool,
        r#"INSERT INTO tenant_u.jobs (id, payload) OVERRIDING SYSTEM VALUE VALUES (1, '{"kind": "sms"}')"#,
    )
    .await;
    assert_eq!(consume(pool, &site, 10).await, (0, 1));
    let listed = site.list(pool).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].error, "old");
    assert!(listed.iter().all(|m| m.source_id == 1 && m.is_waiting()));
    db.drop_db().await;
}
