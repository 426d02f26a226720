//! Faults on PostgreSQL, through a fault-injecting proxy: a connection cut at each step of
//! a remediation, of a quarantine move and of a replay, a guard pass cut, the DDL listener cut, the
//! server unreachable at start-up and away for 30 s with passes running. Nothing is lost,
//! duplicated, half-applied or left open; gates fail closed; the guard recovers by itself.
//! The scratch database is set up directly; the code under test goes through the proxy.

use crate::support;

use std::time::{Duration, Instant};

use contract_sqlx::guard::install_ddl_trigger;
use contract_sqlx::payload::{PayloadContract, Rejection};
use contract_sqlx::plan::Remediation;
use contract_sqlx::quarantine::{QueueQuarantine, QueueTable};
use contract_sqlx::{Contract, Guard, TenantName, Tenants, check::ContractSet, remediate};
use sqlx::{Connection as _, PgPool, Postgres};
use support::faults::{
    PassCounter, all_paused_unreachable, eventually, nothing_left_open, open_gates,
    passes_to_reopen, pause_reason, pg_pool_through, ride_out_outage,
};
use support::proxy::{Cut, Fault, Proxy, Refusal, pg_options, target_of};
use support::{PgScratch, exec, pg_tenant_directory, pg_url};

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "events")]
#[allow(dead_code)]
struct Event {
    #[contract(primary_key)]
    id: i64,
    user_id: i64,
    note: Option<String>,
    #[contract(default = "'{}'")]
    event_metadata: Option<serde_json::Value>,
}

const FULL: &str =
    "(id int8 PRIMARY KEY, user_id int8 NOT NULL, note text, event_metadata jsonb DEFAULT '{}')";
/// Two safe additions away from the contract (`note`, `event_metadata`).
const DRIFTED: &str = "(id int8 PRIMARY KEY, user_id int8 NOT NULL)";

/// Schemas `tenant_1..`, each with one row in `events` of the given definition.
async fn seed(pool: &PgPool, definitions: &[&str]) {
    for (i, definition) in definitions.iter().enumerate() {
        let t = format!("tenant_{}", i + 1);
        exec(
            pool,
            format!(
                "CREATE SCHEMA {t}; CREATE TABLE {t}.events {definition}; INSERT INTO {t}.events (id, user_id) VALUES (1, 7)"
            ),
        )
        .await;
    }
}

async fn proxy_to_pg() -> Proxy {
    Proxy::start(target_of(&pg_url())).await
}

/// Statuses of `tenant`'s audit rows (none when the table was never created).
async fn audit(pool: &PgPool, tenant: &str) -> Vec<String> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('public.contract_audit') IS NOT NULL")
            .fetch_one(pool)
            .await
            .expect("catalog");
    if !exists {
        return Vec::new();
    }
    sqlx::query_scalar("SELECT status FROM public.contract_audit WHERE tenant = $1")
        .bind(tenant)
        .fetch_all(pool)
        .await
        .expect("audit rows")
}

/// How many of the two columns remediation adds `tenant.events` has.
async fn added_columns(pool: &PgPool, tenant: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = $1 \
         AND table_name = 'events' AND column_name IN ('note', 'event_metadata')",
    )
    .bind(tenant)
    .fetch_one(pool)
    .await
    .expect("columns")
}

// ---- the proxy itself ----

async fn select_one(conn: &mut sqlx::PgConnection) -> sqlx::Result<i32> {
    sqlx::query_scalar("SELECT 1").fetch_one(conn).await
}

/// Inserts `label` into `marks` on a new connection with `options`.
async fn insert_mark(options: &sqlx::postgres::PgConnectOptions, label: &str) -> sqlx::Result<()> {
    let mut conn = sqlx::PgConnection::connect_with(options).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO marks VALUES ('{label}')"
    )))
    .execute(&mut conn)
    .await
    .map(drop)
}

async fn marks(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT label FROM marks ORDER BY label")
        .fetch_all(pool)
        .await
        .expect("marks")
}

#[tokio::test]
async fn proxy_forwards_cuts_refuses_heals_and_shuts_down() {
    let proxy = proxy_to_pg().await;
    let options = pg_options(&proxy, &pg_url());
    let mut conn = sqlx::PgConnection::connect_with(&options)
        .await
        .expect("through the proxy");
    assert_eq!(select_one(&mut conn).await.expect("forwarded"), 1);
    assert_eq!(proxy.accepted(), 1);

    proxy.cut_all();
    assert_eq!(proxy.cut(), 1);
    assert!(
        select_one(&mut conn).await.is_err(),
        "a cut connection fails"
    );

    proxy.refuse(Refusal::Close).await;
    assert!(sqlx::PgConnection::connect_with(&options).await.is_err());
    assert_eq!(proxy.accepted(), 2, "accepted, then closed");
    proxy.refuse(Refusal::Down).await;
    match sqlx::PgConnection::connect_with(&options).await {
        Err(sqlx::Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused),
        other => panic!("expected connection refused, got {:?}", other.map(|_| ())),
    }
    proxy.heal().await;
    let mut conn = sqlx::PgConnection::connect_with(&options)
        .await
        .expect("healed");
    assert_eq!(select_one(&mut conn).await.expect("forwarded again"), 1);

    // A delay holds every chunk back (a lower bound, not a timing measurement).
    proxy.delay(Duration::from_millis(200));
    let started = Instant::now();
    assert_eq!(select_one(&mut conn).await.expect("delayed"), 1);
    assert!(started.elapsed() >= Duration::from_millis(400), "both ways");
    proxy.heal().await;

    drop(proxy);
    assert!(
        select_one(&mut conn).await.is_err(),
        "dropping the proxy closes its connections"
    );
}

#[tokio::test]
async fn proxy_cuts_before_sending_or_before_the_answer() {
    let scratch = PgScratch::create("contract_fault_proxy").await;
    exec(&scratch.pool, "CREATE TABLE marks (label text)").await;
    let proxy = proxy_to_pg().await;
    let options = pg_options(&proxy, &scratch.url);

    let fault = proxy.arm(&["'never-sent'"], Cut::BeforeSending);
    assert!(insert_mark(&options, "never-sent").await.is_err());
    assert!(fault.fired());
    assert!(
        marks(&scratch.pool).await.is_empty(),
        "the server never saw it"
    );

    let fault = proxy.arm(&["'done-unheard'"], Cut::BeforeAnswer);
    assert!(insert_mark(&options, "done-unheard").await.is_err());
    assert!(fault.fired());
    assert_eq!(
        marks(&scratch.pool).await,
        ["done-unheard"],
        "the server did it"
    );

    // Patterns match in order, across statements of one connection.
    let fault = proxy.arm(&["'alpha'", "'omega'"], Cut::BeforeSending);
    let mut conn = sqlx::PgConnection::connect_with(&options)
        .await
        .expect("connect");
    for (label, cut) in [("omega", false), ("alpha", false), ("omega", true)] {
        let sent = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SELECT '{label}'")))
            .execute(&mut conn)
            .await;
        assert_eq!(sent.is_err(), cut, "{label}");
    }
    assert!(fault.fired());
    assert_eq!(proxy.cut(), 3);
    scratch.drop_db().await;
}

/// The check every remediation fault test ends with sees a statement the server is still
/// running for a session (as it runs on for a dropped client until it next reads), not only
/// advisory locks and idle transactions.
#[tokio::test]
async fn nothing_left_open_sees_a_statement_still_running() {
    let scratch = PgScratch::create("contract_fault_open").await;
    assert!(nothing_left_open(&scratch.pool).await, "a fresh database");
    let mut busy = sqlx::PgConnection::connect(&scratch.url)
        .await
        .expect("connect");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut busy)
        .await
        .expect("pid");
    let sleeping = tokio::spawn(async move {
        let _cancelled = sqlx::query("SELECT pg_sleep(60)").execute(&mut busy).await;
        busy
    });
    let mut running = false;
    for _ in 0..200 {
        running = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active')",
        )
        .bind(pid)
        .fetch_one(&scratch.pool)
        .await
        .expect("activity");
        if running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(running, "the statement never started");
    assert!(
        !nothing_left_open(&scratch.pool).await,
        "a running statement is something left open"
    );
    sqlx::query("SELECT pg_cancel_backend($1)")
        .bind(pid)
        .execute(&scratch.pool)
        .await
        .expect("cancel");
    sleeping.await.expect("task").close().await.expect("close");
    assert!(nothing_left_open(&scratch.pool).await, "once it ended");
    scratch.drop_db().await;
}

// ---- remediation cut at each apply stage ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    BeforeTenantLock,
    AfterTenantLock,
    AfterDdl,
    BeforeCommit,
    DuringCommit,
}

impl Stage {
    fn arm(self, proxy: &Proxy) -> Fault {
        match self {
            // The lock is taken in the message that begins the transaction.
            Stage::BeforeTenantLock => proxy.arm(&[&tenant_1_lock()], Cut::BeforeSending),
            // The server began the transaction and took the lock; the client never hears.
            Stage::AfterTenantLock => proxy.arm(&[&tenant_1_lock()], Cut::BeforeAnswer),
            // tenant_1's own DDL (the audit table's upgrade is an ALTER TABLE too).
            Stage::AfterDdl => proxy.arm(&[TENANT_1_DDL], Cut::BeforeAnswer),
            Stage::BeforeCommit => proxy.arm(&[TENANT_1_DDL, "COMMIT"], Cut::BeforeSending),
            Stage::DuringCommit => proxy.arm(&[TENANT_1_DDL, "COMMIT"], Cut::BeforeAnswer),
        }
    }
}

/// How tenant_1's remediation takes its lock, as sent.
fn tenant_1_lock() -> String {
    let key = contract_sqlx::remediation::tenant_lock_key("tenant_1");
    format!("pg_advisory_xact_lock('{key}'::int8)")
}

/// The start of tenant_1's remediation DDL, as sent.
const TENANT_1_DDL: &str = "ALTER TABLE \"tenant_1\"";

/// tenant_1 and tenant_2 lack two columns, tenant_3 complies; the cut hits tenant_1's
/// apply (the first). All or nothing for tenant_1, the failure reported, tenant_2
/// remediated in the same run, and the next run converges with one audit row each.
async fn remediation_cut(stage: Stage) {
    let scratch = PgScratch::create("contract_fault_rem").await;
    seed(&scratch.pool, &[DRIFTED, DRIFTED, FULL]).await;
    let proxy = proxy_to_pg().await;
    let pool = pg_pool_through(&proxy, &scratch.url);
    let dir = pg_tenant_directory(&pool).await;
    let contracts = ContractSet::<Postgres>::new().with::<Event>();

    let fault = stage.arm(&proxy);
    let run = remediate(&dir, &contracts, Remediation::SafeOnly)
        .run()
        .await
        .expect("run");
    assert!(fault.fired(), "{stage:?}: the cut never happened");
    let failed: Vec<&str> = run.failed.iter().map(|f| f.tenant.as_str()).collect();
    assert_eq!(
        failed,
        ["tenant_1"],
        "{stage:?}: the failure is reported: {:?}",
        run.failed
    );
    assert!(
        run.log.outcome.contains("tenant_1 failed"),
        "{}",
        run.log.outcome
    );
    let error = &run.failed[0].error;
    // A connection lost at COMMIT leaves the client unable to tell whether the server
    // committed (the COMMIT may or may not have reached it): the error must say so.
    if matches!(stage, Stage::BeforeCommit | Stage::DuringCommit) {
        assert!(
            !error.contains("unchanged") && error.contains("unknown"),
            "{stage:?}: the commit may have happened, the error must not say otherwise: {error}"
        );
    } else {
        assert!(error.contains("rolled back"), "{stage:?}: {error}");
    }
    let committed = stage == Stage::DuringCommit;
    let (columns, rows) = if committed {
        (2, vec!["applied"])
    } else {
        (0, vec![])
    };
    assert_eq!(
        added_columns(&scratch.pool, "tenant_1").await,
        columns,
        "{stage:?}"
    );
    assert_eq!(audit(&scratch.pool, "tenant_1").await, rows, "{stage:?}");
    assert_eq!(added_columns(&scratch.pool, "tenant_2").await, 2);
    assert_eq!(audit(&scratch.pool, "tenant_2").await, ["applied"]);
    assert!(
        nothing_left_open(&scratch.pool).await,
        "{stage:?}: a lock or transaction was left open"
    );

    let next = remediate(&dir, &contracts, Remediation::SafeOnly)
        .run()
        .await
        .expect("next run");
    assert!(next.failed.is_empty(), "{:?}", next.failed);
    assert!(next.after.is_clean(), "{}", next.after);
    for tenant in ["tenant_1", "tenant_2"] {
        assert_eq!(added_columns(&scratch.pool, tenant).await, 2);
        assert_eq!(
            audit(&scratch.pool, tenant).await,
            ["applied"],
            "{stage:?}: {tenant}"
        );
    }
    assert!(audit(&scratch.pool, "tenant_3").await.is_empty());
    pool.close().await;
    scratch.drop_db().await;
}

#[tokio::test]
async fn remediation_cut_before_the_tenant_lock() {
    remediation_cut(Stage::BeforeTenantLock).await;
}

#[tokio::test]
async fn remediation_cut_after_the_tenant_lock_was_taken() {
    remediation_cut(Stage::AfterTenantLock).await;
}

#[tokio::test]
async fn remediation_cut_after_the_ddl_was_answered() {
    remediation_cut(Stage::AfterDdl).await;
}

#[tokio::test]
async fn remediation_cut_before_commit() {
    remediation_cut(Stage::BeforeCommit).await;
}

#[tokio::test]
async fn remediation_cut_after_commit_was_sent() {
    remediation_cut(Stage::DuringCommit).await;
}

/// The remediation future is dropped while its DDL waits for a lock someone else holds:
/// once that lock is released, nothing was applied, nothing is left open, and the next
/// run applies once.
#[tokio::test]
async fn remediation_future_dropped_mid_ddl_applies_nothing_and_leaves_nothing_open() {
    let scratch = PgScratch::create("contract_fault_cancel").await;
    seed(&scratch.pool, &[DRIFTED, FULL]).await;
    let dir = pg_tenant_directory(&scratch.pool).await;
    let contracts = ContractSet::<Postgres>::new().with::<Event>();
    let mut blocker = scratch.pool.begin().await.expect("begin");
    exec(
        &mut *blocker,
        "LOCK TABLE tenant_1.events IN ACCESS SHARE MODE",
    )
    .await;
    let options = contract_sqlx::remediation::ApplyOptions::default()
        .with_lock_timeout(Duration::from_secs(60));
    let run = {
        let (dir, contracts) = (dir.clone(), contracts.clone());
        tokio::spawn(async move {
            remediate(&dir, &contracts, Remediation::SafeOnly)
                .options(options)
                .run()
                .await
        })
    };
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                   AND wait_event_type = 'Lock' AND query LIKE '%ALTER TABLE \"tenant_1\"%'";
    let mut seen = false;
    for _ in 0..200 {
        let n: i64 = sqlx::query_scalar(waiting)
            .fetch_one(&scratch.pool)
            .await
            .expect("activity");
        if n > 0 {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "the remediation never reached its DDL");
    run.abort();
    assert!(run.await.is_err_and(|e| e.is_cancelled()));
    blocker.rollback().await.expect("release");
    assert!(
        nothing_left_open(&scratch.pool).await,
        "a lock or transaction was left open"
    );
    assert_eq!(added_columns(&scratch.pool, "tenant_1").await, 0);
    assert!(audit(&scratch.pool, "tenant_1").await.is_empty());

    let next = remediate(&dir, &contracts, Remediation::SafeOnly)
        .run()
        .await
        .expect("next run");
    assert!(next.after.is_clean(), "{}", next.after);
    assert_eq!(audit(&scratch.pool, "tenant_1").await, ["applied"]);
    scratch.drop_db().await;
}

// ---- quarantine cut mid-move ----

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct Job {
    user_id: i64,
}

/// Messages 1..=6; 2 and 5 have a string `user_id` (poison).
const MESSAGES: i64 = 6;
const POISON: [i64; 2] = [2, 5];

/// One consumer batch in one transaction: claim all, quarantine the poison, ack the rest.
async fn consume_batch(pool: &PgPool, tenant: &TenantName) -> Result<(), String> {
    let site = QueueQuarantine::new(tenant.clone(), QueueTable::new("jobs"));
    let contract = PayloadContract::<Job>::named("job");
    let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
    let claim = format!(
        "WITH c AS (SELECT id FROM {tenant}.jobs ORDER BY id FOR UPDATE SKIP LOCKED)
         UPDATE {tenant}.jobs AS j SET attempts = j.attempts + 1 FROM c WHERE j.id = c.id
         RETURNING j.id, j.payload::text"
    );
    let rows: Vec<(i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(claim))
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| e.to_string())?;
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
    site.quarantine(&mut *tx, &contract, &rejected)
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {tenant}.jobs WHERE id = ANY($1)"
    )))
    .bind(&accepted)
    .execute(&mut *tx)
    .await
    .map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())
}

/// A scratch database with the (shared) quarantine table, and a proxy to the server.
async fn quarantine_scratch(prefix: &str) -> (PgScratch, Proxy) {
    let scratch = PgScratch::create(prefix).await;
    let any_tenant = TenantName::new("tenant_1").expect("tenant name");
    QueueQuarantine::new(any_tenant, QueueTable::new("jobs"))
        .ensure_table(&scratch.pool)
        .await
        .expect("quarantine table");
    (scratch, proxy_to_pg().await)
}

/// Schema `name` with its queue `jobs` holding [`MESSAGES`] messages, [`POISON`] among them.
async fn seed_jobs(pool: &PgPool, name: &str) -> TenantName {
    exec(
        pool,
        format!(
            "CREATE SCHEMA {name}; CREATE TABLE {name}.jobs (id int8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
             payload jsonb NOT NULL, enqueued_at timestamptz NOT NULL DEFAULT now(), attempts int4 NOT NULL DEFAULT 0)"
        ),
    )
    .await;
    for id in 1..=MESSAGES {
        let user_id = if POISON.contains(&id) {
            format!("\"u{id}\"")
        } else {
            id.to_string()
        };
        exec(
            pool,
            format!("INSERT INTO {name}.jobs (payload) VALUES ('{{\"user_id\": {user_id}}}')"),
        )
        .await;
    }
    TenantName::new(name).expect("tenant")
}

/// Ids in the tenant's queue, and source ids in quarantine, read directly.
async fn where_messages_are(pool: &PgPool, tenant: &str) -> (Vec<i64>, Vec<i64>) {
    let queue = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM {tenant}.jobs ORDER BY id"
    )))
    .fetch_all(pool)
    .await
    .expect("queue");
    let quarantined = sqlx::query_scalar(
        "SELECT source_id FROM public.contract_quarantine WHERE tenant = $1 ORDER BY source_id",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await
    .expect("quarantine");
    (queue, quarantined)
}

#[tokio::test]
async fn quarantine_cut_mid_move_keeps_each_message_in_exactly_one_place() {
    let (scratch, proxy) = quarantine_scratch("contract_fault_quarantine").await;
    let pool = pg_pool_through(&proxy, &scratch.url);
    let all: Vec<i64> = (1..=MESSAGES).collect();
    // (patterns, cut, whether the batch committed); the move is one statement.
    let cuts: [(&[&str], Cut, bool); 3] = [
        (&["moved AS ("], Cut::BeforeAnswer, false),
        (&["moved AS (", "COMMIT"], Cut::BeforeSending, false),
        (&["moved AS (", "COMMIT"], Cut::BeforeAnswer, true),
    ];
    for (i, (patterns, cut, committed)) in cuts.into_iter().enumerate() {
        let name = format!("queue_{i}");
        let tenant = seed_jobs(&scratch.pool, &name).await;
        let fault = proxy.arm(patterns, cut);
        let batch = consume_batch(&pool, &tenant).await;
        assert!(
            fault.fired() && batch.is_err(),
            "{patterns:?} {cut:?}: {batch:?}"
        );
        let (queue, quarantined) = where_messages_are(&scratch.pool, &name).await;
        for id in POISON {
            assert!(
                queue.contains(&id) != quarantined.contains(&id),
                "{patterns:?} {cut:?}: message {id} in the queue {queue:?} and quarantine {quarantined:?}"
            );
        }
        let expected = if committed {
            (vec![], POISON.to_vec())
        } else {
            (all.clone(), vec![])
        };
        assert_eq!((queue, quarantined), expected, "{patterns:?} {cut:?}");
        // Healed: the next batch finishes the work, each poison message quarantined once.
        consume_batch(&pool, &tenant).await.expect("retry");
        assert_eq!(
            where_messages_are(&scratch.pool, &name).await,
            (vec![], POISON.to_vec())
        );
    }
    pool.close().await;
    scratch.drop_db().await;
}

/// Ids in the tenant's queue, the source ids still waiting in quarantine, and each
/// quarantine row's replay count (by source id), read directly.
async fn replay_state(pool: &PgPool, tenant: &str) -> (Vec<i64>, Vec<i64>, Vec<i32>) {
    let (queue, _) = where_messages_are(pool, tenant).await;
    let rows: Vec<(i64, bool, i32)> = sqlx::query_as(
        "SELECT source_id, replayed_at IS NULL, replay_count FROM public.contract_quarantine \
         WHERE tenant = $1 ORDER BY source_id",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await
    .expect("quarantine");
    let waiting = rows.iter().filter(|r| r.1).map(|r| r.0).collect();
    (queue, waiting, rows.iter().map(|r| r.2).collect())
}

/// A replay cut at each step of its transaction (after the message was put back, before
/// the commit was sent, after it was sent but before its answer): each message is in its queue, its row marked replayed, or
/// waiting in quarantine, never both or neither; the replay run again after the cut
/// finishes the work, each message put back once.
#[tokio::test]
async fn quarantine_replay_cut_keeps_each_message_in_exactly_one_place() {
    let (scratch, proxy) = quarantine_scratch("contract_fault_replay").await;
    // Whatever the payload: the poison is accepted now (a contract fixed since).
    let accepting = PayloadContract::<serde_json::Value>::named("job");
    let cuts: [(&[&str], Cut, bool); 3] = [
        (&["OVERRIDING SYSTEM VALUE"], Cut::BeforeAnswer, false),
        (
            &["replayed_at = now()", "COMMIT"],
            Cut::BeforeSending,
            false,
        ),
        (&["replayed_at = now()", "COMMIT"], Cut::BeforeAnswer, true),
    ];
    for (i, (patterns, cut, committed)) in cuts.into_iter().enumerate() {
        let name = format!("replay_{i}");
        let tenant = seed_jobs(&scratch.pool, &name).await;
        consume_batch(&scratch.pool, &tenant)
            .await
            .expect("quarantine the poison");
        let site = QueueQuarantine::new(tenant.clone(), QueueTable::new("jobs"));
        // Fresh connections: a statement an earlier case prepared would go without its text.
        let pool = pg_pool_through(&proxy, &scratch.url);
        let fault = proxy.arm(patterns, cut);
        let replayed = site.replay(&pool, &accepting).await;
        assert!(
            fault.fired() && replayed.is_err(),
            "{patterns:?} {cut:?}: {replayed:?}"
        );
        let (queue, waiting, counts) = replay_state(&scratch.pool, &name).await;
        for id in POISON {
            assert!(
                queue.contains(&id) != waiting.contains(&id),
                "{patterns:?} {cut:?}: message {id} in the queue {queue:?}, waiting {waiting:?}"
            );
        }
        let expected = if committed {
            (POISON.to_vec(), vec![], vec![1, 1])
        } else {
            (vec![], POISON.to_vec(), vec![0, 0])
        };
        assert_eq!((queue, waiting, counts), expected, "{patterns:?} {cut:?}");
        // Healed: the replay run again puts back what is still waiting, once.
        let again = site.replay(&pool, &accepting).await.expect("replay again");
        assert_eq!(again.replayed, if committed { 0 } else { 2 });
        assert_eq!(
            replay_state(&scratch.pool, &name).await,
            (POISON.to_vec(), vec![], vec![1, 1])
        );
        pool.close().await;
    }
    assert!(
        nothing_left_open(&scratch.pool).await,
        "a transaction left open"
    );
    scratch.drop_db().await;
}

// ---- the guard ----

fn guard_builder() -> contract_sqlx::guard::GuardBuilder<Postgres> {
    Guard::<Postgres>::builder()
        .contract::<Event>()
        .tenants(Tenants::schemas_like("tenant_%"))
}

async fn stored_pauses(pool: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as("SELECT tenant, reason FROM public.contract_pauses ORDER BY tenant")
        .fetch_all(pool)
        .await
        .expect("pauses")
}

#[tokio::test]
async fn guard_pass_cut_closes_the_gates_and_they_reopen_within_two_passes() {
    let scratch = PgScratch::create("contract_fault_pass").await;
    seed(&scratch.pool, &[FULL, FULL, FULL]).await;
    let proxy = proxy_to_pg().await;
    let pool = pg_pool_through(&proxy, &scratch.url);
    // Every pass a full check: an unchanged fleet's sweep would not introspect at all.
    let guard = guard_builder()
        .revalidate_every(Duration::from_secs(3600))
        .full_check_every(1)
        .start(&pool)
        .await
        .expect("start");
    assert_eq!(open_gates(&guard).len(), 3);

    // The pass's introspection (the one catalog query binding every tenant) is cut.
    let fault = proxy.arm(
        &["format_type", "tenant_1", "tenant_2", "tenant_3"],
        Cut::BeforeSending,
    );
    guard
        .revalidate()
        .await
        .expect("the pauses are still stored");
    assert!(fault.fired());
    assert!(all_paused_unreachable(&guard), "{:?}", guard.pauses());
    assert_eq!(
        guard.report().summary(),
        "0 compliant, 0 drifted, 3 unreachable of 3 tenants"
    );
    assert_eq!(stored_pauses(&scratch.pool).await.len(), 3);
    assert_eq!(passes_to_reopen(&guard, 2).await, Some(1));
    assert!(
        stored_pauses(&scratch.pool).await.is_empty(),
        "lifted pauses are removed"
    );

    // The whole server away: the pass fails (its pauses cannot be stored) and still closes.
    proxy.refuse(Refusal::Close).await;
    proxy.cut_all();
    assert!(
        guard.revalidate().await.is_err(),
        "the pause table is unreachable"
    );
    assert!(all_paused_unreachable(&guard), "{:?}", guard.pauses());
    assert!(guard.revalidate().await.is_err());
    assert!(
        all_paused_unreachable(&guard),
        "still closed on the next pass"
    );
    proxy.heal().await;
    assert_eq!(passes_to_reopen(&guard, 2).await, Some(1));
    assert!(stored_pauses(&scratch.pool).await.is_empty());
    pool.close().await;
    scratch.drop_db().await;
}

fn paused_for_drift(guard: &Guard<Postgres>, tenant: &str) -> bool {
    pause_reason(guard, tenant).is_some_and(|r| r.starts_with("drift"))
}

#[tokio::test]
async fn ddl_while_the_listener_is_cut_still_closes_the_gate() {
    let scratch = PgScratch::create("contract_fault_listen").await;
    seed(&scratch.pool, &[FULL, FULL, FULL, FULL]).await;
    install_ddl_trigger(&scratch.pool)
        .await
        .expect("trigger (tests run as superuser)");
    let proxy = proxy_to_pg().await;
    let pool = pg_pool_through(&proxy, &scratch.url);
    // Only the DDL signal can close a gate in time: passes run when it wakes them.
    let guard = guard_builder()
        .revalidate_every(Duration::from_secs(3600))
        .start(&pool)
        .await
        .expect("start");
    let listener = guard.listen_for_ddl().await.expect("listen");
    let task = guard.spawn();
    let bound = Duration::from_secs(30);
    exec(
        &scratch.pool,
        "ALTER TABLE tenant_1.events DROP COLUMN note",
    )
    .await;
    assert!(
        eventually(bound, || paused_for_drift(&guard, "tenant_1")).await,
        "the signal works before the cut"
    );

    // The listener's connection is cut and the server stays away a moment: DDL made now
    // cannot be notified.
    proxy.refuse(Refusal::Close).await;
    proxy.cut_all();
    exec(
        &scratch.pool,
        "ALTER TABLE tenant_2.events DROP COLUMN note",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.heal().await;
    assert!(
        eventually(bound, || paused_for_drift(&guard, "tenant_2")).await,
        "DDL made while the listener was away never closed the gate: {:?}",
        pause_reason(&guard, "tenant_2")
    );
    // The reconnected listener hears new DDL.
    exec(
        &scratch.pool,
        "ALTER TABLE tenant_3.events DROP COLUMN note",
    )
    .await;
    assert!(
        eventually(bound, || paused_for_drift(&guard, "tenant_3")).await,
        "DDL after the reconnection never closed the gate: {:?}",
        pause_reason(&guard, "tenant_3")
    );
    assert_eq!(open_gates(&guard), ["tenant_4"]);
    task.abort();
    listener.abort();
    pool.close().await;
    scratch.drop_db().await;
}

#[tokio::test]
async fn guard_start_with_the_server_unreachable_opens_no_gate() {
    let scratch = PgScratch::create("contract_fault_start").await;
    seed(&scratch.pool, &[FULL, FULL]).await;
    let proxy = proxy_to_pg().await;
    let pool = pg_pool_through(&proxy, &scratch.url);
    let listed = || Tenants::list(["tenant_1", "tenant_2"]);
    proxy.refuse(Refusal::Close).await;
    // Discovery needs the server: no guard.
    let error = guard_builder()
        .start(&pool)
        .await
        .expect_err("no discovery");
    assert!(
        error.to_string().contains("listing tenant schemas"),
        "{error}"
    );
    // A tenant list needs no server, the pause table does: no guard.
    let error = guard_builder()
        .tenants(listed())
        .start(&pool)
        .await
        .expect_err("no pause table");
    assert!(
        error
            .to_string()
            .contains("creating the control-plane tables failed; the server could not be reached"),
        "{error}"
    );
    // In-memory pauses: a guard whose every gate is closed as unreachable (refused as by
    // a stopped server this time).
    proxy.refuse(Refusal::Down).await;
    let guard = guard_builder()
        .tenants(listed())
        .in_memory_control()
        .start(&pool)
        .await
        .expect("a guard with every gate closed");
    assert!(all_paused_unreachable(&guard), "{:?}", guard.pauses());
    assert_eq!(
        guard.report().summary(),
        "0 compliant, 0 drifted, 2 unreachable of 2 tenants"
    );
    proxy.heal().await;
    assert_eq!(passes_to_reopen(&guard, 2).await, Some(1));
    pool.close().await;
    scratch.drop_db().await;
}

/// The server is away for 30 s while the guard's background passes run (every 500 ms):
/// every gate closes and stays closed, a tenant drifting meanwhile is remediated once
/// after healing, and every gate reopens within two passes.
#[tokio::test]
async fn thirty_second_outage_with_passes_running() {
    let passes = PassCounter::default();
    let _recorder = metrics::set_default_local_recorder(&passes);
    let scratch = PgScratch::create("contract_fault_outage").await;
    seed(&scratch.pool, &[DRIFTED, FULL, FULL]).await;
    let proxy = proxy_to_pg().await;
    let pool = pg_pool_through(&proxy, &scratch.url);
    let guard = guard_builder()
        .remediation(Remediation::SafeOnly)
        .revalidate_every(Duration::from_millis(500))
        .start(&pool)
        .await
        .expect("start");
    assert_eq!(
        open_gates(&guard).len(),
        3,
        "tenant_1 remediated at start-up"
    );
    let task = guard.spawn();
    let drift = exec(
        &scratch.pool,
        "ALTER TABLE tenant_2.events DROP COLUMN note",
    );
    ride_out_outage(&guard, &proxy, &passes, Duration::from_secs(30), drift).await;
    for (tenant, rows) in [("tenant_1", 1), ("tenant_2", 1), ("tenant_3", 0)] {
        assert_eq!(
            audit(&scratch.pool, tenant).await.len(),
            rows,
            "{tenant}: applied once"
        );
        assert_eq!(added_columns(&scratch.pool, tenant).await, 2);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stored_pauses(&scratch.pool).await.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored_pauses(&scratch.pool).await, Vec::new());
    task.abort();
    pool.close().await;
    scratch.drop_db().await;
}

/// With the pool's own `acquire_timeout` at sqlx's default (30 s), a pass would wait that
/// long for a refused server, and every gate would stay open meanwhile; the guard's
/// `check_timeout` bounds it: the gates close within a pass or two of it.
#[tokio::test]
async fn gates_close_within_the_check_timeout_while_connections_are_refused() {
    let scratch = PgScratch::create("contract_fault_check_timeout").await;
    seed(&scratch.pool, &[FULL, FULL]).await;
    let proxy = proxy_to_pg().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(30))
        .connect_lazy_with(support::proxy::pg_options(&proxy, &scratch.url));
    let guard = guard_builder()
        .in_memory_control()
        .revalidate_every(Duration::from_millis(200))
        .check_timeout(Duration::from_secs(1))
        .start(&pool)
        .await
        .expect("start");
    assert_eq!(open_gates(&guard).len(), 2);
    let task = guard.spawn();
    proxy.refuse(Refusal::Down).await;
    proxy.cut_all();
    // Well under the pool's 30 s acquire timeout (a bound on the outcome, not a timing).
    assert!(
        eventually(Duration::from_secs(15), || all_paused_unreachable(&guard)).await,
        "gates still open: {:?}",
        open_gates(&guard)
    );
    proxy.heal().await;
    assert!(
        eventually(Duration::from_secs(30), || open_gates(&guard).len() == 2).await,
        "gates did not reopen"
    );
    task.abort();
    pool.close().await;
    scratch.drop_db().await;
}
