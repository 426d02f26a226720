//! Quarantine on MySQL/MariaDB (a database per tenant, the quarantine table beside the
//! queue): consumers claim with `FOR UPDATE SKIP LOCKED` and quarantine in the batch
//! transaction; counts are conserved, quarantine is idempotent and never overwrites a
//! waiting message, a poison the quarantine's `JSON` column refuses still moves, failures
//! name the missing table, and replay puts back only what the contract now accepts.

use crate::support;

use contract_sqlx::TenantName;
use contract_sqlx::payload::{PayloadContract, RejectReason, Rejection};
use contract_sqlx::quarantine::{HeldReason, QueueQuarantine, QueueTable};
use serde::Deserialize;
use sqlx::MySqlPool;
use support::{MySqlDatabases, exec};

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

/// A contract that accepts any JSON document.
fn any_json() -> PayloadContract<serde_json::Value> {
    PayloadContract::named("any")
}

/// A tenant database with a `jobs` queue whose payload column is `payload_type`; dropped
/// at the end, even after a failed assertion.
struct Tenant {
    name: String,
    _cleanup: MySqlDatabases,
}

impl Tenant {
    async fn create(pool: &MySqlPool, prefix: &str, payload_type: &str) -> Self {
        let name = support::unique_name(prefix);
        let cleanup = MySqlDatabases(vec![name.clone()]);
        exec(
            pool,
            format!(
                "CREATE DATABASE `{name}`;
                 CREATE TABLE `{name}`.jobs (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
                    payload {payload_type} NOT NULL,
                    enqueued_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
                    attempts INT NOT NULL DEFAULT 0) ENGINE = InnoDB"
            ),
        )
        .await;
        Self {
            name,
            _cleanup: cleanup,
        }
    }

    fn site(&self) -> QueueQuarantine {
        QueueQuarantine::new(
            TenantName::new(&self.name).unwrap(),
            QueueTable::new("jobs"),
        )
    }

    async fn enqueue(&self, pool: &MySqlPool, payloads: &[&[u8]]) {
        for p in payloads {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO `{}`.jobs (payload) VALUES (?)",
                self.name
            )))
            .bind(p)
            .execute(pool)
            .await
            .unwrap();
        }
    }

    async fn count(&self, pool: &MySqlPool) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM `{}`.jobs", self.name);
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(pool)
            .await
            .unwrap()
    }

    async fn queued(&self, pool: &MySqlPool) -> Vec<(i64, Vec<u8>)> {
        let sql = format!(
            "SELECT id, CAST(payload AS BINARY) FROM `{}`.jobs ORDER BY id",
            self.name
        );
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(pool)
            .await
            .unwrap()
    }
}

/// Claims batches until the queue is empty; per batch one transaction that quarantines
/// the rejected and acks (deletes) the accepted. Returns (processed, quarantined).
async fn consume(pool: &MySqlPool, site: &QueueQuarantine, batch: i64) -> (u64, u64) {
    consume_with(pool, site, batch, &contract()).await
}

/// [`consume`] with another contract.
async fn consume_with(
    pool: &MySqlPool,
    site: &QueueQuarantine,
    batch: i64,
    contract: &PayloadContract<Job>,
) -> (u64, u64) {
    let db = site.tenant();
    let (mut processed, mut quarantined) = (0, 0);
    loop {
        // READ COMMITTED, as a consumer on InnoDB should: under REPEATABLE READ a statement
        // over a list of ids may lock the next consumer's rows too.
        let mut tx = pool
            .begin_with("SET TRANSACTION ISOLATION LEVEL READ COMMITTED; START TRANSACTION")
            .await
            .unwrap();
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id, CAST(payload AS BINARY) FROM `{db}`.jobs ORDER BY id LIMIT ?
             FOR UPDATE SKIP LOCKED"
        )))
        .bind(batch)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        if rows.is_empty() {
            tx.rollback().await.unwrap();
            return (processed, quarantined);
        }
        let ids: Vec<String> = rows.iter().map(|(id, _)| id.to_string()).collect();
        let claim = format!(
            "UPDATE `{db}`.jobs SET attempts = attempts + 1 WHERE id IN ({})",
            ids.join(", ")
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(claim))
            .execute(&mut *tx)
            .await
            .unwrap();
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
                let ack = format!("DELETE FROM `{db}`.jobs WHERE id = ?");
                processed += sqlx::query(sqlx::AssertSqlSafe(ack))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_poison_is_quarantined_in_the_batch_transaction_and_replayed_without_loss() {
    let pool = support::mysql_pool().await;
    let tenant = Tenant::create(&pool, "cq_main", "JSON").await;
    let (site, contract) = (tenant.site(), contract());
    let payloads: Vec<String> = (1..=50).map(payload).collect();
    let raws: Vec<&[u8]> = payloads.iter().map(|p| p.as_bytes()).collect();
    tenant.enqueue(&pool, &raws).await;
    // Racing replicas create the table once, without error.
    let (a, b) = tokio::join!(site.ensure_table(&pool), site.ensure_table(&pool));
    a.unwrap();
    b.unwrap();
    site.ensure_table(&pool).await.unwrap();

    let scan = site.backlog_scan(&pool, &contract).await.unwrap();
    assert_eq!((scan.total, scan.valid, scan.rejected()), (50, 38, 12));
    assert_eq!(tenant.count(&pool).await, 50, "the scan consumes nothing");

    // Two consumers in parallel, batches of 7: every message ends up in exactly one place.
    let ((p1, q1), (p2, q2)) = tokio::join!(consume(&pool, &site, 7), consume(&pool, &site, 7));
    assert_eq!((tenant.count(&pool).await, p1 + p2, q1 + q2), (0, 38, 12));

    let listed = site.list(&pool).await.unwrap();
    let ids: Vec<i64> = listed.iter().map(|m| m.source_id).collect();
    assert_eq!(ids, [3, 7, 13, 17, 23, 25, 27, 33, 37, 43, 47, 50]);
    let m3 = &listed[0];
    assert_eq!(m3.tenant, tenant.name);
    assert_eq!(m3.queue, "jobs");
    assert_eq!(m3.reason, "contract_mismatch");
    assert_eq!(m3.field_path.as_deref(), Some("user_id"));
    assert_eq!(m3.payload_raw, payload(3).as_bytes());
    assert_eq!(m3.payload.as_deref(), Some(payload(3).as_str()));
    assert_eq!(m3.attempts, 1, "the claim's attempt is copied");
    assert!(
        m3.enqueued_at.as_deref().is_some_and(|t| t.ends_with('Z')),
        "{m3:?}"
    );
    assert!(m3.quarantined_at.ends_with('Z'));
    assert_eq!(m3.contract_fingerprint, contract.fingerprint());
    assert!(listed[1].error.contains("missing field `user_id`"));

    // Quarantining them again is a no-op.
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
    // A bare connection works too: the move is its own transaction.
    assert_eq!(
        site.quarantine(&mut *conn, &contract, &refs).await.unwrap(),
        0
    );
    drop(conn);
    assert_eq!(site.list(&pool).await.unwrap(), listed);

    // Same contract: nothing goes back. A contract that accepts them: all 12, once.
    let report = site.replay(&pool, &contract).await.unwrap();
    assert_eq!((report.replayed, report.still_rejected.len()), (0, 12));
    let report = site.replay(&pool, &any_json()).await.unwrap();
    assert_eq!((report.replayed, report.waiting()), (12, 0));
    assert_eq!(site.replay(&pool, &any_json()).await.unwrap().replayed, 0);
    let back = tenant.queued(&pool).await;
    assert_eq!(back.iter().map(|r| r.0).collect::<Vec<_>>(), ids);
    for (id, raw) in &back {
        assert_eq!(raw, payload(*id).as_bytes(), "replay restores the bytes");
    }

    // Still poison for the consumer: quarantined again as new rows, none lost.
    assert_eq!(consume(&pool, &site, 5).await, (0, 12));
    let all = site.list(&pool).await.unwrap();
    assert_eq!(all.len(), 24);
    assert_eq!(all.iter().filter(|m| m.is_waiting()).count(), 12);
    assert!(
        all.iter()
            .filter(|m| !m.is_waiting())
            .all(|m| m.replay_count == 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_a_rolled_back_batch_moves_nothing() {
    let pool = support::mysql_pool().await;
    let tenant = Tenant::create(&pool, "cq_rb", "JSON").await;
    let (site, contract) = (tenant.site(), contract());
    tenant.enqueue(&pool, &[br#"{"kind": "sms"}"#]).await;
    site.ensure_table(&pool).await.unwrap();
    let raw = br#"{"kind": "sms"}"#;
    let rejection = contract.check(raw).unwrap_err();
    let mut tx = pool.begin().await.unwrap();
    let n = site
        .quarantine(&mut *tx, &contract, &[(1, raw, &rejection)])
        .await
        .unwrap();
    assert_eq!(n, 1);
    tx.rollback().await.unwrap();
    assert_eq!(tenant.count(&pool).await, 1);
    assert!(site.list(&pool).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_blob_queue_keeps_payloads_that_are_not_json_verbatim() {
    let pool = support::mysql_pool().await;
    let tenant = Tenant::create(&pool, "cq_blob", "LONGBLOB").await;
    let site = tenant.site();
    let contract = contract().with_max_bytes(64);
    let long = format!(
        r#"{{"user_id": 1, "kind": "sms", "pad": "{}"}}"#,
        "x".repeat(100)
    );
    let payloads: [&[u8]; 5] = [
        b"not json at all",
        b"{\"user_id\": 1, \"kind\": \"\xff\"}",
        br#"{"user_id": "\u0000", "kind": "sms"}"#,
        long.as_bytes(),
        br#"{"user_id": 1, "kind": "sms"}"#,
    ];
    tenant.enqueue(&pool, &payloads).await;
    site.ensure_table(&pool).await.unwrap();
    let scan = site.backlog_scan(&pool, &contract).await.unwrap();
    assert_eq!((scan.total, scan.valid), (5, 1));
    for (reason, n) in [
        ("invalid_json", 1),
        ("not_utf8", 1),
        ("contract_mismatch", 1),
        ("too_large", 1),
    ] {
        assert_eq!(scan.rejected_by_reason.get(reason), Some(&n), "{scan:?}");
    }
    assert_eq!(consume_with(&pool, &site, 10, &contract).await, (1, 4));
    let listed = site.list(&pool).await.unwrap();
    let raws: Vec<&[u8]> = listed.iter().map(|m| m.payload_raw.as_slice()).collect();
    assert_eq!(raws, payloads[..4]);
    assert!(listed.iter().all(|m| m.payload.is_none()), "{listed:?}");

    // Replay re-checks: the `\u0000` one and the long one are JSON and go back byte for
    // byte; the other two never can.
    let report = site.replay(&pool, &any_json()).await.unwrap();
    assert_eq!(report.replayed, 2);
    let still: Vec<RejectReason> = report
        .still_rejected
        .iter()
        .map(|s| s.rejection.reason)
        .collect();
    assert_eq!(still, [RejectReason::InvalidJson, RejectReason::NotUtf8]);
    let back: Vec<Vec<u8>> = tenant
        .queued(&pool)
        .await
        .into_iter()
        .map(|r| r.1)
        .collect();
    assert_eq!(back, [payloads[2].to_vec(), payloads[3].to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_backlog_scan_reads_every_page() {
    let pool = support::mysql_pool().await;
    let tenant = Tenant::create(&pool, "cq_scan", "JSON").await;
    for chunk in (1..=1203).collect::<Vec<i64>>().chunks(400) {
        let values: Vec<String> = chunk
            .iter()
            .map(|i| match i % 100 {
                0 => "('[]')".to_owned(),
                _ => format!(r#"('{{"user_id": {i}, "kind": "sms"}}')"#),
            })
            .collect();
        let sql = format!(
            "INSERT INTO `{}`.jobs (payload) VALUES {}",
            tenant.name,
            values.join(", ")
        );
        exec(&pool, sql).await;
    }
    let scan = tenant
        .site()
        .backlog_scan(&pool, &contract())
        .await
        .unwrap();
    assert_eq!((scan.total, scan.valid, scan.rejected()), (1203, 1191, 12));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_quarantine_never_overwrites_a_waiting_message_when_a_queue_id_is_reused() {
    let pool = support::mysql_pool().await;
    let tenant = Tenant::create(&pool, "cq_reuse", "JSON").await;
    let site = tenant.site();
    site.ensure_table(&pool).await.unwrap();
    let (a, b) = (
        r#"{"kind": "sms", "from": "A"}"#,
        r#"{"kind": "sms", "from": "B"}"#,
    );
    for p in [a, b] {
        let insert = format!(
            "INSERT INTO `{}`.jobs (id, payload) VALUES (1, ?)",
            tenant.name
        );
        sqlx::query(sqlx::AssertSqlSafe(insert))
            .bind(p)
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(consume(&pool, &site, 10).await, (0, 1));
    }
    let listed = site.list(&pool).await.unwrap();
    let raws: Vec<&[u8]> = listed.iter().map(|m| m.payload_raw.as_slice()).collect();
    assert_eq!(
        raws,
        [a.as_bytes(), b.as_bytes()],
        "both waiting messages kept"
    );

    let report = site.replay(&pool, &any_json()).await.unwrap();
    assert_eq!(report.replayed, 1);
    assert_eq!(report.held.len(), 1);
    assert_eq!(
        (report.held[0].source_id, &report.held[0].why),
        (1, &HeldReason::IdInUse)
    );
    assert_eq!(tenant.queued(&pool).await, [(1, a.as_bytes().to_vec())]);
    exec(&pool, format!("DELETE FROM `{}`.jobs", tenant.name)).await;
    let report = site.replay(&pool, &any_json()).await.unwrap();
    assert_eq!((report.replayed, report.waiting()), (1, 0));
    assert_eq!(tenant.queued(&pool).await, [(1, b.as_bytes().to_vec())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_poison_the_payload_column_rejects_does_not_stall_the_tenant() {
    let pool = support::mysql_pool().await;
    let tenant = Tenant::create(&pool, "cq_stall", "LONGTEXT").await;
    let site = tenant.site();
    site.ensure_table(&pool).await.unwrap();
    // The quarantine's `JSON` column (MariaDB: `JSON_VALID`) refuses a lone surrogate and
    // a document deeper than 32 levels; the first is known and skipped, the second makes
    // the move retry without a parsed copy. The last message is valid.
    let deep = format!(
        r#"{{"user_id": "x", "d": {}{}}}"#,
        "[".repeat(40),
        "]".repeat(40)
    );
    let payloads: [&[u8]; 4] = [
        br#"{"user_id":"x","kind":"\ud800"}"#,
        br#"{"user_id": 1, "kind": "\u0000"}"#,
        deep.as_bytes(),
        br#"{"user_id": 1, "kind": "sms"}"#,
    ];
    tenant.enqueue(&pool, &payloads).await;
    assert_eq!(consume(&pool, &site, 10).await, (1, 3));
    assert_eq!(tenant.count(&pool).await, 0);
    let listed = site.list(&pool).await.unwrap();
    let raws: Vec<&[u8]> = listed.iter().map(|m| m.payload_raw.as_slice()).collect();
    assert_eq!(raws, payloads[..3]);
    assert!(
        listed
            .iter()
            .all(|m| m.payload.is_none() && m.reason == "contract_mismatch")
    );

    // Alone, a poison the column accepts keeps its parsed copy.
    tenant.enqueue(&pool, &[br#"{"kind": "sms"}"#]).await;
    assert_eq!(consume(&pool, &site, 10).await, (0, 1));
    let listed = site.list(&pool).await.unwrap();
    assert_eq!(listed[3].payload.as_deref(), Some(r#"{"kind": "sms"}"#));
}

/// A contract named after a deeply generic type (`PayloadContract::new` uses the type's
/// full path) can be longer than the quarantine's `VARCHAR(255)` name column: the move
/// failed on every batch with poison ("Data too long"), which rolled the batch back and
/// stalled the tenant. The name is stored cut to 255 characters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_a_contract_name_longer_than_its_column_does_not_stall_the_tenant() {
    let pool = support::mysql_pool().await;
    let tenant = Tenant::create(&pool, "cq_long_name", "LONGTEXT").await;
    let site = tenant.site();
    site.ensure_table(&pool).await.unwrap();
    let name = format!(
        "app::events::Envelope<{}>",
        "app::events::Payload<".repeat(20)
    );
    assert!(name.chars().count() > 255);
    let contract = PayloadContract::<Job>::named(name.clone()).with_version("1");
    tenant
        .enqueue(
            &pool,
            &[
                br#"{"user_id": "one", "kind": "sms"}"#,
                br#"{"user_id": 2, "kind": "sms"}"#,
            ],
        )
        .await;
    assert_eq!(consume_with(&pool, &site, 10, &contract).await, (1, 1));
    assert_eq!(tenant.count(&pool).await, 0);
    let listed = site.list(&pool).await.unwrap();
    assert_eq!(listed.len(), 1);
    let stored = &listed[0].contract_name;
    assert_eq!(stored.chars().count(), 255, "{stored}");
    assert!(
        name.starts_with(stored.trim_end_matches('…')) && stored.ends_with('…'),
        "{stored}"
    );
}

/// A deadlock inside the move: InnoDB ends it by rolling back the whole transaction of its
/// victim (the caller's batch here: the other transaction has changed more rows), not only
/// the move's savepoint. The error must say the caller's transaction is gone and must be
/// rolled back, never that it is still usable; nothing moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_a_deadlock_in_the_move_says_the_caller_s_transaction_is_gone() {
    let pool = support::mysql_pool().await;
    let tenant = Tenant::create(&pool, "cq_deadlock", "JSON").await;
    let site = tenant.site();
    let raw = br#"{"kind": "sms"}"#;
    tenant.enqueue(&pool, &[raw, raw]).await;
    site.ensure_table(&pool).await.unwrap();
    let db = &tenant.name;
    exec(
        &pool,
        format!(
            "CREATE TABLE `{db}`.ballast (id INT PRIMARY KEY, n INT NOT NULL) ENGINE = InnoDB;
             INSERT INTO `{db}`.ballast (id, n) SELECT seq, 0 FROM seq_1_to_2000"
        ),
    )
    .await;

    // The batch holds message 1; the other transaction changes 2,000 rows and holds
    // message 2.
    let mut batch = pool.begin().await.unwrap();
    exec(
        &mut *batch,
        format!("SELECT id FROM `{db}`.jobs WHERE id = 1 FOR UPDATE"),
    )
    .await;
    let mut other = pool.begin().await.unwrap();
    exec(
        &mut *other,
        format!(
            "UPDATE `{db}`.ballast SET n = n + 1;
             SELECT id FROM `{db}`.jobs WHERE id = 2 FOR UPDATE"
        ),
    )
    .await;
    // The batch quarantines message 2 and waits for its lock ...
    let moving = tokio::spawn({
        let site = site.clone();
        async move {
            let contract = contract();
            let rejection = contract.check(raw).unwrap_err();
            let outcome = site
                .quarantine(&mut *batch, &contract, &[(2, &raw[..], &rejection)])
                .await;
            (outcome.map_err(|e| e.to_string()), batch)
        }
    });
    // Up to 30 s: on a loaded machine (a CI run) 5 s was once not enough.
    let mut waiting = false;
    for _ in 0..1200 {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if n > 0 {
            waiting = true;
            break;
        }
        if moving.is_finished() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    if !waiting && moving.is_finished() {
        let (outcome, _) = moving.await.unwrap();
        panic!("the move ended without waiting for message 2's lock: {outcome:?}");
    }
    assert!(waiting, "the move never waited for message 2's lock");
    // ... and the other transaction asks for message 1: a lock cycle.
    exec(
        &mut *other,
        format!("SELECT id FROM `{db}`.jobs WHERE id = 1 FOR UPDATE"),
    )
    .await;
    let (outcome, batch) = moving.await.unwrap();
    drop(batch);
    other.rollback().await.unwrap();
    let text = outcome.expect_err("the batch was the deadlock's victim");
    assert!(text.contains("Deadlock"), "{text}");
    assert!(!text.contains("still usable"), "{text}");
    assert!(
        text.contains("rolled it back whole")
            && text.contains("roll it back and run the batch again"),
        "{text}"
    );
    assert_eq!(tenant.count(&pool).await, 2);
    assert!(site.list(&pool).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_quarantine_failure_says_which_table_is_missing() {
    let pool = support::mysql_pool().await;
    let tenant = Tenant::create(&pool, "cq_missing", "JSON").await;
    let (site, contract) = (tenant.site(), contract());
    tenant.enqueue(&pool, &[br#"{"kind": "sms"}"#]).await;
    let raw = br#"{"kind": "sms"}"#;
    let rejection = contract.check(raw).unwrap_err();
    let poison = [(1, &raw[..], &rejection)];

    let mut tx = pool.begin().await.unwrap();
    let text = site
        .quarantine(&mut *tx, &contract, &poison)
        .await
        .unwrap_err()
        .to_string();
    let table = format!(
        "the quarantine table `{}`.`contract_quarantine` does not exist",
        tenant.name
    );
    for part in [
        table.as_str(),
        &format!("tenant `{}`", tenant.name),
        "queue `jobs`",
        "ensure_table",
    ] {
        assert!(text.contains(part), "{part}: {text}");
    }
    assert!(!text.contains("server is up"), "{text}");
    // The caller's transaction goes on.
    let sql = format!("SELECT COUNT(*) FROM `{}`.jobs", tenant.name);
    let still: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(still, 1);
    tx.commit().await.unwrap();
    let text = site.list(&pool).await.unwrap_err().to_string();
    assert!(
        text.contains("the quarantine table") && text.contains("listing"),
        "{text}"
    );

    site.ensure_table(&pool).await.unwrap();
    let wrong = QueueQuarantine::new(
        TenantName::new(&tenant.name).unwrap(),
        QueueTable::new("jobz"),
    );
    let mut tx = pool.begin().await.unwrap();
    let text = wrong
        .quarantine(&mut *tx, &contract, &poison)
        .await
        .unwrap_err()
        .to_string();
    let table = format!("the queue table `{}`.`jobz` does not exist", tenant.name);
    assert!(
        text.contains(&table) && text.contains("queue `jobz`"),
        "{text}"
    );
    tx.rollback().await.unwrap();
    let text = wrong
        .backlog_scan(&pool, &contract)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("the queue table") && text.contains("scanning"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_replay_re_enqueues_only_what_the_contract_now_accepts() {
    let pool = support::mysql_pool().await;
    let tenant = Tenant::create(&pool, "cq_recheck", "JSON").await;
    let site = tenant.site();
    site.ensure_table(&pool).await.unwrap();
    let deep = format!(
        r#"{{"user_id": 4, "kind": {}"x"{}}}"#,
        "[".repeat(20),
        "]".repeat(20)
    );
    tenant
        .enqueue(
            &pool,
            &[
                br#"{"user_id": 1, "kind": "fax"}"#,
                br#"{"kind": "sms"}"#,
                br#"{"user_id": 3, "kind": "fax"}"#,
                deep.as_bytes(),
            ],
        )
        .await;
    assert_eq!(consume(&pool, &site, 10).await, (0, 4));
    // The fixed contract knows any `kind` but still needs `user_id`.
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct JobV2 {
        user_id: i64,
        kind: serde_json::Value,
    }
    let fixed = PayloadContract::<JobV2>::named("job").with_version("2");
    // The queue's `JSON` column takes 20 levels; make it refuse the deep one on the way
    // back (a tighter check than the producer had): it is held, not lost.
    exec(
        &pool,
        format!(
            "ALTER TABLE `{}`.jobs ADD CONSTRAINT shallow CHECK (JSON_DEPTH(payload) < 10)",
            tenant.name
        ),
    )
    .await;
    let report = site.replay(&pool, &fixed).await.unwrap();
    assert_eq!(report.replayed, 2);
    let still: Vec<(i64, RejectReason)> = report
        .still_rejected
        .iter()
        .map(|s| (s.source_id, s.rejection.reason))
        .collect();
    assert_eq!(still, [(2, RejectReason::ContractMismatch)]);
    assert!(
        matches!(&report.held[..], [h] if h.source_id == 4 && matches!(h.why, HeldReason::QueueRefused { .. })),
        "{report:?}"
    );
    let queued: Vec<i64> = tenant
        .queued(&pool)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(queued, [1, 3]);
    let waiting: Vec<i64> = site
        .list(&pool)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.is_waiting())
        .map(|m| m.source_id)
        .collect();
    assert_eq!(waiting, [2, 4], "the rejected and the refused keep waiting");
}
