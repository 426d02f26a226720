//! The RabbitMQ consumer's own loop: a paused tenant's consumer waits without spinning,
//! even when nobody can stop it any more (the stop sender dropped); an operator pause of
//! its queue alone stops it; a batch whose handler fails and is retried dead-letters its
//! poison once, not once per attempt.

use crate::support;

use crate::broker;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use broker::{RabbitScratch, publish, rabbit};
use contract_sqlx::broker::rabbitmq::{self, Consumer, DeadLetters};
use contract_sqlx::broker::{Accepted, Handler, HandlerError, TenantGate};
use contract_sqlx::payload::PayloadContract;
use contract_sqlx::{Contract, Gate, Guard, Tenants};
use sqlx::Postgres;

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "events")]
#[allow(dead_code)]
struct Event {
    id: i64,
}

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

/// Never called: the tenant stays paused.
struct Unreachable;

impl Handler<serde_json::Value> for Unreachable {
    fn handle<'a>(
        &'a self,
        _tenant: &'a str,
        _batch: &'a [Accepted<serde_json::Value>],
    ) -> futures_util::future::BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async { Err("a paused tenant's batch was handled".into()) })
    }
}

#[tokio::test]
async fn a_paused_consumer_whose_stop_sender_is_gone_does_not_spin() {
    let db = support::PgScratch::create("contract_paused_spin").await;
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
    guard.pause("tenant_a").await.expect("operator pause");
    assert!(!guard.gate("tenant_a").is_open());

    let connection = rabbit().await;
    let scratch =
        RabbitScratch::declare(&connection, "contract_paused", vec!["tenant_a".into()]).await;
    let gate = Arc::new(Counting {
        guard: guard.clone(),
        calls: AtomicU64::new(0),
    });
    let sink = Arc::new(
        DeadLetters::new(&connection, scratch.topology.clone())
            .await
            .expect("dead letters"),
    );
    let consumer = Consumer::new(
        gate.clone(),
        scratch.topology.clone(),
        PayloadContract::<serde_json::Value>::named("value"),
        Arc::new(Unreachable),
        sink,
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    drop(stop);
    let run = {
        let connection = Arc::clone(&connection);
        tokio::spawn(async move { consumer.run(&connection, "tenant_a", stopped).await })
    };
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    run.abort();
    let _ = run.await;
    let calls = gate.calls.load(Ordering::Relaxed);
    // One look per poll interval; a spinning loop asks hundreds of thousands of times.
    assert!(
        calls < 100,
        "the paused consumer asked its gate {calls} times in 1 s"
    );
    drop(guard);
    db.drop_db().await;
}

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct Job {
    user_id: i64,
}

/// Fails its first `failures` batches, then counts the messages it was handed.
struct FailingFirst {
    failures: u64,
    calls: AtomicU64,
    handled: AtomicU64,
}

impl Handler<Job> for FailingFirst {
    fn handle<'a>(
        &'a self,
        _tenant: &'a str,
        batch: &'a [Accepted<Job>],
    ) -> futures_util::future::BoxFuture<'a, Result<(), HandlerError>> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.failures {
            return Box::pin(async { Err("the database is down (test)".into()) });
        }
        self.handled.fetch_add(batch.len() as u64, Ordering::SeqCst);
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn a_retried_batch_dead_letters_its_poison_once() {
    let db = support::PgScratch::create("contract_retry_poison").await;
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
    let connection = rabbit().await;
    let scratch =
        RabbitScratch::declare(&connection, "contract_retry", vec!["tenant_a".into()]).await;
    let topology = scratch.topology.clone();
    let messages: Vec<(String, String)> = [
        ("m1", r#"{"user_id": 1}"#),
        ("m2", r#"{"user_id": "two"}"#),
        ("m3", r#"{"user_id": 3}"#),
    ]
    .iter()
    .map(|(id, body)| ((*id).to_owned(), (*body).to_owned()))
    .collect();
    publish(&connection, &topology.queue("tenant_a"), &messages).await;
    let handler = Arc::new(FailingFirst {
        failures: 3,
        calls: AtomicU64::new(0),
        handled: AtomicU64::new(0),
    });
    let sink = Arc::new(
        DeadLetters::new(&connection, topology.clone())
            .await
            .expect("dead letters"),
    );
    let consumer = Consumer::new(
        Arc::new(guard.clone()),
        topology.clone(),
        PayloadContract::<Job>::named("job"),
        handler.clone(),
        sink,
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = {
        let connection = Arc::clone(&connection);
        tokio::spawn(async move { consumer.run(&connection, "tenant_a", stopped).await })
    };
    for _ in 0..100 {
        if handler.handled.load(Ordering::SeqCst) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
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
/// consumer, as it stops a table queue's claims; the tenant's other queues keep flowing.
#[tokio::test]
async fn an_operator_pause_of_the_consumer_s_queue_alone_stops_it() {
    let db = support::PgScratch::create("contract_queue_pause").await;
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
    let connection = rabbit().await;
    let scratch =
        RabbitScratch::declare(&connection, "contract_qpause", vec!["tenant_a".into()]).await;
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
    let handler = Arc::new(FailingFirst {
        failures: 0,
        calls: AtomicU64::new(0),
        handled: AtomicU64::new(0),
    });
    let sink = Arc::new(
        DeadLetters::new(&connection, topology.clone())
            .await
            .expect("dead letters"),
    );
    let consumer = Consumer::new(
        Arc::new(guard.clone()),
        topology.clone(),
        PayloadContract::<Job>::named("job"),
        handler.clone(),
        sink,
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = {
        let connection = Arc::clone(&connection);
        tokio::spawn(async move { consumer.run(&connection, "tenant_a", stopped).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        handler.calls.load(Ordering::SeqCst),
        0,
        "the paused queue was consumed"
    );

    guard
        .resume("tenant_a")
        .queue(queue.clone())
        .await
        .expect("resume the queue");
    for _ in 0..100 {
        if handler.handled.load(Ordering::SeqCst) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(true).expect("stop");
    run.await.expect("join").expect("consumer");
    assert_eq!(
        handler.handled.load(Ordering::SeqCst),
        2,
        "consumed once resumed"
    );
    drop(guard);
    db.drop_db().await;
}
