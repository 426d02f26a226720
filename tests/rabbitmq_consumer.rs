//! The RabbitMQ consumer's own loop: a paused tenant's consumer waits without spinning,
//! even when nobody can stop it any more (the stop sender dropped); an operator pause of
//! its queue alone stops it; a batch whose handler fails and is retried dead-letters its
//! poison once, not once per attempt; a dead-letter sink whose channel the broker closed
//! stops the consumer with its error, and one whose connection stops answering holds it no
//! longer than its confirm timeout; a failed batch is handed back through its last
//! delivery still unacknowledged, so that deliveries on their way meanwhile are handled
//! once, and a batch ending in poison does not close the channel; a consumer dropped while
//! it subscribes leaves no subscription behind; a producer's `x-contract-*` headers do not
//! stand in for the dead letter's; a batch received as the tenant pauses goes back once;
//! nothing is lost.

use crate::broker;
use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use broker::{FailingFirst, RabbitScratch, open_tenant, publish, rabbit};
use contract_sqlx::broker::rabbitmq::{self, Consumer, DeadLetters, Topology, lapin};
use contract_sqlx::broker::{Accepted, Handler, HandlerError, TenantGate};
use contract_sqlx::payload::PayloadContract;
use contract_sqlx::{Gate, Guard};
use serde::de::DeserializeOwned;
use sqlx::Postgres;
use tokio::sync::watch;

/// The guard's gate, counting how often it is asked.
struct Counting {
    guard: Guard<Postgres>,
    calls: AtomicU64,
}

impl TenantGate for Counting {
    fn gate(&self, tenant: &str) -> Gate {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.guard.gate(tenant)
    }
}

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct Job {
    user_id: i64,
}

/// `tenant_a` with its guard (its gate open), the RabbitMQ connection, and its scratch
/// queues (deleted on drop).
struct TenantA {
    db: support::PgScratch,
    guard: Guard<Postgres>,
    connection: Arc<lapin::Connection>,
    scratch: RabbitScratch,
}

async fn tenant_a(prefix: &str) -> TenantA {
    let (db, guard) = open_tenant(prefix).await;
    let connection = rabbit().await;
    let scratch = RabbitScratch::declare(&connection, prefix, vec!["tenant_a".into()]).await;
    TenantA {
        db,
        guard,
        connection,
        scratch,
    }
}

/// A consumer running in a task; the sender stops it.
type Running = (
    watch::Sender<bool>,
    tokio::task::JoinHandle<Result<(), contract_sqlx::broker::BrokerError>>,
);

/// Runs `tenant_a`'s consumer in a task, dead-lettering into the topology's queues over
/// `connection` too.
async fn run_consumer<T: DeserializeOwned + Send + Sync + 'static>(
    connection: &Arc<lapin::Connection>,
    topology: &Topology,
    gate: Arc<dyn TenantGate>,
    contract: PayloadContract<T>,
    handler: Arc<FailingFirst>,
) -> Running {
    let sink = DeadLetters::new(connection, topology.clone())
        .await
        .expect("dead letters");
    spawn_consumer(connection, topology, gate, contract, handler, sink)
}

/// Runs `tenant_a`'s consumer in a task, dead-lettering into `sink`.
fn spawn_consumer<T, H>(
    connection: &Arc<lapin::Connection>,
    topology: &Topology,
    gate: Arc<dyn TenantGate>,
    contract: PayloadContract<T>,
    handler: Arc<H>,
    sink: DeadLetters,
) -> Running
where
    T: DeserializeOwned + Send + Sync + 'static,
    H: Handler<T> + 'static,
{
    let consumer = Consumer::new(gate, topology.clone(), contract, handler, Arc::new(sink));
    let (stop, stopped) = watch::channel(false);
    let connection = Arc::clone(connection);
    let run = tokio::spawn(async move { consumer.run(&connection, "tenant_a", stopped).await });
    (stop, run)
}

/// [`run_consumer`] with the guard's gate and the [`Job`] contract.
async fn run_job_consumer<H: Handler<Job> + 'static>(
    connection: &Arc<lapin::Connection>,
    topology: &Topology,
    guard: &Guard<Postgres>,
    handler: &Arc<H>,
) -> Running {
    spawn_job_consumer(connection, connection, topology, guard, handler).await
}

/// Runs `tenant_a`'s [`Job`] consumer with the guard's gate over `consuming`,
/// dead-lettering over `sinking`.
async fn spawn_job_consumer<H: Handler<Job> + 'static>(
    consuming: &Arc<lapin::Connection>,
    sinking: &lapin::Connection,
    topology: &Topology,
    guard: &Guard<Postgres>,
    handler: &Arc<H>,
) -> Running {
    let sink = DeadLetters::new(sinking, topology.clone())
        .await
        .expect("dead letters");
    spawn_consumer(
        consuming,
        topology,
        Arc::new(guard.clone()),
        PayloadContract::<Job>::named("job"),
        Arc::clone(handler),
        sink,
    )
}

/// A proxy to the broker (to delay or cut what goes through it), and a connection through
/// it.
async fn through_proxy() -> (crate::support::proxy::Proxy, Arc<lapin::Connection>) {
    use crate::support::proxy::{Proxy, target_of};
    let url = broker::amqp_url();
    let proxy = Proxy::start(target_of(&url)).await;
    let proxied = url.replacen(&target_of(&url), &proxy.addr().to_string(), 1);
    let connection = rabbitmq::connect(&proxied)
        .await
        .expect("a connection through the proxy");
    (proxy, Arc::new(connection))
}

/// Publishes `(message id, payload)` pairs to `tenant_a`'s queue.
async fn publish_jobs(connection: &lapin::Connection, topology: &Topology, jobs: &[(&str, &str)]) {
    let messages: Vec<(String, String)> = jobs
        .iter()
        .map(|(id, body)| ((*id).to_owned(), (*body).to_owned()))
        .collect();
    publish(connection, &topology.queue("tenant_a"), &messages).await;
}

#[tokio::test]
async fn a_paused_consumer_whose_stop_sender_is_gone_does_not_spin() {
    let TenantA {
        db,
        guard,
        connection,
        scratch,
    } = tenant_a("contract_paused_spin").await;
    guard.pause("tenant_a").await.expect("operator pause");
    assert!(!guard.gate("tenant_a").is_open());
    let gate = Arc::new(Counting {
        guard: guard.clone(),
        calls: AtomicU64::new(0),
    });
    let handler = FailingFirst::new(0);
    let (stop, run) = run_consumer(
        &connection,
        &scratch.topology,
        gate.clone(),
        PayloadContract::<serde_json::Value>::named("value"),
        handler.clone(),
    )
    .await;
    drop(stop);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    run.abort();
    let _ = run.await;
    let calls = gate.calls.load(Ordering::Relaxed);
    // One look per poll interval; a spinning loop asks hundreds of thousands of times.
    assert!(
        calls < 100,
        "the paused consumer asked its gate {calls} times in 1 s"
    );
    assert_eq!(handler.calls(), 0, "a paused tenant's batch was handled");
    drop(guard);
    db.drop_db().await;
}

#[tokio::test]
async fn a_retried_batch_dead_letters_its_poison_once() {
    let TenantA {
        db,
        guard,
        connection,
        scratch,
    } = tenant_a("contract_retry_poison").await;
    let topology = scratch.topology.clone();
    publish_jobs(
        &connection,
        &topology,
        &[
            ("m1", r#"{"user_id": 1}"#),
            ("m2", r#"{"user_id": "two"}"#),
            ("m3", r#"{"user_id": 3}"#),
        ],
    )
    .await;
    let handler = FailingFirst::new(3);
    let (stop, run) = run_job_consumer(&connection, &topology, &guard, &handler).await;
    handler.wait_for_handled(2).await;
    stop.send(true).expect("stop");
    run.await.expect("join").expect("consumer");
    assert_eq!(handler.handled(), 2, "both valid messages");
    assert!(handler.calls() > 3, "the handler failed 3 times first");
    let (letters, duplicates) = rabbitmq::dead_letters(&connection, &topology, "tenant_a")
        .await
        .expect("dead letters");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        duplicates, 0,
        "the poison was dead-lettered once, whatever the retries"
    );
    drop(guard);
    db.drop_db().await;
}

/// An operator pause of one queue (`contract pause tenant --queue …`) stops that queue's
/// consumer, as it stops a table queue's claims, while the tenant's gate stays open.
#[tokio::test]
async fn an_operator_pause_of_the_consumer_s_queue_alone_stops_it() {
    let TenantA {
        db,
        guard,
        connection,
        scratch,
    } = tenant_a("contract_queue_pause").await;
    let topology = scratch.topology.clone();
    let queue = topology.queue("tenant_a");
    guard
        .pause("tenant_a")
        .queue(queue.clone())
        .reason("this queue only (test)")
        .await
        .expect("pause the queue");
    assert!(guard.gate("tenant_a").is_open(), "the tenant stays open");
    let messages: Vec<(String, String)> = (1..=2)
        .map(|i| (format!("m{i}"), format!(r#"{{"user_id": {i}}}"#)))
        .collect();
    publish(&connection, &queue, &messages).await;
    let handler = FailingFirst::new(0);
    let (stop, run) = run_consumer(
        &connection,
        &topology,
        Arc::new(guard.clone()),
        PayloadContract::<Job>::named("job"),
        handler.clone(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(handler.calls(), 0, "the paused queue was consumed");

    guard
        .resume("tenant_a")
        .queue(queue.clone())
        .await
        .expect("resume the queue");
    handler.wait_for_handled(2).await;
    stop.send(true).expect("stop");
    run.await.expect("join").expect("consumer");
    assert_eq!(handler.handled(), 2, "consumed once resumed");
    drop(guard);
    db.drop_db().await;
}

/// The broker closes the dead-letter sink's channel (here: its exchange was deleted, so the
/// publish fails with `NOT_FOUND`). The consumer hands the batch back and stops with an
/// error naming the sink, instead of retrying a batch the closed channel can never take;
/// with the exchange declared again and a new sink, the next run dead-letters the poison
/// and handles the rest, each once.
#[tokio::test]
async fn a_consumer_whose_dead_letter_channel_was_closed_stops_and_loses_nothing() {
    use lapin::options::ExchangeDeleteOptions;

    let TenantA {
        db,
        guard,
        connection,
        scratch,
    } = tenant_a("contract_sink_closed").await;
    let topology = scratch.topology.clone();
    let admin = connection.create_channel().await.expect("channel");
    admin
        .exchange_delete(
            &topology.dead_letter_exchange(),
            ExchangeDeleteOptions::default(),
        )
        .await
        .expect("delete the dead-letter exchange");
    publish_jobs(
        &connection,
        &topology,
        &[("m1", r#"{"user_id": "one"}"#), ("m2", r#"{"user_id": 2}"#)],
    )
    .await;
    let handler = FailingFirst::new(0);
    let (_stop, run) = run_job_consumer(&connection, &topology, &guard, &handler).await;
    let ended = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the consumer kept retrying a batch its closed sink can never take")
        .expect("join");
    let error = ended
        .expect_err("the consumer stops with the sink's error")
        .to_string();
    assert!(
        error.contains("dead-lettering into RabbitMQ exchange")
            && error.contains("build a new sink")
            && error.contains("tenant `tenant_a`"),
        "{error}"
    );
    assert_eq!(handler.handled(), 0, "the batch was handed back whole");

    topology
        .declare(&connection, &["tenant_a".to_owned()])
        .await
        .expect("declare again");
    let (stop, run) = run_job_consumer(&connection, &topology, &guard, &handler).await;
    handler.wait_for_handled(1).await;
    stop.send(true).expect("stop");
    run.await.expect("join").expect("consumer");
    assert_eq!(handler.handled(), 1, "m2, once");
    let (letters, duplicates) = rabbitmq::dead_letters(&connection, &topology, "tenant_a")
        .await
        .expect("dead letters");
    let ids: Vec<&str> = letters.iter().map(|l| l.message_id.as_str()).collect();
    assert_eq!((ids, duplicates), (vec!["m1"], 0));
    let _ = admin.close(200, "done").await;
    drop(guard);
    db.drop_db().await;
}

/// The dead-letter sink's connection stops answering, as a broker under a memory or disk
/// alarm reads no publishing connection: the wait for the publish's confirm is bounded, the
/// batch goes back to the queue, and a stop sent meanwhile ends the consumer promptly.
/// Nothing is lost: the poison is in the queue again, and the valid message with it, or
/// handled in a batch of its own (the hand-back returns a batch through its last delivery,
/// so one that arrived after it stays the consumer's).
#[tokio::test]
async fn a_dead_letter_confirm_that_never_comes_does_not_hold_the_consumer() {
    use contract_sqlx::broker::rabbitmq::RabbitBacklog;

    let TenantA {
        db,
        guard,
        connection,
        scratch,
    } = tenant_a("contract_sink_stalled").await;
    let topology = scratch.topology.clone();
    let (proxy, publishing) = through_proxy().await;
    let sink = DeadLetters::new(&publishing, topology.clone())
        .await
        .expect("dead letters")
        .with_confirm_timeout(Duration::from_millis(300));
    // From now on nothing the sink sends is answered for a minute.
    proxy.delay(Duration::from_secs(60));
    publish_jobs(
        &connection,
        &topology,
        &[("m1", r#"{"user_id": "one"}"#), ("m2", r#"{"user_id": 2}"#)],
    )
    .await;
    let handler = FailingFirst::new(0);
    let (stop, run) = spawn_consumer(
        &connection,
        &topology,
        Arc::new(guard.clone()),
        PayloadContract::<Job>::named("job"),
        Arc::clone(&handler),
        sink,
    );
    // A few bounded attempts, then the stop.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.send(true).expect("stop");
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the consumer kept waiting for a confirm that never came")
        .expect("join")
        .expect("a stopped consumer ends without error");
    let handled = handler.handled();
    assert!(handled <= 1, "only m2 is valid: {handled} handled");
    let backlog = RabbitBacklog::new(Arc::clone(&connection), topology.clone());
    let tenants = ["tenant_a".to_owned()];
    let mut waiting = None;
    for _ in 0..100 {
        waiting = backlog
            .depths(&tenants)
            .await
            .expect("depth")
            .remove("tenant_a");
        if waiting == Some(2 - handled) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        waiting,
        Some(2 - handled),
        "the poison, and m2 unless it was handled, are back in the queue"
    );
    drop(proxy);
    drop(publishing);
    drop(guard);
    db.drop_db().await;
}

/// A handler that records the message ids of every batch it takes; its calls follow
/// `script` (each waits its delay, then fails or succeeds), and those after succeed at once.
struct Scripted {
    script: Vec<(Duration, bool)>,
    started: AtomicU64,
    handled: std::sync::Mutex<Vec<String>>,
}

impl Scripted {
    /// Call `i` of `script` waits `script[i].0`, then fails when `script[i].1` is `false`.
    fn new(script: &[(Duration, bool)]) -> Arc<Self> {
        Arc::new(Self {
            script: script.to_vec(),
            started: AtomicU64::new(0),
            handled: std::sync::Mutex::new(Vec::new()),
        })
    }

    fn started(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }

    /// Waits (up to 10 s) until `n` calls started.
    async fn wait_for_calls(&self, n: u64) {
        for _ in 0..1_000 {
            if self.started() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the handler was called {} times, not {n}", self.started());
    }

    /// The ids of every batch that succeeded, sorted.
    fn handled(&self) -> Vec<String> {
        let mut ids = self.handled.lock().expect("not poisoned").clone();
        ids.sort();
        ids
    }
}

impl Handler<Job> for Scripted {
    fn handle<'a>(
        &'a self,
        _tenant: &'a str,
        batch: &'a [Accepted<Job>],
    ) -> futures_util::future::BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let call = self.started.fetch_add(1, Ordering::SeqCst);
            let (delay, succeeds) = usize::try_from(call)
                .ok()
                .and_then(|i| self.script.get(i).copied())
                .unwrap_or((Duration::ZERO, true));
            tokio::time::sleep(delay).await;
            if !succeeds {
                return Err("the database is down (test)".into());
            }
            let mut handled = self.handled.lock().expect("not poisoned");
            handled.extend(batch.iter().map(|a| a.message_id.clone()));
            Ok(())
        })
    }
}

/// A failed batch is handed back while more deliveries are on their way to the consumer
/// (sent by the broker before it read the hand-back, received after it was sent). Those
/// must stay the consumer's: handing back "every delivery" (a nack of tag 0) returned them
/// to the queue too, yet they arrived and were handled; their acknowledgement then named
/// deliveries the broker no longer knew, which closed the channel, and their redelivered
/// copies were handled again. The consumer's connection goes through a proxy that delays
/// it, which holds those deliveries on the wire long enough.
#[tokio::test]
async fn deliveries_on_the_wire_while_a_failed_batch_is_handed_back_are_handled_once() {
    use contract_sqlx::broker::rabbitmq::RabbitBacklog;

    let TenantA {
        db,
        guard,
        connection,
        scratch,
    } = tenant_a("contract_nack_in_flight").await;
    let topology = scratch.topology.clone();
    let (proxy, consuming) = through_proxy().await;
    publish_jobs(&connection, &topology, &[("m1", r#"{"user_id": 1}"#)]).await;
    let handler = Scripted::new(&[(Duration::from_millis(300), false)]);
    let (stop, run) =
        spawn_job_consumer(&consuming, &connection, &topology, &guard, &handler).await;
    handler.wait_for_calls(1).await;
    // m1's handler fails in 300 ms, and the consumer hands m1 back 200 ms after. From now
    // on the consumer's traffic takes at least 400 ms each way, so m2 and m3, published
    // now, are sent before the broker reads the hand-back and arrive after it was sent.
    proxy.delay(Duration::from_millis(400));
    tokio::time::sleep(Duration::from_millis(250)).await;
    publish_jobs(
        &connection,
        &topology,
        &[("m2", r#"{"user_id": 2}"#), ("m3", r#"{"user_id": 3}"#)],
    )
    .await;
    let all = vec!["m1".to_owned(), "m2".to_owned(), "m3".to_owned()];
    for _ in 0..200 {
        if handler.handled().len() >= all.len() || run.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Long enough for a redelivered copy to be handled too.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    proxy.heal().await;
    assert!(
        !run.is_finished(),
        "the consumer ended: {:?}",
        run.await.map(|r| r.map_err(|e| e.to_string()))
    );
    stop.send(true).expect("stop");
    run.await
        .expect("join")
        .expect("a stopped consumer ends without error");
    assert_eq!(handler.handled(), all, "each message handled once");
    let backlog = RabbitBacklog::new(Arc::clone(&connection), topology.clone());
    let depth = backlog
        .depths(&["tenant_a".to_owned()])
        .await
        .expect("depth")
        .remove("tenant_a");
    assert_eq!(depth, Some(0), "nothing left in the queue");
    drop(proxy);
    drop(guard);
    db.drop_db().await;
}

/// The consumers on `tenant_a`'s queue, as the broker counts them.
async fn consumers_on(connection: &lapin::Connection, topology: &Topology) -> u32 {
    use lapin::options::QueueDeclareOptions;
    let channel = connection.create_channel().await.expect("channel");
    let queue = channel
        .queue_declare(
            &topology.queue("tenant_a"),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("passive declare");
    let _ = channel.close(200, "counted").await;
    queue.consumer_count()
}

/// `run`'s future dropped (its task aborted, a `select!` that took another branch) while
/// its `basic_consume` waited for the broker's answer. The broker had registered the
/// consumer; `lapin` registered it too when the answer came, and that kept the channel
/// open: nobody read the consumer, and what the broker sent it stayed unacknowledged
/// until the whole connection closed. The consumer's connection goes through a proxy that
/// delays it, so the answer is still on its way when the task is aborted.
#[tokio::test]
async fn a_consumer_dropped_while_it_subscribes_leaves_no_consumer_behind() {
    let TenantA {
        db,
        guard,
        connection,
        scratch,
    } = tenant_a("contract_dropped_subscribe").await;
    let topology = scratch.topology.clone();
    let (proxy, consuming) = through_proxy().await;
    proxy.delay(Duration::from_millis(500));
    let handler = FailingFirst::new(0);
    let (_stop, run) = run_job_consumer(&consuming, &topology, &guard, &handler).await;
    // The broker has the consumer once it read the `basic.consume`; its answer then takes
    // at least 500 ms more to reach the client.
    // (Opening the channel, the prefetch and the consume take 2.5 s or more through it.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut registered = false;
    while !registered && tokio::time::Instant::now() < deadline {
        registered = consumers_on(&connection, &topology).await == 1;
        if !registered {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(registered, "the consumer never subscribed");
    run.abort();
    assert!(
        run.await.is_err_and(|e| e.is_cancelled()),
        "aborted mid-subscribe"
    );
    proxy.heal().await;
    let mut left = u32::MAX;
    for _ in 0..100 {
        left = consumers_on(&connection, &topology).await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        left, 0,
        "the dropped consumer's subscription is still there"
    );
    // A message published now reaches the consumer that replaces it.
    publish_jobs(&connection, &topology, &[("m1", r#"{"user_id": 1}"#)]).await;
    let (stop, run) = run_job_consumer(&connection, &topology, &guard, &handler).await;
    handler.wait_for_handled(1).await;
    stop.send(true).expect("stop");
    run.await.expect("join").expect("consumer");
    assert_eq!(handler.handled(), 1, "m1, once");
    drop(consuming);
    drop(proxy);
    drop(guard);
    db.drop_db().await;
}

/// A batch whose last delivery is poison, and whose handler fails: the poison was
/// dead-lettered and acknowledged before the handler ran, so the hand-back must end at the
/// last delivery still unacknowledged. A nack through an acknowledged delivery names a tag
/// the broker no longer knows, which closes the channel and ends the consumer. (m1 and m2
/// arrive while m0's handler runs, so they make the next batch together.)
#[tokio::test]
async fn a_failed_batch_ending_in_poison_is_handed_back_without_closing_the_channel() {
    let TenantA {
        db,
        guard,
        connection,
        scratch,
    } = tenant_a("contract_poison_last").await;
    let topology = scratch.topology.clone();
    publish_jobs(&connection, &topology, &[("m0", r#"{"user_id": 0}"#)]).await;
    let handler = Scripted::new(&[(Duration::from_millis(400), true), (Duration::ZERO, false)]);
    let (stop, run) = run_job_consumer(&connection, &topology, &guard, &handler).await;
    handler.wait_for_calls(1).await;
    publish_jobs(
        &connection,
        &topology,
        &[("m1", r#"{"user_id": 1}"#), ("m2", r#"{"user_id": "two"}"#)],
    )
    .await;
    handler.wait_for_calls(3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !run.is_finished(),
        "the consumer ended: {:?}",
        run.await.map(|r| r.map_err(|e| e.to_string()))
    );
    stop.send(true).expect("stop");
    run.await
        .expect("join")
        .expect("a stopped consumer ends without error");
    assert_eq!(handler.handled(), ["m0", "m1"], "each valid message once");
    let (letters, duplicates) = rabbitmq::dead_letters(&connection, &topology, "tenant_a")
        .await
        .expect("dead letters");
    let ids: Vec<&str> = letters.iter().map(|l| l.message_id.as_str()).collect();
    assert_eq!((ids, duplicates), (vec!["m2"], 0));
    drop(guard);
    db.drop_db().await;
}

/// A producer's `x-contract-*` headers do not stand in for the dead letter's: a poison
/// message that carries its own `x-contract-original-routing-key` and
/// `x-contract-field-path` is dead-lettered with the routing key it came with and no field
/// path (broken JSON has none). The consumer set the routing key before copying the
/// message's headers, so the producer's value replaced it (helper-65).
#[tokio::test]
async fn a_producer_s_x_contract_headers_do_not_stand_in_for_the_dead_letter_s() {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    use lapin::types::{AMQPValue, FieldTable};

    let TenantA {
        db,
        guard,
        connection,
        scratch,
    } = tenant_a("contract_spoofed_headers").await;
    let topology = scratch.topology.clone();
    let queue = topology.queue("tenant_a");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let mut headers = FieldTable::default();
    for (name, value) in [
        ("x-contract-original-routing-key", "spoofed"),
        ("x-contract-field-path", "made.up"),
    ] {
        headers.insert(name.into(), AMQPValue::LongString(value.into()));
    }
    let properties = lapin::BasicProperties::default()
        .with_message_id("m1".into())
        .with_headers(headers);
    channel
        .basic_publish("", &queue, BasicPublishOptions::default(), b"{", properties)
        .await
        .expect("publish");
    channel.wait_for_confirms().await.expect("confirmed");
    let _ = channel.close(200, "published").await;
    publish_jobs(&connection, &topology, &[("m2", r#"{"user_id": 2}"#)]).await;

    let handler = FailingFirst::new(0);
    let (stop, run) = run_job_consumer(&connection, &topology, &guard, &handler).await;
    handler.wait_for_handled(1).await;
    stop.send(true).expect("stop");
    run.await.expect("join").expect("consumer");
    let (letters, _) = rabbitmq::dead_letters(&connection, &topology, "tenant_a")
        .await
        .expect("dead letters");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].original_routing_key, queue, "{}", letters[0]);
    assert_eq!(letters[0].field_path, None, "{}", letters[0]);
    drop(guard);
    db.drop_db().await;
}

/// Gives a permit taken before the tenant was paused, once, then the guard's gate.
struct StaleOnce {
    guard: Guard<Postgres>,
    stale: std::sync::Mutex<Option<contract_sqlx::Gate>>,
}

impl TenantGate for StaleOnce {
    fn gate(&self, tenant: &str) -> Gate {
        let stale = self.stale.lock().expect("lock").take();
        stale.unwrap_or_else(|| self.guard.gate(tenant))
    }
}

/// A batch received under a permit the pause made stale goes back to the queue once. It
/// was handed back while the consumer was still subscribed, so the broker delivered it
/// again into the consumer's buffer, and the consumer's cancel (the tenant now paused)
/// handed it back a second time: two deliveries counted against a quorum queue's limit
/// for one pause (helper-65).
#[tokio::test]
async fn a_batch_received_as_the_tenant_pauses_goes_back_once() {
    use lapin::options::{BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
    use lapin::types::{AMQPValue, FieldTable};

    let TenantA {
        db,
        guard,
        connection,
        scratch,
    } = tenant_a("contract_stale_batch").await;
    let topology = scratch.topology.clone();
    let queue = topology.queue("tenant_a");
    // A quorum queue in place of the classic one: it counts deliveries handed back.
    let channel = connection.create_channel().await.expect("channel");
    channel
        .queue_delete(&queue, QueueDeleteOptions::default())
        .await
        .expect("delete the classic queue");
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            &queue,
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await
        .expect("declare a quorum queue");
    let jobs: Vec<(String, String)> = (1..=3)
        .map(|i| (format!("m{i}"), format!(r#"{{"user_id": {i}}}"#)))
        .collect();
    publish(&connection, &queue, &jobs).await;
    let stale = guard.gate("tenant_a");
    assert!(stale.is_open());
    guard
        .pause("tenant_a")
        .reason("paused as the batch arrives (test)")
        .await
        .expect("pause");
    let gate = Arc::new(StaleOnce {
        guard: guard.clone(),
        stale: std::sync::Mutex::new(Some(stale)),
    });
    let handler = FailingFirst::new(0);
    let (stop, run) = run_consumer(
        &connection,
        &topology,
        gate,
        PayloadContract::<Job>::named("job"),
        handler.clone(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.send(true).expect("stop");
    run.await.expect("join").expect("consumer");
    assert_eq!(handler.calls(), 0, "a paused tenant's batch was handled");

    let mut counts = Vec::new();
    while let Some(message) = channel
        .basic_get(&queue, BasicGetOptions { no_ack: true })
        .await
        .expect("get")
    {
        let count = message
            .delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-delivery-count").cloned());
        counts.push(format!("{count:?}"));
    }
    let _ = channel.close(200, "read").await;
    assert_eq!(counts.len(), 3, "every message is back: {counts:?}");
    let once = format!("{:?}", Some(AMQPValue::LongLongInt(1)));
    assert!(
        counts.iter().all(|c| *c == once),
        "each handed back once: {counts:?}"
    );
    drop(guard);
    db.drop_db().await;
}
