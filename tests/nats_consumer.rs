//! The NATS consumer's message ids and dead letters: a work stream deleted and created
//! again starts its sequence at 1 again, and a message published without an id must not
//! take the id of a message written before; a poison message close to the server's
//! `max_payload` is still dead-lettered (its own headers left out); a batch whose handler
//! fails and is retried dead-letters its poison once.

use crate::broker;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use broker::{FailingFirst, NatsScratch, jetstream, open_tenant};
use contract_sqlx::Guard;
use contract_sqlx::broker::nats::async_nats::jetstream::Context;
use contract_sqlx::broker::nats::{self, Consumer, DeadLetters, Topology};
use contract_sqlx::broker::{Accepted, BrokerError, Handler, HandlerError};
use contract_sqlx::payload::PayloadContract;
use contract_sqlx::quarantine::{QuarantineRecord, QuarantineSink, SinkError};
use sqlx::Postgres;
use tokio::sync::watch;

/// Records the id of every message it is handed.
#[derive(Default)]
struct Ids(Mutex<Vec<String>>);

impl Handler<serde_json::Value> for Ids {
    fn handle<'a>(
        &'a self,
        _tenant: &'a str,
        batch: &'a [Accepted<serde_json::Value>],
    ) -> futures_util::future::BoxFuture<'a, Result<(), HandlerError>> {
        self.seen()
            .extend(batch.iter().map(|a| a.message_id.clone()));
        Box::pin(async { Ok(()) })
    }
}

impl Ids {
    fn seen(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
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

/// `tenant_a`'s topology, its consumers' ack wait 5 s.
async fn declare(jetstream: &Context, prefix: &str) -> NatsScratch {
    NatsScratch::declare(
        jetstream,
        prefix,
        &["tenant_a".to_owned()],
        Duration::from_secs(5),
    )
    .await
}

/// Publishes `body` to `tenant_a`'s subject with no id header (the consumer names the
/// message itself) and waits for the stream's acknowledgement.
async fn publish_without_id(jetstream: &Context, topology: &Topology, body: String) {
    jetstream
        .publish(topology.subject("tenant_a"), body.into())
        .await
        .expect("publish")
        .await
        .expect("publish ack");
}

/// Runs `tenant_a`'s consumer of `serde_json::Value` in a task, behind `guard`'s gate;
/// the sender stops it.
fn run_consumer(
    jetstream: &Context,
    topology: &Topology,
    guard: &Guard<Postgres>,
    handler: Arc<impl Handler<serde_json::Value>>,
    sink: Arc<dyn QuarantineSink>,
) -> (
    watch::Sender<bool>,
    tokio::task::JoinHandle<Result<(), BrokerError>>,
) {
    let consumer = Consumer::new(
        Arc::new(guard.clone()),
        topology.clone(),
        PayloadContract::<serde_json::Value>::named("value"),
        handler,
        sink,
    );
    let (stop, stopped) = watch::channel(false);
    let jetstream = jetstream.clone();
    let run = tokio::spawn(async move { consumer.run(&jetstream, "tenant_a", stopped).await });
    (stop, run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_stream_s_messages_get_ids_of_their_own() {
    let (db, guard) = open_tenant("contract_nats_ids").await;
    let jetstream = jetstream().await;
    let scratch = declare(&jetstream, "contract_nats_ids").await;
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
                .declare(&jetstream, &["tenant_a".to_owned()])
                .await
                .expect("declare the streams again");
        }
        for n in 1..=2 {
            publish_without_id(&jetstream, &topology, format!("{{\"n\": {n}}}")).await;
        }
        let sink = Arc::new(DeadLetters::new(&jetstream, topology.clone()));
        let (stop, run) = run_consumer(&jetstream, &topology, &guard, ids.clone(), sink);
        for _ in 0..100 {
            if ids.seen().len() >= 2 * round {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.send(true).expect("stop");
        run.await.expect("join").expect("consumer");
    }
    let mut seen = ids.seen().clone();
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
    let (db, guard) = open_tenant("contract_nats_big").await;
    let jetstream = jetstream().await;
    let scratch = declare(&jetstream, "contract_nats_big").await;
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
    publish_without_id(&jetstream, &topology, tight.clone()).await;
    let sink = Arc::new(DeadLetters::new(&jetstream, topology.clone()));
    let (stop, run) = run_consumer(&jetstream, &topology, &guard, FailingFirst::new(0), sink);
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

/// The dead-letter stream drops a second copy within its duplicate window, but past it
/// every retry of a failed batch stored the poison again: the poison is settled before
/// the handler runs, so it is dead-lettered once whatever the retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_batch_dead_letters_its_poison_once() {
    let (db, guard) = open_tenant("contract_nats_retry").await;
    let jetstream = jetstream().await;
    let scratch = declare(&jetstream, "contract_nats_retry").await;
    let topology = scratch.topology.clone();
    for body in [r#"{"n": 1}"#, "not json", r#"{"n": 3}"#] {
        publish_without_id(&jetstream, &topology, body.to_owned()).await;
    }
    let handler = FailingFirst::new(3);
    let sink = Arc::new(Counting {
        inner: DeadLetters::new(&jetstream, topology.clone()),
        records: AtomicU64::new(0),
    });
    let (stop, run) = run_consumer(&jetstream, &topology, &guard, handler.clone(), sink.clone());
    handler.wait_for_handled(2).await;
    stop.send(true).expect("stop");
    run.await.expect("join").expect("consumer");
    assert_eq!(handler.handled(), 2, "both valid messages");
    assert!(handler.calls() > 3, "the handler failed 3 times first");
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
