//! Conservation in front of NATS JetStream: the scenario of
//! `support/broker_conservation.rs` (20 tenant subjects × 1,000 messages, 2% poison, the
//! consumer SIGKILLed and restarted, a column dropped on 3 tenants whose consumers stop
//! pulling while their messages wait in the stream, undelivered and with no redelivery
//! counted) through the `conservation_consumer nats` process; at the end the work stream
//! is empty (work-queue retention: only acknowledged messages leave it). A second test
//! shows a dead letter published twice is stored or counted once and replayed once, the
//! dead-letter copy removed only after the re-publish was acknowledged. A third runs the
//! consumer in-process: an operator-paused tenant is not pulled at all (no delivery, no
//! redelivery counted), and once resumed a batch its handler failed comes back, is
//! written once, and its poison is stored once in the dead-letter stream.

use crate::support;

use crate::conservation;

use crate::broker;

use crate::broker_conservation;

#[path = "bin/broker_writer.rs"]
mod broker_writer;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use broker::{NatsScratch, jetstream, nats_publish};
use broker_conservation::{Broker, Held, every_message_exactly_once, tenant};
use conservation::{Column, Expect, TENANTS, message};
use contract_sqlx::broker::nats::async_nats::jetstream::Context;
use contract_sqlx::broker::nats::{self, Consumer, DeadLetters, NatsBacklog, Topology};
use contract_sqlx::broker::{Accepted, DeadLetter, Handler, HandlerError};
use contract_sqlx::payload::PayloadContract;
use contract_sqlx::quarantine::{QuarantineRecord, QuarantineSink};

/// Short, so that the killed consumer's deliveries come back quickly.
const ACK_WAIT: Duration = Duration::from_secs(5);
/// NATS refuses messages over 1 MiB: the `too_large` poison is this size instead, over
/// the consumer's contract limit (256 KiB).
const TOO_LARGE: usize = 300 * 1024;

struct Nats {
    jetstream: Context,
    topology: Topology,
    backlog: NatsBacklog,
}

impl Broker for Nats {
    fn consumer(&self) -> &'static str {
        "nats"
    }

    fn url(&self) -> String {
        broker::nats_url()
    }

    fn prefix(&self) -> String {
        self.topology.stream()
    }

    fn message(&self, t: usize, i: i64) -> (String, Expect) {
        let (payload, expect) = message(t, i, Column::Text);
        if payload.len() <= TOO_LARGE {
            return (payload, expect);
        }
        let huge = "x".repeat(TOO_LARGE);
        (format!(r#"{{"user_id": 1, "kind": "{huge}"}}"#), expect)
    }

    /// `Nats-Msg-Id` de-duplicates across the whole stream: ids are per tenant.
    fn message_id(&self, tenant: &str, i: i64) -> String {
        format!("{tenant}-m{i}")
    }

    async fn publish(&self, tenant: &str, messages: &[(String, String)]) {
        nats_publish(&self.jetstream, &self.topology.subject(tenant), messages).await;
    }

    async fn held(&self, tenants: &[String]) -> BTreeMap<String, Held> {
        let states = self.backlog.states(tenants).await.expect("consumer info");
        states
            .into_iter()
            .map(|(t, s)| {
                // Messages the killed consumer held stay delivered-unacknowledged while
                // the tenant is paused (nothing pulls them again): in the stream, counted.
                let held = Held {
                    waiting: s.pending,
                    untouched: format!(
                        "{} deliveries, {} delivered unacknowledged, {} redelivered, delivered up to stream sequence {}",
                        s.deliveries, s.ack_pending, s.redelivered, s.delivered_stream_sequence
                    ),
                };
                (t, held)
            })
            .collect()
    }

    async fn left(&self, tenants: &[String]) -> BTreeMap<String, u64> {
        let states = self.backlog.states(tenants).await.expect("consumer info");
        states
            .into_iter()
            .map(|(t, s)| (t, s.pending + s.ack_pending))
            .collect()
    }

    async fn dead_letters(&self, tenant: &str) -> (Vec<DeadLetter>, u64) {
        nats::dead_letters(&self.jetstream, &self.topology, tenant)
            .await
            .expect("dead letters")
    }

    fn source(&self, tenant: &str) -> String {
        self.topology.subject(tenant)
    }
}

/// Messages stored in the work stream.
async fn stored(jetstream: &Context, topology: &Topology) -> u64 {
    let mut stream = jetstream
        .get_stream(topology.stream())
        .await
        .expect("work stream");
    stream.info().await.expect("stream info").state.messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_is_handled_or_dead_lettered_exactly_once_through_drift_and_kill() {
    let jetstream = jetstream().await;
    let names: Vec<String> = (1..=TENANTS).map(tenant).collect();
    let scratch = NatsScratch::declare(&jetstream, "contract_nats", &names, ACK_WAIT).await;
    let topology = scratch.topology.clone();
    let nats = Nats {
        backlog: NatsBacklog::new(&jetstream, topology.clone()),
        jetstream: jetstream.clone(),
        topology: topology.clone(),
    };
    every_message_exactly_once(&nats, "contract_nats").await;
    assert_eq!(
        stored(&jetstream, &topology).await,
        0,
        "every message was acknowledged (and so left the work stream)"
    );
    drop(scratch);
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

/// The crash window between a dead-letter publish's acknowledgement and the ack of the
/// message: the message is dead-lettered a second time. With the consumer's
/// `Nats-Msg-Id` the stream stores it once; without, readers count one message per id.
/// A replay (once the contract accepts it) re-publishes it once and removes both copies,
/// only after the re-publish was acknowledged; a message still rejected stays.
#[tokio::test]
async fn a_dead_letter_published_twice_is_counted_and_replayed_once() {
    let jetstream = jetstream().await;
    let tenants = vec!["tenant_a".to_owned()];
    let scratch = NatsScratch::declare(&jetstream, "contract_nats_dlq", &tenants, ACK_WAIT).await;
    let topology = scratch.topology.clone();
    let sink = DeadLetters::new(&jetstream, topology.clone());
    let strict = PayloadContract::<Strict>::named("strict");
    let record = |id: &str, raw: &[u8]| {
        let rejection = strict.check(raw).err().expect("poison");
        QuarantineRecord::new(
            "tenant_a",
            topology.subject("tenant_a"),
            id,
            &strict,
            &rejection,
            raw,
        )
        .with_header("x-producer", "billing")
    };
    let retryable = record("m1", br#"{"user_id": "7"}"#);
    let broken = record("m2", b"{not json");
    let once = record("m3", br#"{"user_id": "8"}"#).with_header("Nats-Msg-Id", "delivery-3");
    assert_eq!(
        sink.put(&[retryable.clone(), once.clone()])
            .await
            .expect("first copies"),
        2
    );
    // The consumer died before its ack: the redelivered messages are dead-lettered again.
    assert_eq!(
        sink.put(&[retryable, broken, once])
            .await
            .expect("second copies"),
        2,
        "the copy with the same Nats-Msg-Id is not stored again"
    );
    let (letters, duplicates) = nats::dead_letters(&jetstream, &topology, "tenant_a")
        .await
        .expect("read");
    assert_eq!((letters.len(), duplicates), (3, 1));
    assert_eq!(letters[0].reason, "contract_mismatch");
    assert_eq!(letters[0].field_path.as_deref(), Some("user_id"));
    assert!(letters[0].error.contains("user_id"), "{}", letters[0].error);
    // Replay with a contract that accepts m1 and m3 now.
    let lenient = PayloadContract::<Lenient>::named("lenient");
    let report = nats::replay(&jetstream, &topology, "tenant_a", &lenient)
        .await
        .expect("replay");
    assert_eq!(
        (
            report.replayed,
            report.duplicates_removed,
            report.still_rejected.len()
        ),
        (2, 1, 1)
    );
    let backlog = NatsBacklog::new(&jetstream, topology.clone());
    let depth = backlog.depths(&tenants).await.expect("depth");
    assert_eq!(depth.get("tenant_a"), Some(&2), "re-published once each");
    let (left, duplicates) = nats::dead_letters(&jetstream, &topology, "tenant_a")
        .await
        .expect("read");
    assert_eq!((left.len(), duplicates), (1, 0));
    assert_eq!(
        (left[0].message_id.as_str(), left[0].reason.as_str()),
        ("m2", "invalid_json")
    );
    // A second replay finds nothing more to re-publish.
    let again = nats::replay(&jetstream, &topology, "tenant_a", &lenient)
        .await
        .expect("replay");
    assert_eq!((again.replayed, again.still_rejected.len()), (0, 1));
    assert_eq!(stored(&jetstream, &topology).await, 2);
    drop(scratch);
}

/// The conservation writer, failing its first `failures` batches (counting the messages
/// it failed).
struct Flaky {
    writer: Arc<broker_writer::Writer>,
    failures: AtomicU32,
    calls: AtomicU32,
    failed_messages: AtomicU32,
}

impl Handler<broker_writer::Message> for Flaky {
    fn handle<'a>(
        &'a self,
        tenant: &'a str,
        batch: &'a [Accepted<broker_writer::Message>],
    ) -> futures_util::future::BoxFuture<'a, Result<(), HandlerError>> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if call < self.failures.load(Ordering::SeqCst) {
            let failed = u32::try_from(batch.len()).unwrap_or(u32::MAX);
            self.failed_messages.fetch_add(failed, Ordering::SeqCst);
            return Box::pin(async { Err("the database is down (test)".into()) });
        }
        self.writer.handle(tenant, batch)
    }
}

/// One tenant, `tenant_a`, of the conservation writer: its table, its NATS topology, the
/// writer's guard over it, and the writer behind a handler failing its first `failures`
/// batches.
struct WriterTenant {
    db: support::PgScratch,
    jetstream: Context,
    scratch: NatsScratch,
    tenants: Vec<String>,
    backlog: NatsBacklog,
    guard: Arc<contract_sqlx::Guard<sqlx::Postgres>>,
    flaky: Arc<Flaky>,
    _tasks: broker_writer::Tasks,
    _log: support::TempDir,
}

async fn writer_tenant(prefix: &str, failures: u32) -> WriterTenant {
    let db = support::PgScratch::create(prefix).await;
    support::exec(
        &db.pool,
        "CREATE SCHEMA tenant_a; CREATE TABLE tenant_a.processed (message_id text PRIMARY KEY,
            user_id bigint NOT NULL, kind text NOT NULL, note text DEFAULT '')",
    )
    .await;
    let jetstream = jetstream().await;
    let tenants = vec!["tenant_a".to_owned()];
    let scratch = NatsScratch::declare(&jetstream, prefix, &tenants, ACK_WAIT).await;
    let backlog = NatsBacklog::new(&jetstream, scratch.topology.clone());
    let log_dir = support::TempDir::new(&format!("{prefix}_log"));
    let log = log_dir.0.join("execution.jsonl").display().to_string();
    let (guard, writer, tasks) = broker_writer::guard(&db.url, &tenants, backlog.clone(), &log)
        .await
        .expect("guard");
    let flaky = Arc::new(Flaky {
        writer,
        failures: AtomicU32::new(failures),
        calls: AtomicU32::new(0),
        failed_messages: AtomicU32::new(0),
    });
    WriterTenant {
        db,
        jetstream,
        scratch,
        tenants,
        backlog,
        guard,
        flaky,
        _tasks: tasks,
        _log: log_dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_tenant_is_not_pulled_and_a_failed_batch_comes_back_once_resumed() {
    let WriterTenant {
        db,
        jetstream,
        scratch,
        tenants,
        backlog,
        guard,
        flaky,
        _tasks,
        _log,
    } = writer_tenant("contract_nats_pause", 2).await;
    let topology = scratch.topology.clone();
    guard
        .pause("tenant_a")
        .reason("investigating (test)")
        .await
        .expect("pause");
    // 300 messages, 6 of them poison (every 50th from 25).
    let messages: Vec<(String, String)> = (1..=300)
        .map(|i| (format!("m{i}"), message(1, i, Column::Text).0))
        .collect();
    nats_publish(&jetstream, &topology.subject("tenant_a"), &messages).await;
    let sink = Arc::new(DeadLetters::new(&jetstream, topology.clone()));
    let contract = broker_writer::contract().with_max_bytes(256 * 1024);
    let consumer = Arc::new(
        Consumer::new(
            guard.clone(),
            topology.clone(),
            contract,
            flaky.clone(),
            sink,
        )
        .with_batch(50),
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = {
        let (consumer, jetstream) = (Arc::clone(&consumer), jetstream.clone());
        tokio::spawn(async move { consumer.run(&jetstream, "tenant_a", stopped).await })
    };
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM tenant_a.processed")
            .fetch_one(&db.pool)
            .await
            .expect("count")
    };

    // Paused: nothing delivered, so nothing to redeliver.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let state = backlog.states(&tenants).await.expect("state")["tenant_a"];
    assert_eq!(
        (
            state.pending,
            state.ack_pending,
            state.deliveries,
            state.delivered_stream_sequence
        ),
        (300, 0, 0, 0),
        "a paused tenant's consumer pulled"
    );
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 0);
    assert_eq!(count().await, 0);

    // Resumed: the two failed batches come back (nak with a delay) and are written once.
    guard.resume("tenant_a").await.expect("resume");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let state = backlog.states(&tenants).await.expect("state")["tenant_a"];
        if count().await == 294 && state.pending + state.ack_pending == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not drained: {state:?}, {} written",
            count().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let state = backlog.states(&tenants).await.expect("state")["tenant_a"];
    // The accepted messages of the two failed batches came back once each; their poison
    // was dead-lettered and acknowledged before the handler ran, so it did not.
    let failed = u64::from(flaky.failed_messages.load(Ordering::SeqCst));
    assert!(
        (90..100).contains(&failed),
        "two batches of 50, less their poison: {failed}"
    );
    assert_eq!(
        state.deliveries,
        300 + failed,
        "the failed batches' accepted messages came back once each: {state:?}"
    );
    assert!(
        flaky.calls.load(Ordering::SeqCst) >= 8,
        "6 batches + 2 failures"
    );
    // Poison of a failed batch was published again on its redelivery: stored once.
    let (letters, duplicates) = nats::dead_letters(&jetstream, &topology, "tenant_a")
        .await
        .expect("dead letters");
    assert_eq!((letters.len(), duplicates), (6, 0));
    let _ = stop.send(true);
    run.await.expect("join").expect("consumer");
    assert_eq!(stored(&jetstream, &topology).await, 0);
    drop(scratch);
    db.drop_db().await;
}

/// An operator pause of the tenant's subject alone (`contract pause tenant --queue
/// <subject>`) stops its consumer: nothing is pulled until it is resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_pause_of_the_subject_alone_stops_its_consumer() {
    let WriterTenant {
        db,
        jetstream,
        scratch,
        tenants,
        backlog,
        guard,
        flaky: counted,
        _tasks,
        _log,
    } = writer_tenant("contract_nats_qpause", 0).await;
    let topology = scratch.topology.clone();
    let subject = topology.subject("tenant_a");
    guard
        .pause("tenant_a")
        .queue(subject.clone())
        .await
        .expect("pause the subject");
    assert!(guard.gate("tenant_a").is_open(), "the tenant stays open");
    let messages: Vec<(String, String)> = (1..=20)
        .map(|i| (format!("m{i}"), message(1, i, Column::Text).0))
        .collect();
    nats_publish(&jetstream, &subject, &messages).await;
    let sink = Arc::new(DeadLetters::new(&jetstream, topology.clone()));
    let consumer = Arc::new(Consumer::new(
        guard.clone(),
        topology.clone(),
        broker_writer::contract(),
        counted.clone(),
        sink,
    ));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = {
        let (consumer, jetstream) = (Arc::clone(&consumer), jetstream.clone());
        tokio::spawn(async move { consumer.run(&jetstream, "tenant_a", stopped).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let state = backlog.states(&tenants).await.expect("state")["tenant_a"];
    assert_eq!(
        (state.pending, state.deliveries),
        (20, 0),
        "the paused subject was pulled"
    );
    assert_eq!(counted.calls.load(Ordering::SeqCst), 0);

    guard
        .resume("tenant_a")
        .queue(subject.clone())
        .await
        .expect("resume the subject");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let state = backlog.states(&tenants).await.expect("state")["tenant_a"];
        if state.pending + state.ack_pending == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not drained: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(true);
    run.await.expect("join").expect("consumer");
    drop(scratch);
    db.drop_db().await;
}
