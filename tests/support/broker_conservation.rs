//! The conservation scenario in front of a broker, shared by `rabbitmq_conservation` and
//! `nats_conservation` (included with `#[path]`, beside `support`, `conservation` and
//! `broker`): 20 tenants × 1,000 messages (2% poison), consumed by a consumer process that
//! is SIGKILLed mid-way and restarted, while a contracted column is dropped on 3 tenants
//! (the guard closes those gates only; their consumers stop reading; messages published
//! to them meanwhile stay in the broker, untouched, until SafeOnly re-adds the column).
//! At the end every valid message is written exactly once, every poison is dead-lettered
//! exactly once (one copy per message id) with a readable reason, and no message is left
//! in the broker or unacknowledged. What differs per broker is the [`Broker`] trait.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use contract_sqlx::broker::DeadLetter;
use contract_sqlx::guard::install_ddl_trigger;
use sqlx::{AssertSqlSafe, Connection, PgPool};
use tokio::time::{Instant, sleep};

use crate::conservation::{
    Column, Consumer, DDL_TENANTS, Expect, PER_TENANT, TENANTS, message, wait_for,
};
use crate::support::{self, PgScratch, exec};

/// The test fails, rather than hangs, after this.
pub const BOUND: Duration = Duration::from_secs(120);
/// Valid messages per tenant (2% are poison).
pub const VALID_PER_TENANT: i64 = PER_TENANT - PER_TENANT / 50;

/// What a paused tenant has in the broker: the messages waiting, and the broker's
/// counters that must not move while it is paused (deliveries, redeliveries, messages a
/// killed consumer held unacknowledged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub waiting: u64,
    pub untouched: String,
}

/// One broker under the scenario.
pub trait Broker {
    /// The consumer's name in the `conservation_consumer` binary (`rabbitmq`, `nats`), run
    /// with `<database url> <broker url> <prefix> <tenant,...> <execution log>`.
    fn consumer(&self) -> &'static str;
    /// The broker URL handed to the consumer.
    fn url(&self) -> String;
    /// The topology's prefix handed to the consumer.
    fn prefix(&self) -> String;
    /// Message `i` of tenant `t` and what its poison is expected to be.
    fn message(&self, t: usize, i: i64) -> (String, Expect) {
        message(t, i, Column::Text)
    }
    /// The id message `i` of `tenant` is published (and written) under.
    fn message_id(&self, tenant: &str, i: i64) -> String;
    /// Publishes `(id, payload)` to `tenant`, confirmed.
    fn publish(&self, tenant: &str, messages: &[(String, String)]) -> impl Future<Output = ()>;
    /// Each of `tenants`' messages in the broker.
    fn held(&self, tenants: &[String]) -> impl Future<Output = BTreeMap<String, Held>>;
    /// Messages still in the broker for each of `tenants`, delivered-and-unacknowledged
    /// ones included (a tenant missing counts as unknown).
    fn left(&self, tenants: &[String]) -> impl Future<Output = BTreeMap<String, u64>>;
    /// `tenant`'s dead letters, one per message id, and the extra copies.
    fn dead_letters(&self, tenant: &str) -> impl Future<Output = (Vec<DeadLetter>, u64)>;
    /// The routing key or subject a dead letter of `tenant` names as its origin.
    fn source(&self, tenant: &str) -> String;
}

pub fn tenant(t: usize) -> String {
    format!("tenant_{t:02}")
}

fn messages<B: Broker>(
    broker: &B,
    t: usize,
    ids: std::ops::RangeInclusive<i64>,
) -> Vec<(String, String)> {
    ids.map(|i| (broker.message_id(&tenant(t), i), broker.message(t, i).0))
        .collect()
}

async fn processed(pool: &PgPool, tenants: impl Iterator<Item = usize>) -> i64 {
    let counts: Vec<String> = tenants
        .map(|t| format!("(SELECT count(*) FROM {}.processed)", tenant(t)))
        .collect();
    sqlx::query_scalar(AssertSqlSafe(format!("SELECT {}", counts.join(" + "))))
        .fetch_one(pool)
        .await
        .expect("count processed")
}

async fn paused(pool: &PgPool) -> BTreeSet<String> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('public.contract_pauses') IS NOT NULL")
            .fetch_one(pool)
            .await
            .expect("catalog");
    if !exists {
        return BTreeSet::new();
    }
    sqlx::query_scalar("SELECT DISTINCT tenant FROM public.contract_pauses")
        .fetch_all(pool)
        .await
        .expect("pauses")
        .into_iter()
        .collect()
}

fn start<B: Broker>(broker: &B, db_url: &str, log: &Path, run: &str) -> Consumer {
    let tenants: Vec<String> = (1..=TENANTS).map(tenant).collect();
    let args = [
        broker.consumer().to_owned(),
        db_url.to_owned(),
        broker.url(),
        broker.prefix(),
        tenants.join(","),
        log.display().to_string(),
    ];
    Consumer::start(env!("CARGO_BIN_EXE_conservation_consumer"), &args, run)
}

/// The execution log's "backlog cleared" sentence of each of `tenants`, if there.
fn backlog_cleared(log: &Path, tenants: &BTreeSet<String>) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    tenants
        .iter()
        .filter_map(|t| {
            text.split('"')
                .find(|l| {
                    l.starts_with(&format!("{t}: ")) && l.contains("waiting messages cleared")
                })
                .map(str::to_owned)
        })
        .collect()
}

fn no_errors() -> impl FnMut() -> std::future::Ready<Vec<String>> {
    || std::future::ready(Vec::new())
}

/// Runs the scenario against `broker`, whose topology is already declared for the 20
/// tenants; `name` prefixes the scratch database and the consumer logs.
pub async fn every_message_exactly_once<B: Broker>(broker: &B, name: &str) {
    let started = Instant::now();
    let deadline = started + BOUND;
    let db = PgScratch::create(name).await;
    let pool = &db.pool;
    for t in 1..=TENANTS {
        exec(
            pool,
            format!(
                "CREATE SCHEMA {s}; CREATE TABLE {s}.processed (message_id text PRIMARY KEY,
                    user_id bigint NOT NULL, kind text NOT NULL, note text DEFAULT '')",
                s = tenant(t)
            ),
        )
        .await;
    }
    install_ddl_trigger(pool).await.expect("event trigger");
    let names: Vec<String> = (1..=TENANTS).map(tenant).collect();
    // The drifting tenants get their second half only once their gates are closed.
    for t in 1..=TENANTS {
        let last = if DDL_TENANTS.contains(&t) {
            PER_TENANT / 2
        } else {
            PER_TENANT
        };
        broker
            .publish(&tenant(t), &messages(broker, t, 1..=last))
            .await;
    }

    // The guards' execution log: how the resumed tenants' backlogs drained.
    let dir = support::TempDir::new(&format!("{name}_log"));
    let log = dir.0.join("execution.jsonl");

    // 1. Consume, then SIGKILL the consumer mid-way: its unacknowledged batches return.
    let mut first = start(broker, &db.url, &log, &format!("{name}_first"));
    let total_valid = VALID_PER_TENANT * i64::try_from(TENANTS).unwrap_or(0);
    let fifth = || async { processed(pool, 1..=TENANTS).await >= total_valid / 5 };
    wait_for(deadline, "20% handled", &mut first, fifth, no_errors()).await;
    first.assert_running("the kill");
    first.child.kill().expect("SIGKILL");
    first.child.wait().expect("reap");
    let at_kill = processed(pool, 1..=TENANTS).await;

    // 2. Restart; another replica "remediating" the 3 tenants (their advisory locks)
    //    keeps the repair waiting while their column is dropped.
    let mut second = start(broker, &db.url, &log, &format!("{name}_second"));
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
    exec(pool, format!("BEGIN; {ddl} COMMIT")).await;
    let ddl_names: BTreeSet<String> = DDL_TENANTS.iter().map(|t| tenant(*t)).collect();
    let closed = || async { paused(pool).await == ddl_names };
    wait_for(
        deadline,
        "the 3 gates to close",
        &mut second,
        closed,
        no_errors(),
    )
    .await;
    for t in DDL_TENANTS {
        let rest = messages(broker, t, PER_TENANT / 2 + 1..=PER_TENANT);
        broker.publish(&tenant(t), &rest).await;
    }
    // Paused: their consumers read nothing; the broker holds (at least) the second half,
    // untouched.
    let ddl_list: Vec<String> = ddl_names.iter().cloned().collect();
    sleep(Duration::from_millis(300)).await;
    let held = broker.held(&ddl_list).await;
    let handled_then = processed(pool, DDL_TENANTS.into_iter()).await;
    assert!(
        held.len() == ddl_list.len() && held.values().all(|h| h.waiting >= 500),
        "paused with messages waiting: {held:?}"
    );
    sleep(Duration::from_millis(700)).await;
    assert_eq!(broker.held(&ddl_list).await, held, "untouched while paused");
    assert_eq!(processed(pool, DDL_TENANTS.into_iter()).await, handled_then);
    second.assert_running("the repair");
    replica.close().await.expect("release the advisory locks");

    // 3. Everything handled: every valid message written, nothing left in the broker.
    let all = || async { processed(pool, 1..=TENANTS).await == total_valid };
    wait_for(
        deadline,
        "every valid message",
        &mut second,
        all,
        no_errors(),
    )
    .await;
    let empty = || async {
        let left = broker.left(&names).await;
        left.len() == TENANTS && left.values().all(|n| *n == 0)
    };
    wait_for(deadline, "nothing left", &mut second, empty, no_errors()).await;
    // The backlog monitor followed each resumed tenant's backlog (what was still waiting
    // when its gate reopened) until it was all cleared.
    let cleared_all = || async { backlog_cleared(&log, &ddl_names).len() == ddl_names.len() };
    wait_for(
        deadline,
        "the backlogs cleared",
        &mut second,
        cleared_all,
        no_errors(),
    )
    .await;
    for line in backlog_cleared(&log, &ddl_names) {
        let of: Vec<u64> = line.split(' ').filter_map(|w| w.parse().ok()).collect();
        assert!(of.len() >= 2 && of[0] == of[1] && of[0] > 0, "{line}");
    }
    second.child.kill().expect("SIGKILL");
    second.child.wait().expect("reap");
    // Nothing was left unacknowledged: after the kill, nothing came back.
    sleep(Duration::from_millis(500)).await;
    let left = broker.left(&names).await;
    assert!(
        left.values().all(|n| *n == 0),
        "returned after the kill: {left:?}"
    );

    let mut extra_copies = 0;
    for t in 1..=TENANTS {
        check_tenant(broker, pool, t, &mut extra_copies).await;
    }
    let paused_left = paused(pool).await;
    assert!(paused_left.is_empty(), "still paused: {paused_left:?}");
    let repaired: BTreeSet<String> =
        sqlx::query_scalar("SELECT DISTINCT tenant FROM public.contract_audit")
            .fetch_all(pool)
            .await
            .expect("audit")
            .into_iter()
            .collect();
    assert_eq!(
        repaired, ddl_names,
        "SafeOnly re-added the column there only"
    );
    println!(
        "{} messages in {:?}; killed at {at_kill} handled; dead-letter copies beyond one per id: {extra_copies}",
        PER_TENANT * i64::try_from(TENANTS).unwrap_or(0),
        started.elapsed()
    );
    db.drop_db().await;
}

/// Tenant `t`: every valid message written once, every poison dead-lettered once with a
/// readable reason.
async fn check_tenant<B: Broker>(broker: &B, pool: &PgPool, t: usize, extra_copies: &mut u64) {
    let s = tenant(t);
    let ids: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT message_id FROM {s}.processed ORDER BY message_id"
    )))
    .fetch_all(pool)
    .await
    .expect("processed");
    let expected: BTreeSet<String> = (1..=PER_TENANT)
        .filter(|i| broker.message(t, *i).1.is_none())
        .map(|i| broker.message_id(&s, i))
        .collect();
    assert_eq!(
        ids.into_iter().collect::<BTreeSet<_>>(),
        expected,
        "{s}: handled"
    );
    let (letters, duplicates) = broker.dead_letters(&s).await;
    *extra_copies += duplicates;
    let got: BTreeMap<String, String> = letters
        .iter()
        .map(|l| (l.message_id.clone(), l.reason.clone()))
        .collect();
    let want: BTreeMap<String, String> = (1..=PER_TENANT)
        .filter_map(|i| {
            let (_, expect) = broker.message(t, i);
            expect.map(|(reason, _)| (broker.message_id(&s, i), reason.to_owned()))
        })
        .collect();
    assert_eq!(got, want, "{s}: dead-lettered once each");
    for letter in &letters {
        assert!(
            letter.error.len() > 10 && !letter.error.contains("Error("),
            "{s}: unreadable reason {}",
            letter.error
        );
        assert_eq!(
            (letter.tenant.as_str(), letter.contract.as_str()),
            (s.as_str(), "conservation-message")
        );
        assert_eq!(letter.original_routing_key, broker.source(&s));
    }
}
