//! Conservation under drift and crashes: 20 tenants × 1,000 messages (2% poison) consumed
//! by the `conservation_consumer pg` process, which is SIGKILLed mid-way and restarted, while
//! a contracted column is dropped on 3 tenants (the guard closes those gates only, SafeOnly
//! re-adds the column, the gates reopen). Four tenants keep their payloads in a `json`
//! column, where a lone surrogate escape (which the quarantine's `jsonb` copy refuses) is
//! among the poison; after the kill the producer reuses the ids of the poison quarantined
//! so far for new poison. At the end every message is either processed or quarantined,
//! exactly once, with its own bytes and the right reason (both messages of a reused id
//! are kept); the 17 healthy tenants were never paused.

use crate::support;

#[path = "support/conservation.rs"]
mod conservation;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use conservation::{
    BATCH, BOUND, Column, Consumer, DDL_TENANTS, JSON_TENANTS, PER_TENANT, Processed, Stored,
    TENANTS, TOTAL, check_tenant, message, reused, wait_for,
};
use contract_sqlx::guard::install_ddl_trigger;
use sqlx::{AssertSqlSafe, Connection, PgPool};
use support::{PgScratch, exec};
use tokio::time::{Instant, sleep};

fn tenant(t: usize) -> String {
    format!("tenant_{t:02}")
}

fn column(t: usize) -> Column {
    if JSON_TENANTS.contains(&t) {
        Column::Json
    } else {
        Column::Text
    }
}

fn payload_type(t: usize) -> &'static str {
    match column(t) {
        Column::Text => "text",
        _ => "json",
    }
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
        let ty = payload_type(t);
        exec(
            pool,
            &format!(
                "CREATE SCHEMA {s};
                 CREATE TABLE {s}.queue (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    payload {ty} NOT NULL, enqueued_at timestamptz NOT NULL DEFAULT now(),
                    attempts int NOT NULL DEFAULT 0);
                 CREATE TABLE {s}.processed (source_id bigint NOT NULL UNIQUE, user_id bigint NOT NULL,
                    kind text NOT NULL, note text DEFAULT '', processed_at timestamptz NOT NULL DEFAULT now())"
            ),
        )
        .await;
        let (ids, payloads): (Vec<i64>, Vec<String>) = (1..=PER_TENANT)
            .map(|i| (i, message(t, i, column(t)).0))
            .unzip();
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {s}.queue (id, payload) OVERRIDING SYSTEM VALUE
             SELECT i, p::{ty} FROM unnest($1::int8[], $2::text[]) AS m(i, p)"
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

/// Enqueues, for every poison quarantined so far, a new poison under the same id (the
/// quarantined one left the queue, so its id is free). Returns tenant → reused ids.
async fn enqueue_reused(pool: &PgPool) -> BTreeMap<String, Vec<i64>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT tenant, source_id FROM public.contract_quarantine ORDER BY tenant, source_id",
    )
    .fetch_all(pool)
    .await
    .expect("quarantined so far");
    let mut reused_ids: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (s, id) in rows {
        let t: usize = s["tenant_".len()..].parse().expect("tenant number");
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {s}.queue (id, payload) OVERRIDING SYSTEM VALUE VALUES ($1, $2::{})",
            payload_type(t)
        )))
        .bind(id)
        .bind(reused(id).0)
        .execute(pool)
        .await
        .expect("enqueue under a reused id");
        reused_ids.entry(s).or_default().push(id);
    }
    reused_ids
}

/// Batches rolled back by the DDL race (`42703` on a DDL'd tenant) are expected; any
/// other rolled-back batch is reported.
async fn unexpected_errors(pool: &PgPool) -> Vec<String> {
    let names: Vec<String> = DDL_TENANTS.iter().map(|t| tenant(*t)).collect();
    sqlx::query_scalar(
        "SELECT tenant || ' (' || COALESCE(code, '-') || '): ' || message
         FROM public.consumer_errors
         WHERE code IS DISTINCT FROM '42703' OR NOT tenant = ANY($1) LIMIT 5",
    )
    .bind(&names)
    .fetch_all(pool)
    .await
    .expect("consumer_errors")
}

fn start_consumer(url: &str, run: &str) -> Consumer {
    let tenants: Vec<String> = (1..=TENANTS).map(tenant).collect();
    let json: Vec<String> = JSON_TENANTS.iter().map(|t| tenant(*t)).collect();
    let args = [
        "pg".to_owned(),
        url.to_owned(),
        tenants.join(","),
        BATCH.into(),
        "2".into(),
        json.join(","),
    ];
    Consumer::start(env!("CARGO_BIN_EXE_conservation_consumer"), &args, run)
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
    let mut first = start_consumer(&db.url, "first");
    let unexpected = || unexpected_errors(pool);
    let fifth = || async { done(pool).await >= TOTAL / 5 };
    wait_for(deadline, "20% done", &mut first, fifth, unexpected).await;
    first.assert_running("the kill");
    first.child.kill().expect("SIGKILL");
    first.child.wait().expect("reap");
    let at_kill = done(pool).await;
    assert!(at_kill < TOTAL, "the kill must come mid-way ({at_kill})");
    // The producer reuses the ids of the poison quarantined so far for new poison.
    let reused_ids = enqueue_reused(pool).await;
    assert!(
        reused_ids.values().map(Vec::len).sum::<usize>() > 0,
        "some poison was quarantined before the kill"
    );

    // 2. Restart; while it consumes, drop `processed.note` on 3 tenants in one DDL
    //    transaction. Another replica "remediating" them (holding the per-tenant advisory
    //    lock the guard takes) keeps the repair waiting, so the pause lasts.
    let mut second = start_consumer(&db.url, "second");
    let two_fifths = || async { done(pool).await >= TOTAL * 2 / 5 };
    wait_for(deadline, "40% done", &mut second, two_fifths, unexpected).await;
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
    wait_for(
        soon,
        "the 3 gates to close",
        &mut second,
        logged,
        unexpected,
    )
    .await;
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
    let status = second.wait_for_exit(deadline, unexpected).await;
    assert!(status.success(), "consumer: {status}\n{}", second.output());
    let elapsed = started.elapsed();

    // Every message exactly once: each valid one processed once, each poison (the
    // reused-id ones included) quarantined once with its own bytes, nothing else.
    for t in 1..=TENANTS {
        let s = tenant(t);
        let processed: Vec<Processed> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT source_id, user_id, kind, note FROM {s}.processed ORDER BY source_id"
        )))
        .fetch_all(pool)
        .await
        .expect("processed");
        let quarantined: Vec<Stored> = sqlx::query_as(
            "SELECT source_id, payload_raw, reason, field_path, attempts
             FROM public.contract_quarantine
             WHERE tenant = $1 AND queue = 'queue' ORDER BY source_id, id",
        )
        .bind(&s)
        .fetch_all(pool)
        .await
        .expect("quarantine");
        let reused_here = reused_ids.get(&s).map_or(&[][..], Vec::as_slice);
        check_tenant(&s, t, column(t), reused_here, &processed, &quarantined);
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
    let reused_total: usize = reused_ids.values().map(Vec::len).sum();
    println!(
        "{TOTAL} messages + {reused_total} under reused ids in {elapsed:?}; killed at {at_kill}, DDL at {dropped_at}; rolled-back batches: {by_code:?}"
    );
    db.drop_db().await;
}
