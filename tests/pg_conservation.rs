//! Conservation under drift and crashes: 20 tenants × 1,000 messages (2% poison) consumed
//! by the `conservation_consumer` process, which is SIGKILLed mid-way and restarted, while
//! a contracted column is dropped on 3 tenants (the guard closes those gates only, SafeOnly
//! re-adds the column, the gates reopen). At the end every message is either processed or
//! quarantined, exactly once; the poison is exactly the quarantine, with the right reason;
//! the 17 healthy tenants were never paused.

#[path = "support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use contract_sqlx::guard::install_ddl_trigger;
use sqlx::{AssertSqlSafe, Connection, PgPool};
use support::{PgScratch, exec};
use tokio::time::{Instant, sleep};

const TENANTS: usize = 20;
const PER_TENANT: i64 = 1_000;
const TOTAL: i64 = 20_000;
const BATCH: &str = "100";
/// The tenants whose `processed.note` column is dropped while the consumer runs.
const DDL_TENANTS: [usize; 3] = [3, 10, 17];
/// The test fails, rather than hangs, after this.
const BOUND: Duration = Duration::from_secs(300);

fn tenant(t: usize) -> String {
    format!("tenant_{t:02}")
}

/// Message `i` of tenant `t`, and for poison the expected quarantine reason and (for a
/// contract mismatch) field path.
/// Every 50th message (from 25) is poison: 2%.
fn message(t: usize, i: i64) -> (String, Option<(&'static str, Option<&'static str>)>) {
    if i % 50 != 25 {
        let kind = ["click", "view", "purchase"][usize::try_from(i % 3).unwrap_or(0)];
        let user = user_id(t, i);
        return (format!(r#"{{"user_id": {user}, "kind": "{kind}"}}"#), None);
    }
    if t.is_multiple_of(4) && i == 525 {
        let huge = "x".repeat(10 * 1024 * 1024);
        let payload = format!(r#"{{"user_id": 1, "kind": "{huge}"}}"#);
        return (payload, Some(("too_large", None)));
    }
    match (i / 50) % 4 {
        0 => (
            r#"{"user_id": 7, "kind": "click""#.into(),
            Some(("invalid_json", None)),
        ),
        1 => (
            format!(r#"{{"user_id": "u{i}", "kind": "view"}}"#),
            Some(("contract_mismatch", Some("user_id"))),
        ),
        2 => (
            r#"{"kind": "view"}"#.into(),
            Some(("contract_mismatch", None)),
        ),
        _ => (
            format!(r#"{{"user_id": {i}, "kind": "teleport"}}"#),
            Some(("contract_mismatch", Some("kind"))),
        ),
    }
}

fn user_id(t: usize, i: i64) -> i64 {
    i64::try_from(t).unwrap_or(0) * 100_000 + i
}

async fn seed(pool: &PgPool) {
    exec(
        pool,
        "CREATE TABLE public.pause_log (tenant text NOT NULL, reason text NOT NULL,
            seen_at timestamptz NOT NULL DEFAULT now());
         CREATE TABLE public.consumer_errors (tenant text NOT NULL, code text, message text NOT NULL,
            seen_at timestamptz NOT NULL DEFAULT now())",
    )
    .await;
    for t in 1..=TENANTS {
        let s = tenant(t);
        exec(
            pool,
            &format!(
                "CREATE SCHEMA {s};
                 CREATE TABLE {s}.queue (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    payload text NOT NULL, enqueued_at timestamptz NOT NULL DEFAULT now(),
                    attempts int NOT NULL DEFAULT 0);
                 CREATE TABLE {s}.processed (source_id bigint NOT NULL UNIQUE, user_id bigint NOT NULL,
                    kind text NOT NULL, note text DEFAULT '', processed_at timestamptz NOT NULL DEFAULT now())"
            ),
        )
        .await;
        let (ids, payloads): (Vec<i64>, Vec<String>) =
            (1..=PER_TENANT).map(|i| (i, message(t, i).0)).unzip();
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {s}.queue (id, payload) OVERRIDING SYSTEM VALUE
             SELECT * FROM unnest($1::int8[], $2::text[])"
        )))
        .bind(&ids)
        .bind(&payloads)
        .execute(pool)
        .await
        .expect("enqueue");
    }
}

/// Messages done so far: processed or quarantined, over every tenant. The consumer
/// creates the quarantine table at start-up, so an absent one counts as none; any other
/// failure fails the test at once (rather than as a wait that times out).
async fn done(pool: &PgPool) -> i64 {
    let quarantine: bool =
        sqlx::query_scalar("SELECT to_regclass('public.contract_quarantine') IS NOT NULL")
            .fetch_one(pool)
            .await
            .expect("catalog");
    let mut counts: Vec<String> = (1..=TENANTS)
        .map(|t| format!("(SELECT count(*) FROM {}.processed)", tenant(t)))
        .collect();
    if quarantine {
        counts.push("(SELECT count(*) FROM public.contract_quarantine)".to_owned());
    }
    let sql = format!("SELECT {}", counts.join(" + "));
    sqlx::query_scalar(AssertSqlSafe(sql.clone()))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

struct Consumer {
    child: Child,
    log: std::path::PathBuf,
}

impl Consumer {
    fn start(url: &str, run: &str) -> Self {
        let log = std::env::temp_dir().join(format!(
            "conservation_consumer_{}_{run}.log",
            std::process::id()
        ));
        let file = std::fs::File::create(&log).expect("log file");
        let tenants: Vec<String> = (1..=TENANTS).map(tenant).collect();
        let child = Command::new(env!("CARGO_BIN_EXE_conservation_consumer"))
            .args([url, &tenants.join(","), BATCH, "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn the consumer");
        Self { child, log }
    }

    fn output(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Panics if the process already exited (it must still be consuming).
    fn assert_running(&mut self, what: &str) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!(
                "consumer exited ({status}) before {what}:\n{}",
                self.output()
            );
        }
    }
}

/// A failing test must not leave a consumer running.
impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Polls `check` every 20 ms until it holds; panics past the deadline.
async fn wait_for<F: Future<Output = bool>>(
    deadline: Instant,
    what: &str,
    consumer: &mut Consumer,
    mut check: impl FnMut() -> F,
) {
    while !check().await {
        consumer.assert_running(what);
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{}",
            consumer.output()
        );
        sleep(Duration::from_millis(20)).await;
    }
}

async fn queue_counts(pool: &PgPool, tenants: &[usize]) -> Vec<i64> {
    let mut counts = Vec::new();
    for t in tenants {
        let sql = format!("SELECT count(*) FROM {}.queue", tenant(*t));
        counts.push(
            sqlx::query_scalar(AssertSqlSafe(sql))
                .fetch_one(pool)
                .await
                .expect("count"),
        );
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_is_processed_or_quarantined_exactly_once_through_drift_and_kill() {
    let started = Instant::now();
    let deadline = started + BOUND;
    let db = PgScratch::create("contract_conservation").await;
    let pool = &db.pool;
    seed(pool).await;
    install_ddl_trigger(pool)
        .await
        .expect("event trigger (tests run as superuser)");

    // 1. Consume, then SIGKILL the consumer mid-way: its open batch rolls back.
    let mut first = Consumer::start(&db.url, "first");
    wait_for(deadline, "20% done", &mut first, || async {
        done(pool).await >= TOTAL / 5
    })
    .await;
    first.assert_running("the kill");
    first.child.kill().expect("SIGKILL");
    first.child.wait().expect("reap");
    let at_kill = done(pool).await;
    assert!(at_kill < TOTAL, "the kill must come mid-way ({at_kill})");

    // 2. Restart; while it consumes, drop `processed.note` on 3 tenants in one DDL
    //    transaction. Another replica "remediating" them (holding the per-tenant advisory
    //    lock the guard takes, DESIGN D10) keeps the repair waiting, so the pause lasts.
    let mut second = Consumer::start(&db.url, "second");
    wait_for(deadline, "40% done", &mut second, || async {
        done(pool).await >= TOTAL * 2 / 5
    })
    .await;
    let mut replica = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    for t in DDL_TENANTS {
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(contract_sqlx::remediation::tenant_lock_key(&tenant(t)))
            .execute(&mut replica)
            .await
            .expect("advisory lock");
    }
    let ddl: String = DDL_TENANTS
        .iter()
        .map(|t| format!("ALTER TABLE {}.processed DROP COLUMN note;", tenant(*t)))
        .collect();
    exec(pool, &format!("BEGIN; {ddl} COMMIT")).await;
    let dropped_at = done(pool).await;
    let logged = || async {
        let paused: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT tenant FROM public.pause_log ORDER BY 1")
                .fetch_all(pool)
                .await
                .expect("pause_log");
        paused.len() >= DDL_TENANTS.len()
    };
    let soon = deadline.min(Instant::now() + Duration::from_secs(30));
    wait_for(soon, "the 3 gates to close", &mut second, logged).await;
    // Paused tenants' messages are not touched (a batch in flight at the pause was
    // rolled back or had committed before the first snapshot).
    sleep(Duration::from_millis(200)).await;
    let held = queue_counts(pool, &DDL_TENANTS).await;
    assert!(
        held.iter().all(|n| *n > 0),
        "paused with messages: {held:?}"
    );
    sleep(Duration::from_millis(300)).await;
    assert_eq!(queue_counts(pool, &DDL_TENANTS).await, held);
    second.assert_running("the repair");
    replica.close().await.expect("release the advisory locks");

    // 3. Run to completion: the consumer exits once every queue is empty and no gate is closed.
    let status = loop {
        if let Some(status) = second.child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = second.child.kill();
            panic!("the consumer did not finish:\n{}", second.output());
        }
        sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "consumer: {status}\n{}", second.output());
    let elapsed = started.elapsed();

    // Every message exactly once: processed ∪ quarantined = all ids, disjoint.
    for t in 1..=TENANTS {
        let s = tenant(t);
        let processed: Vec<(i64, i64, String, Option<String>)> = sqlx::query_as(AssertSqlSafe(
            format!("SELECT source_id, user_id, kind, note FROM {s}.processed ORDER BY source_id"),
        ))
        .fetch_all(pool)
        .await
        .expect("processed");
        let quarantined: Vec<(i64, String, Option<String>, i64)> = sqlx::query_as(
            "SELECT source_id, reason, field_path, attempts FROM public.contract_quarantine
             WHERE tenant = $1 AND queue = 'queue' ORDER BY source_id",
        )
        .bind(&s)
        .fetch_all(pool)
        .await
        .expect("quarantine");
        assert_eq!(
            processed.len() + quarantined.len(),
            1000,
            "{s}: processed + quarantined"
        );
        let mut seen = BTreeSet::new();
        for id in processed
            .iter()
            .map(|r| r.0)
            .chain(quarantined.iter().map(|r| r.0))
        {
            assert!(seen.insert(id), "{s}: message {id} is there twice");
        }
        assert_eq!(seen, (1..=PER_TENANT).collect(), "{s}: missing messages");
        for (id, user, kind, note) in &processed {
            let (payload, poison) = message(t, *id);
            assert!(poison.is_none(), "{s}: poison {id} was processed");
            assert!(payload.contains(&format!(r#""user_id": {user}, "kind": "{kind}""#)));
            assert_eq!(*user, user_id(t, *id));
            // Rows written before the column was dropped get its default back.
            let dropped = DDL_TENANTS.contains(&t) && note.as_deref() == Some("");
            assert!(
                note.as_deref() == Some("ok") || dropped,
                "{s}: note {note:?}"
            );
        }
        for (id, reason, path, attempts) in &quarantined {
            let (expected, expected_path) = message(t, *id).1.expect("only poison is quarantined");
            assert_eq!(reason, expected, "{s}: message {id}");
            if reason == "contract_mismatch" {
                assert_eq!(path.as_deref(), expected_path, "{s}: message {id}");
            }
            assert_eq!(*attempts, 0, "{s}: a release counted an attempt");
        }
        let expected_poison = (1..=PER_TENANT)
            .filter(|i| message(t, *i).1.is_some())
            .count();
        assert_eq!(quarantined.len(), expected_poison, "{s}: quarantined");
        let left: i64 =
            sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {s}.queue")))
                .fetch_one(pool)
                .await
                .expect("queue");
        assert_eq!(left, 0, "{s}: queue not empty");
    }
    // Only the DDL'd tenants were ever paused, and the guard repaired exactly those.
    let ddl_names: BTreeSet<String> = DDL_TENANTS.iter().map(|t| tenant(*t)).collect();
    let paused: BTreeSet<String> =
        sqlx::query_scalar("SELECT DISTINCT tenant FROM public.pause_log")
            .fetch_all(pool)
            .await
            .expect("pause_log")
            .into_iter()
            .collect();
    assert_eq!(paused, ddl_names, "only the drifted tenants pause");
    let repaired: BTreeSet<String> =
        sqlx::query_scalar("SELECT DISTINCT tenant FROM public.contract_audit")
            .fetch_all(pool)
            .await
            .expect("audit")
            .into_iter()
            .collect();
    assert_eq!(repaired, ddl_names, "SafeOnly re-added the column there");
    let pauses_left: i64 = sqlx::query_scalar("SELECT count(*) FROM public.contract_pauses")
        .fetch_one(pool)
        .await
        .expect("pauses");
    assert_eq!(pauses_left, 0);
    // Batches rolled back by the DDL race (before the gate closed) are fine; nothing else.
    let errors: Vec<(String, Option<String>, String)> =
        sqlx::query_as("SELECT tenant, code, message FROM public.consumer_errors")
            .fetch_all(pool)
            .await
            .expect("errors");
    let mut by_code: BTreeMap<(String, Option<String>), usize> = BTreeMap::new();
    for (t, code, message) in &errors {
        assert!(
            ddl_names.contains(t) && code.as_deref() == Some("42703"),
            "unexpected consumer error on {t} ({code:?}): {message}"
        );
        *by_code.entry((t.clone(), code.clone())).or_default() += 1;
    }
    println!(
        "{TOTAL} messages in {elapsed:?}; killed at {at_kill}, DDL at {dropped_at}; rolled-back batches: {by_code:?}"
    );
    db.drop_db().await;
}
