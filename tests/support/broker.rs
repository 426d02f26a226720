//! What the broker tests share: the servers' URLs (loud when unreachable) and queues
//! deleted even when a test panics. Included with `#[path]`.
#![allow(dead_code)]

use std::sync::Arc;

use contract_sqlx::broker::nats;
use contract_sqlx::broker::nats::async_nats::jetstream::Context;
use contract_sqlx::broker::rabbitmq::{self, Topology, lapin};

/// Default RabbitMQ URL on the development machines.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// `CONTRACT_TEST_AMQP_URL`, or the local default.
pub fn amqp_url() -> String {
    std::env::var("CONTRACT_TEST_AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.to_owned())
}

/// Connects to the test RabbitMQ server, panicking with the variable to set.
pub async fn rabbit() -> Arc<lapin::Connection> {
    let url = amqp_url();
    Arc::new(rabbitmq::connect(&url).await.unwrap_or_else(|e| {
        panic!("RabbitMQ is unreachable at {url}: {e}. Start it or set CONTRACT_TEST_AMQP_URL to a reachable server")
    }))
}

/// A topology whose queues and exchange are deleted on drop, even after a failed assertion.
pub struct RabbitScratch {
    pub topology: Topology,
    pub tenants: Vec<String>,
}

impl RabbitScratch {
    /// Declares a uniquely named topology for `tenants`.
    pub async fn declare(
        connection: &lapin::Connection,
        prefix: &str,
        tenants: Vec<String>,
    ) -> Self {
        let scratch = Self {
            topology: Topology::new(crate::support::unique_name(prefix)),
            tenants,
        };
        scratch
            .topology
            .declare(connection, &scratch.tenants)
            .await
            .expect("declare the queues");
        scratch
    }
}

impl Drop for RabbitScratch {
    fn drop(&mut self) {
        let (topology, tenants) = (self.topology.clone(), std::mem::take(&mut self.tenants));
        crate::support::clean_up_blocking(move || async move {
            if let Ok(connection) = rabbitmq::connect(&amqp_url()).await {
                let _ = topology.delete(&connection, &tenants).await;
                let _ = connection.close(200, "clean-up").await;
            }
        });
    }
}

/// Publishes `(message id, payload)` to `queue` through the default exchange, persistent,
/// and waits for every confirm.
pub async fn publish(connection: &lapin::Connection, queue: &str, messages: &[(String, String)]) {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    for (id, payload) in messages {
        let properties = lapin::BasicProperties::default()
            .with_message_id(id.as_str().into())
            .with_delivery_mode(2);
        channel
            .basic_publish(
                "",
                queue,
                BasicPublishOptions::default(),
                payload.as_bytes(),
                properties,
            )
            .await
            .expect("publish");
    }
    channel.wait_for_confirms().await.expect("confirmed");
    let _ = channel.close(200, "published").await;
}

/// Default NATS URL on the development machines (JetStream enabled).
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// `CONTRACT_TEST_NATS_URL`, or the local default.
pub fn nats_url() -> String {
    std::env::var("CONTRACT_TEST_NATS_URL").unwrap_or_else(|_| DEFAULT_NATS_URL.to_owned())
}

/// Connects to the test NATS server, panicking with the variable to set.
pub async fn jetstream() -> Context {
    let url = nats_url();
    let unreachable = |e: &dyn std::fmt::Display| -> ! {
        panic!(
            "NATS (with JetStream) is unreachable at {url}: {e}. Start it (`nats-server -js`) or set CONTRACT_TEST_NATS_URL to a reachable server"
        )
    };
    let jetstream = nats::connect(&url)
        .await
        .unwrap_or_else(|e| unreachable(&e));
    // A server without JetStream accepts the connection.
    if !jetstream.client().server_info().jetstream {
        unreachable(&"the server runs without JetStream");
    }
    jetstream
}

/// A JetStream topology whose streams (and consumers) are deleted on drop, even after a
/// failed assertion.
pub struct NatsScratch {
    pub topology: nats::Topology,
}

impl NatsScratch {
    /// Declares a uniquely named topology for `tenants`, its consumers with `ack_wait`.
    pub async fn declare(
        jetstream: &Context,
        prefix: &str,
        tenants: &[String],
        ack_wait: std::time::Duration,
    ) -> Self {
        let topology = nats::Topology::new(crate::support::unique_name(prefix))
            .expect("stream prefix")
            .with_ack_wait(ack_wait);
        let scratch = Self { topology };
        scratch
            .topology
            .declare(jetstream, tenants)
            .await
            .expect("declare the streams");
        scratch
    }
}

impl Drop for NatsScratch {
    fn drop(&mut self) {
        let topology = self.topology.clone();
        crate::support::clean_up_blocking(move || async move {
            if let Ok(jetstream) = nats::connect(&nats_url()).await {
                let _ = topology.delete(&jetstream).await;
            }
        });
    }
}

/// Publishes `(message id, payload)` to `subject` with `Nats-Msg-Id`, and waits for every
/// publish acknowledgement.
pub async fn nats_publish(jetstream: &Context, subject: &str, messages: &[(String, String)]) {
    use nats::async_nats::HeaderMap;
    let mut acks = Vec::with_capacity(messages.len());
    for (id, payload) in messages {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        let payload = payload.clone().into_bytes();
        acks.push(
            jetstream
                .publish_with_headers(subject.to_owned(), headers, payload.into())
                .await
                .expect("publish"),
        );
    }
    for ack in acks {
        let ack = ack.await.expect("publish acknowledged");
        assert!(!ack.duplicate, "a test message was taken for a duplicate");
    }
}

/// The contract of the consumer tests' one tenant, `tenant_a`.
#[derive(Debug, sqlx::FromRow, contract_sqlx::Contract)]
#[contract(table = "events")]
pub struct Event {
    pub id: i64,
}

/// A scratch database with one compliant tenant, `tenant_a`, and a guard over it (its
/// gate open): what a consumer test asks before each batch.
pub async fn open_tenant(
    prefix: &str,
) -> (
    crate::support::PgScratch,
    contract_sqlx::Guard<sqlx::Postgres>,
) {
    let db = crate::support::PgScratch::create(prefix).await;
    crate::support::exec(
        &db.pool,
        "CREATE SCHEMA tenant_a; CREATE TABLE tenant_a.events (id int8 NOT NULL)",
    )
    .await;
    let guard = contract_sqlx::Guard::<sqlx::Postgres>::builder()
        .contract::<Event>()
        .tenants(contract_sqlx::Tenants::schemas_like("tenant_%"))
        .start(&db.pool)
        .await
        .expect("guard");
    (db, guard)
}

/// A handler that fails its first `failures` batches, then counts the messages it was
/// handed.
pub struct FailingFirst {
    pub failures: u64,
    pub calls: std::sync::atomic::AtomicU64,
    pub handled: std::sync::atomic::AtomicU64,
}

impl FailingFirst {
    pub fn new(failures: u64) -> Arc<Self> {
        Arc::new(Self {
            failures,
            calls: std::sync::atomic::AtomicU64::new(0),
            handled: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn handled(&self) -> u64 {
        self.handled.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits (up to 10 s) until it was handed `n` messages; the caller asserts after.
    pub async fn wait_for_handled(&self, n: u64) {
        for _ in 0..200 {
            if self.handled() >= n {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

impl<T: Send + Sync + 'static> contract_sqlx::broker::Handler<T> for FailingFirst {
    fn handle<'a>(
        &'a self,
        _tenant: &'a str,
        batch: &'a [contract_sqlx::broker::Accepted<T>],
    ) -> futures_util::future::BoxFuture<'a, Result<(), contract_sqlx::broker::HandlerError>> {
        use std::sync::atomic::Ordering;
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.failures {
            return Box::pin(async { Err("the database is down (test)".into()) });
        }
        self.handled.fetch_add(batch.len() as u64, Ordering::SeqCst);
        Box::pin(async { Ok(()) })
    }
}
