//! The NATS consumer's message ids and dead letters: a work stream deleted and created
//! again starts its sequence at 1 again, and a message published without an id must not
//! take the id of a message written before; a poison message close to the server's
//! `max_payload` is still dead-lettered (its own headers left out); a batch whose handler
//! fails and is retried dead-letters its poison once.

use crate::support;

use crate::broker;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker::{NatsScratch, jetstream};
use contract_sqlx::broker::nats::{self, Consumer, DeadLetters};
use contract_sqlx::broker::{Accepted, Handler, HandlerError};
use contract_sqlx::payload::PayloadContract;
use contract_sqlx::quarantine::{QuarantineRecord, QuarantineSink, SinkError};
use contract_sqlx::{Contract, Guard, Tenants};
use sqlx::Postgres;

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "events")]
#[allow(dead_code)]
struct Event {
    id: i64,
}

/// Records the id of every message it is handed.
#[derive(Default)]
struct Ids(Mutex<Vec<String>>);

impl Handler<serde_json::Value> for Ids {
    fn handle<'a>(
        &'a self,
        _tenant: &'a str,
        batch: &'a [Accepted<serde_json::Value>],
    ) -> futures_util::future::BoxFuture<'a, Result<(), HandlerError>> {
        let mut ids = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ids.extend(batch.iter().map(|a| a.message_id.clone()));
        Box::pin(async { Ok(()) })
    }
}

impl Ids {
    fn len(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_stream_s_messages_get_ids_of_their_own() {
    let db = support::PgScratch::create("contract_nats_ids").await;
    support::exec(
        &db.pool,
        "CREATE SCHEMA tenant_a; CREATE TABLE tenant_a.events (id int8 NOT NULL)",
    )
    .await;
    let guard = Guard::<Postgres>::builder()
        .contract::<Event>()
        .tenants(Tenants::schemas_like("tenant_%"))
        .start(&db.pool)
        .await
        .expect("guard");
    let jetstream = jetstream().await;
    let tenants = vec!["tenant_a".to_owned()];
    let scratch = NatsScratch::declare(
        &jetstream,
        "contract_nats_ids",
        &tenants,
        Duration::from_secs(5),
    )
    .await;
    let topology = scratch.topology.clone();
    let ids = Arc::new(Ids::default());

    for round in 1..=2 {
        if round == 2 {
            // Deleted and created again: the sequence starts at 1 again.
            topology
                .delete(&jetstream)
                .await
                .expect("delete the streams");
            topology
                .declare(&jetstream, &tenants)
                .await
                .expect("declare the streams again");
        }
        for n in 1..=2 {
            // No id header: the consumer names the message itself.
            jetstream
                .publish(
                    topology.subject("tenant_a"),
                    format!("{{\"n\": {n}}}").into(),
                )
                .await
                .expect("publish")
                .await
                .expect("publish ack");
        }
        let consumer = Consumer::new(
            Arc::new(guard.clone()),
            topology.clone(),
            PayloadContract::<serde_json::Value>::named("value"),
            ids.clone(),
            Arc::new(DeadLetters::new(&jetstream, topology.clone())),
        );
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let run = {
            let jetstream = jetstream.clone();
            tokio::spawn(async move { consumer.run(&jetstream, "tenant_a", stopped).await })
        };
        for _ in 0..100 {
            if ids.len() >= 2 * round {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.send(true).expect("stop");
        run.await.expect("join").expect("consumer");
    }
    let mut seen = ids
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    assert_eq!(seen.len(), 4, "{seen:?}");
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen.len(),
        4,
        "a message took the id of an earlier one: {seen:?}"
    );
    drop(scratch);
    drop(guard);
    db.drop_db().await;
}

/// Poison within 700 and 320 bytes of `max_payload`: dead-lettered without the message's
/// own headers, and with only the essential ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_close_to_max_payload_is_still_dead_lettered() {
    let db = support::PgScratch::create("contract_nats_big").await;
    support::exec(
        &db.pool,
        "CREATE SCHEMA tenant_a; CREATE TABLE tenant_a.events (id int8 NOT NULL)",
    )
    .await;
    let guard = Guard::<Postgres>::builder()
        .contract::<Event>()
        .tenants(Tenants::schemas_like("tenant_%"))
        .start(&db.pool)
        .await
        .expect("guard");
    let jetstream = jetstream().await;
    let tenants = vec!["tenant_a".to_owned()];
    let scratch = NatsScratch::declare(
        &jetstream,
        "contract_nats_big",
        &tenants,
        Duration::from_secs(5),
    )
    .await;
    let topology = scratch.topology.clone();
    let max_payload = jetstream.client().max_payload();
    // Not JSON, 700 bytes under the limit, with a header of its own: published as is, but
    // with the dead-letter headers added it would not fit.
    let raw = "x".repeat(max_payload - 700);
    let mut own = nats::async_nats::HeaderMap::new();
    own.insert("x-origin", "y".repeat(600).as_str());
    jetstream
        .publish_with_headers(topology.subject("tenant_a"), own, raw.clone().into())
        .await
        .expect("publish")
        .await
        .expect("publish ack");
    // 320 bytes under the limit: only the headers a dead letter cannot do without fit.
    let tight = "x".repeat(max_payload - 320);
    jetstream
        .publish(topology.subject("tenant_a"), tight.clone().into())
        .await
        .expect("publish")
        .await
        .expect("publish ack");
    let consumer = Consumer::new(
        Arc::new(guard.clone()),
        topology.clone(),
        PayloadContract::<serde_json::Value>::named("value"),
        Arc::new(Ids::default()),
        Arc::new(DeadLetters::new(&jetstream, topology.clone())),
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = {
        let jetstream = jetstream.clone();
        tokio::spawn(async move { consumer.run(&jetstream, "tenant_a", stopped).await })
    };
    let mut letters = Vec::new();
    for _ in 0..60 {
        letters = nats::dead_letters(&jetstream, &topology, "tenant_a")
            .await
            .expect("dead letters")
            .0;
        if letters.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(true).expect("stop");
    run.await.expect("join").expect("consumer");
    assert_eq!(letters.len(), 2, "a poison message was not dead-lettered");
    let mut sizes: Vec<usize> = letters.iter().map(|l| l.payload.len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [raw.len(), tight.len()]);
    assert!(
        letters
            .iter()
            .all(|l| l.reason == "invalid_json" && l.tenant == "tenant_a")
    );
    drop(scratch);
    drop(guard);
    db.drop_db().await;
}

/// The dead-letter sink, counting the records it is asked to store.
struct Counting {
    inner: DeadLetters,
    records: AtomicU64,
}

impl QuarantineSink for Counting {
    fn put<'a>(
        &'a self,
        records: &'a [QuarantineRecord],
    ) -> futures_util::future::BoxFuture<'a, Result<u64, SinkError>> {
        self.records
            .fetch_add(records.len() as u64, Ordering::SeqCst);
        self.inner.put(records)
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// Fails its first `failures` batches, then counts the messages it was handed.
struct FailingFirst {
    failures: u64,
    calls: AtomicU64,
    handled: AtomicU64,
}

impl Handler<serde_json::Value> for FailingFirst {
    fn handle<'a>(
        &'a self,
        _tenant: &'a str,
        batch: &'a [Accepted<serde_json::Value>],
    ) -> futures_util::future::BoxFuture<'a, Result<(), HandlerError>> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.failures {
            return Box::pin(async { Err("the database is down (test)".into()) });
        }
        self.handled.fetch_add(batch.len() as u64, Ordering::SeqCst);
        Box::pin(async { Ok(()) })
    }
}

/// The dead-letter stream drops a second copy within its duplicate window, but past it
/// every retry of a failed batch stored the poison again: the poison is settled before
/// the handler runs, so it is dead-lettered once whatever the retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_batch_dead_letters_its_poison_once() {
    let db = support::PgScratch::create("contract_nats_retry").await;
    support::exec(
        &db.pool,
        "CREATE SCHEMA tenant_a; CREATE TABLE tenant_a.events (id int8 NOT NULL)",
    )
    .await;
    let guard = Guard::<Postgres>::builder()
        .contract::<Event>()
        .tenants(Tenants::schemas_like("tenant_%"))
        .start(&db.pool)
        .await
        .expect("guard");
    let jetstream = jetstream().await;
    let tenants = vec!["tenant_a".to_owned()];
    let scratch = NatsScratch::declare(
        &jetstream,
        "contract_nats_retry",
        &tenants,
        Duration::from_secs(5),
    )
    .await;
    let topology = scratch.topology.clone();
    for body in [r#"{"n": 1}"#, "not json", r#"{"n": 3}"#] {
        jetstream
            .publish(topology.subject("tenant_a"), body.into())
            .await
            .expect("publish")
            .await
            .expect("publish ack");
    }
    let handler = Arc::new(FailingFirst {
        failures: 3,
        calls: AtomicU64::new(0),
        handled: AtomicU64::new(0),
    });
    let sink = Arc::new(Counting {
        inner: DeadLetters::new(&jetstream, topology.clone()),
        records: AtomicU64::new(0),
    });
    let consumer = Consumer::new(
        Arc::new(guard.clone()),
        topology.clone(),
        PayloadContract::<serde_json::Value>::named("value"),
        handler.clone(),
        sink.clone(),
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = {
        let jetstream = jetstream.clone();
        tokio::spawn(async move { consumer.run(&jetstream, "tenant_a", stopped).await })
    };
    for _ in 0..200 {
        if handler.handled.load(Ordering::SeqCst) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(true).expect("stop");
    run.await.expect("join").expect("consumer");
    assert_eq!(
        handler.handled.load(Ordering::SeqCst),
        2,
        "both valid messages"
    );
    assert!(
        handler.calls.load(Ordering::SeqCst) > 3,
        "the handler failed 3 times first"
    );
    assert_eq!(
        sink.records.load(Ordering::SeqCst),
        1,
        "the poison was dead-lettered once, whatever the retries"
    );
    let (letters, _) = nats::dead_letters(&jetstream, &topology, "tenant_a")
        .await
        .expect("dead letters");
    assert_eq!(letters.len(), 1);
    drop(scratch);
    drop(guard);
    db.drop_db().await;
}
