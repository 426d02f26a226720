//! Conservation in front of RabbitMQ: 20 tenant queues × 1,000 messages (2% poison),
//! consumed by the `rabbitmq_conservation_consumer` process, which is SIGKILLed mid-way
//! and restarted, while a contracted column is dropped on 3 tenants (the guard closes
//! those gates only; their consumers are cancelled; messages published to them meanwhile
//! stay in their queues, untouched, until SafeOnly re-adds the column). At the end every
//! valid message is written exactly once, every poison is dead-lettered exactly once (one
//! copy per message id) with a readable reason, and no message is left in a queue or
//! unacknowledged. A second test shows a dead letter published twice (a consumer killed
//! between the confirm and the ack) is counted and replayed once.

#[path = "support/mod.rs"]
mod support;

#[path = "support/conservation.rs"]
mod conservation;

#[path = "support/broker.rs"]
mod broker;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use broker::{RabbitScratch, publish, rabbit};
use conservation::{Column, Consumer, DDL_TENANTS, PER_TENANT, TENANTS, message, wait_for};
use contract_sqlx::broker::rabbitmq::{self, DeadLetters, RabbitBacklog};
use contract_sqlx::guard::install_ddl_trigger;
use contract_sqlx::payload::PayloadContract;
use contract_sqlx::quarantine::{QuarantineRecord, QuarantineSink};
use sqlx::{AssertSqlSafe, Connection, PgPool};
use support::{PgScratch, exec};
use tokio::time::{Instant, sleep};

const BOUND: Duration = Duration::from_secs(90);
const VALID_PER_TENANT: i64 = PER_TENANT - PER_TENANT / 50;

fn tenant(t: usize) -> String {
    format!("tenant_{t:02}")
}

fn messages(t: usize, ids: std::ops::RangeInclusive<i64>) -> Vec<(String, String)> {
    ids.map(|i| (format!("m{i}"), message(t, i, Column::Text).0))
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

fn start(db_url: &str, prefix: &str, log: &std::path::Path, run: &str) -> Consumer {
    let tenants: Vec<String> = (1..=TENANTS).map(tenant).collect();
    let args = [
        db_url.to_owned(),
        broker::amqp_url(),
        prefix.to_owned(),
        tenants.join(","),
        log.display().to_string(),
    ];
    Consumer::start(
        env!("CARGO_BIN_EXE_rabbitmq_conservation_consumer"),
        &args,
        run,
    )
}

/// The execution log's "backlog cleared" sentence of each of `tenants`, if there.
fn backlog_cleared(log: &std::path::Path, tenants: &BTreeSet<String>) -> Vec<String> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_is_handled_or_dead_lettered_exactly_once_through_drift_and_kill() {
    let started = Instant::now();
    let deadline = started + BOUND;
    let db = PgScratch::create("contract_rabbit").await;
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
    let connection = rabbit().await;
    let names: Vec<String> = (1..=TENANTS).map(tenant).collect();
    let scratch = RabbitScratch::declare(&connection, "contract_rabbit", names.clone()).await;
    let topology = scratch.topology.clone();
    let prefix = topology.queue("").trim_end_matches('.').to_owned();
    // The drifting tenants get their second half only once their gates are closed.
    for t in 1..=TENANTS {
        let last = if DDL_TENANTS.contains(&t) {
            PER_TENANT / 2
        } else {
            PER_TENANT
        };
        publish(
            &connection,
            &topology.queue(&tenant(t)),
            &messages(t, 1..=last),
        )
        .await;
    }

    // The guards' execution log: how the resumed tenants' backlogs drained.
    let dir = support::TempDir::new("contract_rabbit_log");
    let log = dir.0.join("execution.jsonl");

    // 1. Consume, then SIGKILL the consumer mid-way: its unacknowledged batches return.
    let mut first = start(&db.url, &prefix, &log, "rabbit_first");
    let total_valid = VALID_PER_TENANT * i64::try_from(TENANTS).unwrap_or(0);
    let fifth = || async { processed(pool, 1..=TENANTS).await >= total_valid / 5 };
    wait_for(deadline, "20% handled", &mut first, fifth, no_errors()).await;
    first.assert_running("the kill");
    first.child.kill().expect("SIGKILL");
    first.child.wait().expect("reap");
    let at_kill = processed(pool, 1..=TENANTS).await;

    // 2. Restart; another replica "remediating" the 3 tenants (their advisory locks)
    //    keeps the repair waiting while their column is dropped.
    let mut second = start(&db.url, &prefix, &log, "rabbit_second");
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
        let rest = messages(t, PER_TENANT / 2 + 1..=PER_TENANT);
        publish(&connection, &topology.queue(&tenant(t)), &rest).await;
    }
    // Paused: the consumers are cancelled, the queues hold (at least) the second half,
    // and nothing is taken from them.
    let backlog = RabbitBacklog::new(Arc::clone(&connection), topology.clone());
    let ddl_list: Vec<String> = ddl_names.iter().cloned().collect();
    sleep(Duration::from_millis(300)).await;
    let held = backlog.depths(&ddl_list).await.expect("depths");
    let handled_then = processed(pool, DDL_TENANTS.into_iter()).await;
    assert!(
        held.values().all(|n| *n >= 500),
        "paused with messages waiting: {held:?}"
    );
    sleep(Duration::from_millis(700)).await;
    assert_eq!(
        backlog.depths(&ddl_list).await.expect("depths"),
        held,
        "untouched while paused"
    );
    assert_eq!(processed(pool, DDL_TENANTS.into_iter()).await, handled_then);
    second.assert_running("the repair");
    replica.close().await.expect("release the advisory locks");

    // 3. Everything handled: every valid message written, every queue empty.
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
        let depths = backlog.depths(&names).await.expect("depths");
        depths.len() == TENANTS && depths.values().all(|n| *n == 0)
    };
    wait_for(
        deadline,
        "every queue empty",
        &mut second,
        empty,
        no_errors(),
    )
    .await;
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
    // Nothing was left unacknowledged: after the kill, nothing came back to a queue.
    sleep(Duration::from_millis(500)).await;
    let depths = backlog.depths(&names).await.expect("depths");
    assert!(
        depths.values().all(|n| *n == 0),
        "returned after the kill: {depths:?}"
    );

    let mut extra_copies = 0;
    for t in 1..=TENANTS {
        let s = tenant(t);
        let ids: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT message_id FROM {s}.processed ORDER BY message_id"
        )))
        .fetch_all(pool)
        .await
        .expect("processed");
        let expected: BTreeSet<String> = (1..=PER_TENANT)
            .filter(|i| message(t, *i, Column::Text).1.is_none())
            .map(|i| format!("m{i}"))
            .collect();
        assert_eq!(
            ids.into_iter().collect::<BTreeSet<_>>(),
            expected,
            "{s}: handled"
        );
        let (letters, duplicates) = rabbitmq::dead_letters(&connection, &topology, &s)
            .await
            .expect("dead letters");
        extra_copies += duplicates;
        let got: BTreeMap<String, (String, Option<String>)> = letters
            .iter()
            .map(|l| {
                (
                    l.message_id.clone(),
                    (l.reason.clone(), l.field_path.clone()),
                )
            })
            .collect();
        let want: BTreeMap<String, (String, Option<String>)> = (1..=PER_TENANT)
            .filter_map(|i| {
                let (_, expect) = message(t, i, Column::Text);
                expect.map(|(reason, path)| {
                    (
                        format!("m{i}"),
                        (reason.to_owned(), path.map(str::to_owned)),
                    )
                })
            })
            .collect();
        let reasons = |m: &BTreeMap<String, (String, Option<String>)>| -> BTreeMap<String, String> {
            m.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect()
        };
        assert_eq!(
            reasons(&got),
            reasons(&want),
            "{s}: dead-lettered once each"
        );
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
            assert_eq!(letter.original_routing_key, topology.queue(&s));
        }
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
    drop(scratch);
    db.drop_db().await;
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Strict {
    user_id: i64,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Lenient {
    user_id: serde_json::Value,
}

/// The crash window between a dead-letter publish's confirm and the ack: the message is
/// dead-lettered a second time. Readers count one message per id, and a replay (once the
/// contract accepts it) re-publishes it once and removes both copies, only after the
/// re-publish is confirmed; a message still rejected stays.
#[tokio::test]
async fn a_dead_letter_published_twice_is_counted_and_replayed_once() {
    let connection = rabbit().await;
    let scratch =
        RabbitScratch::declare(&connection, "contract_dlq", vec!["tenant_a".into()]).await;
    let topology = scratch.topology.clone();
    let sink = DeadLetters::new(&connection, topology.clone())
        .await
        .expect("sink");
    let strict = PayloadContract::<Strict>::named("strict");
    let record = |id: &str, raw: &[u8]| {
        let rejection = strict.check(raw).err().expect("poison");
        QuarantineRecord::new(
            "tenant_a",
            topology.queue("tenant_a"),
            id,
            &strict,
            &rejection,
            raw,
        )
    };
    let retryable = record("m1", br#"{"user_id": "7"}"#);
    let broken = record("m2", b"{not json");
    assert_eq!(
        sink.put(std::slice::from_ref(&retryable))
            .await
            .expect("first copy"),
        1
    );
    // The consumer died before its ack: the redelivered message is dead-lettered again.
    sink.put(&[retryable.clone(), broken])
        .await
        .expect("second copy");
    let (letters, duplicates) = rabbitmq::dead_letters(&connection, &topology, "tenant_a")
        .await
        .expect("read");
    assert_eq!((letters.len(), duplicates), (2, 1));
    assert_eq!(letters[0].reason, "contract_mismatch");
    assert_eq!(letters[0].field_path.as_deref(), Some("user_id"));
    // Replay with a contract that accepts the first one now.
    let lenient = PayloadContract::<Lenient>::named("lenient");
    let report = rabbitmq::replay(&connection, &topology, "tenant_a", &lenient)
        .await
        .expect("replay");
    assert_eq!(
        (
            report.replayed,
            report.duplicates_removed,
            report.still_rejected.len()
        ),
        (1, 1, 1)
    );
    let backlog = RabbitBacklog::new(Arc::clone(&connection), topology.clone());
    let depth = backlog
        .depths(&["tenant_a".to_owned()])
        .await
        .expect("depth");
    assert_eq!(depth.get("tenant_a"), Some(&1), "re-published once");
    let (left, duplicates) = rabbitmq::dead_letters(&connection, &topology, "tenant_a")
        .await
        .expect("read");
    assert_eq!((left.len(), duplicates), (1, 0));
    assert_eq!(
        (left[0].message_id.as_str(), left[0].reason.as_str()),
        ("m2", "invalid_json")
    );
    drop(scratch);
}
