//! RabbitMQ (`lapin`, on tokio): one queue per tenant, a consumer per tenant that the gate
//! cancels and resumes, poison dead-lettered under publisher confirms.
//!
//! **Why a queue per tenant, not a routing key.** With one shared queue and the tenant in
//! the routing key, a consumer cannot leave a paused tenant's messages alone: it receives
//! them anyway and must nack them back (a redelivery loop at full speed) or hold them
//! unacknowledged (blocking its prefetch window for every tenant). A queue per tenant is
//! paused by cancelling one consumer, its depth is one passive declare, and producers
//! publish to the default exchange under the tenant queue's name ([`Topology::queue`]).
//!
//! ```no_run
//! # use std::sync::Arc;
//! # #[derive(serde::Deserialize)] struct Job { id: i64 }
//! # async fn demo(guard: contract_sqlx::Guard<sqlx::Postgres>, handler: Arc<impl contract_sqlx::broker::Handler<Job>>) -> Result<(), Box<dyn std::error::Error>> {
//! use contract_sqlx::broker::rabbitmq::{self, Consumer, DeadLetters, Topology};
//! use contract_sqlx::payload::PayloadContract;
//!
//! let url = "amqp://guest:guest@127.0.0.1:5672/%2f";
//! let connection = rabbitmq::connect(url).await?;
//! let topology = Topology::new("jobs");
//! topology.declare(&connection, &["tenant_1".to_owned()]).await?;
//! // Dead letters on a connection of their own: under a memory or disk alarm the broker
//! // stops reading a publishing connection, and nothing (acknowledgements included) could
//! // be written on a shared one.
//! let publishing = rabbitmq::connect(url).await?;
//! let sink = Arc::new(DeadLetters::new(&publishing, topology.clone()).await?);
//! let consumer = Arc::new(Consumer::new(Arc::new(guard), topology, PayloadContract::<Job>::named("job"), handler, sink));
//! let (_stop, stopped) = tokio::sync::watch::channel(false);
//! consumer.run(&connection, "tenant_1", stopped).await?; // until `_stop` sends `true`
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt as _, StreamExt as _};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::{Accepted, BrokerError, Handler, ORIGINAL_ROUTING_KEY, TenantGate, digest_id, redact};
use crate::Gate;
use crate::payload::PayloadContract;
use crate::quarantine::{QuarantineRecord, QuarantineSink};

mod dead_letters;
mod depth;

pub use dead_letters::{DeadLetters, dead_letters, replay};
pub use depth::RabbitBacklog;
/// The `lapin` client this module is built on (to publish, or to declare more).
pub use lapin;

/// How often a paused tenant's gate is asked again.
const PAUSED_POLL: Duration = Duration::from_millis(50);
/// How long a consumer waits for a first message before it asks the gate again.
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// The pause after a failed batch before its messages come back.
const BACKOFF: Duration = Duration::from_millis(200);

/// Connects to RabbitMQ on the current tokio runtime.
///
/// # Errors
///
/// [`BrokerError::Broker`] when the server cannot be reached or refuses the login.
pub async fn connect(url: &str) -> Result<Connection, BrokerError> {
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio::current());
    Connection::connect(url, properties).await.map_err(|e| {
        BrokerError::broker("RabbitMQ", format!("connecting to {}", redact(url)), None)(e.into())
    })
}

/// The names of one application's queues: `<prefix>.<tenant>` for each tenant's messages,
/// `<prefix>.<tenant>.dead-letter` for its dead letters, bound to the direct exchange
/// `<prefix>.dead-letter` under the tenant's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
}

impl Topology {
    /// The queues named after `prefix`.
    #[must_use]
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The tenant's queue (producers publish to the default exchange under this name).
    #[must_use]
    pub fn queue(&self, tenant: &str) -> String {
        format!("{}.{tenant}", self.prefix)
    }

    /// The tenant's dead-letter queue.
    #[must_use]
    pub fn dead_letter_queue(&self, tenant: &str) -> String {
        format!("{}.{tenant}.dead-letter", self.prefix)
    }

    /// The dead-letter exchange (direct; routing key = tenant).
    #[must_use]
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dead-letter", self.prefix)
    }

    /// Declares the exchange and, for each tenant, its durable queue and dead-letter
    /// queue (idempotent).
    ///
    /// # Errors
    ///
    /// [`BrokerError::Broker`] naming the queue the server refused.
    pub async fn declare(
        &self,
        connection: &Connection,
        tenants: &[String],
    ) -> Result<(), BrokerError> {
        let channel = channel(connection, "opening a channel").await?;
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let exchange = self.dead_letter_exchange();
        let options = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                &exchange,
                ExchangeKind::Direct,
                options,
                FieldTable::default(),
            )
            .await
            .map_err(|e| rabbit(format!("declaring exchange {exchange}"), None)(e.into()))?;
        for tenant in tenants {
            for queue in [self.queue(tenant), self.dead_letter_queue(tenant)] {
                channel
                    .queue_declare(&queue, durable, FieldTable::default())
                    .await
                    .map_err(|e| {
                        rabbit(format!("declaring queue {queue}"), Some(tenant))(e.into())
                    })?;
            }
            let dead = self.dead_letter_queue(tenant);
            channel
                .queue_bind(
                    &dead,
                    &exchange,
                    tenant,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| rabbit(format!("binding queue {dead}"), Some(tenant))(e.into()))?;
        }
        let _ = channel.close(200, "declared").await;
        Ok(())
    }

    /// Deletes the tenants' queues and the exchange (clean-up of tests and demos).
    ///
    /// # Errors
    ///
    /// [`BrokerError::Broker`] when a delete is refused.
    pub async fn delete(
        &self,
        connection: &Connection,
        tenants: &[String],
    ) -> Result<(), BrokerError> {
        let channel = channel(connection, "opening a channel").await?;
        for tenant in tenants {
            for queue in [self.queue(tenant), self.dead_letter_queue(tenant)] {
                channel
                    .queue_delete(&queue, QueueDeleteOptions::default())
                    .await
                    .map_err(|e| {
                        rabbit(format!("deleting queue {queue}"), Some(tenant))(e.into())
                    })?;
            }
        }
        let exchange = self.dead_letter_exchange();
        channel
            .exchange_delete(&exchange, ExchangeDeleteOptions::default())
            .await
            .map_err(|e| rabbit(format!("deleting exchange {exchange}"), None)(e.into()))?;
        let _ = channel.close(200, "deleted").await;
        Ok(())
    }
}

fn rabbit(
    action: impl Into<String>,
    tenant: Option<&str>,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> BrokerError {
    BrokerError::broker("RabbitMQ", action, tenant)
}

async fn channel(connection: &Connection, action: &str) -> Result<Channel, BrokerError> {
    connection
        .create_channel()
        .await
        .map_err(|e| rabbit(action, None)(e.into()))
}

/// The guarded consumer of every tenant queue of a [`Topology`]: run one
/// [`Consumer::run`] per tenant (each on a channel of its own, with its own prefetch).
pub struct Consumer<T, H> {
    gate: Arc<dyn TenantGate>,
    topology: Topology,
    contract: PayloadContract<T>,
    handler: Arc<H>,
    sink: Arc<dyn QuarantineSink>,
    prefetch: u16,
}

impl<T, H> Consumer<T, H>
where
    T: DeserializeOwned + Send + Sync + 'static,
    H: Handler<T>,
{
    /// A consumer asking `gate`, checking with `contract`, writing through `handler`,
    /// dead-lettering into `sink`; prefetch 100.
    pub fn new(
        gate: Arc<dyn TenantGate>,
        topology: Topology,
        contract: PayloadContract<T>,
        handler: Arc<H>,
        sink: Arc<dyn QuarantineSink>,
    ) -> Self {
        Self {
            gate,
            topology,
            contract,
            handler,
            sink,
            prefetch: 100,
        }
    }

    /// Sets the prefetch (unacknowledged messages per tenant; also the largest batch).
    #[must_use]
    pub fn with_prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }

    /// Consumes `tenant`'s queue until `stop` turns `true`: while its gate is open (the
    /// tenant's, and no operator pause of this queue alone, [`TenantGate::gate_queue`]),
    /// batches of up to the prefetch are checked, handled, dead-lettered and acknowledged;
    /// while it is paused, the consumer is cancelled (the deliveries it held go back to
    /// the queue once) and nothing is read. Dropping the future on a running tokio runtime
    /// closes its channel, which also returns what it held.
    ///
    /// # Errors
    ///
    /// [`BrokerError::Broker`] when the channel fails (the unacknowledged batch goes back
    /// to the queue); run it again. Also when the sink failed a batch and can never store
    /// anything again ([`QuarantineSink::is_closed`]: the broker closed the channel of a
    /// [`DeadLetters`]): the batch went back to the queue; build a new sink, then run again.
    pub async fn run(
        &self,
        connection: &Connection,
        tenant: &str,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), BrokerError> {
        let channel = channel(connection, "opening a channel").await?;
        let _closes = ClosedWhenDone(channel.clone());
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| rabbit("setting the prefetch", Some(tenant))(e.into()))?;
        let queue = self.topology.queue(tenant);
        let tag = format!("contract.{tenant}.{}", uuid::Uuid::now_v7());
        let mut consumer: Option<lapin::Consumer> = None;
        while !*stop.borrow() {
            let permit = match self.gate.gate_queue(tenant, &queue) {
                Gate::Open(permit) => permit,
                Gate::Paused(why) => {
                    if consumer.take().is_some() {
                        tracing::info!(tenant, queue, reason = %why.reason, "tenant paused: consumer cancelled");
                        cancel(&channel, &tag, tenant).await?;
                    }
                    if let Ok(Err(_)) = tokio::time::timeout(PAUSED_POLL, stop.changed()).await {
                        tokio::time::sleep(PAUSED_POLL).await; // nobody can stop it any more
                    }
                    continue;
                }
            };
            let stream = match &mut consumer {
                Some(stream) => stream,
                None => consumer.insert(
                    channel
                        .basic_consume(
                            &queue,
                            &tag,
                            BasicConsumeOptions::default(),
                            FieldTable::default(),
                        )
                        .await
                        .map_err(|e| {
                            rabbit(format!("consuming queue {queue}"), Some(tenant))(e.into())
                        })?,
                ),
            };
            let (batch, ended) = next_batch(stream, usize::from(self.prefetch)).await;
            if ended {
                consumer = None; // cancelled by the server (queue deleted): consume again
            }
            let Some(last) = batch.last().map(|d| d.delivery_tag) else {
                continue;
            };
            if !permit.is_current() {
                // Paused while the batch arrived: it goes back untouched, once. With the
                // gate closed now, the consumer is cancelled first: handed back while it
                // is subscribed, the batch would come again into its buffer, and go back a
                // second time with the cancel's (two deliveries counted).
                let paused = matches!(self.gate.gate_queue(tenant, &queue), Gate::Paused(_));
                if paused && consumer.take().is_some() {
                    tracing::info!(
                        tenant,
                        queue,
                        "tenant paused as a batch arrived: consumer cancelled, the batch handed back"
                    );
                    cancel(&channel, &tag, tenant).await?;
                } else {
                    hand_back(&channel, last, tenant).await?;
                }
                continue;
            }
            match self.process(&channel, tenant, &queue, &batch, last).await {
                // The poison is acknowledged already: up to the last accepted delivery.
                Ok(Some(last)) => channel
                    .basic_ack(last, BasicAckOptions { multiple: true })
                    .await
                    .map_err(|e| rabbit("acknowledging a batch", Some(tenant))(e.into()))?,
                Ok(None) => {}
                Err(NotSettled { error, through }) if self.sink.is_closed() => {
                    // The sink will fail every batch with poison from now on: hand the
                    // batch back and stop, so that the caller builds a new sink.
                    hand_back(&channel, through, tenant).await?;
                    let _ = channel.close(200, "dead-letter sink closed").await;
                    let action = format!(
                        "dead-lettering into {}, whose channel is closed (build a new sink and run again; the batch went back to the queue)",
                        self.sink.describe()
                    );
                    return Err(rabbit(action, Some(tenant))(error));
                }
                Err(NotSettled { error, through }) => {
                    tracing::warn!(tenant, queue, %error, "batch not acknowledged; it will be delivered again");
                    tokio::time::sleep(BACKOFF).await;
                    hand_back(&channel, through, tenant).await?;
                }
            }
        }
        if consumer.is_some() {
            cancel(&channel, &tag, tenant).await?;
        }
        let _ = channel.close(200, "stopped").await;
        Ok(())
    }

    /// Checks a batch, dead-letters the poison (confirmed) and acknowledges it one delivery
    /// at a time, then hands the rest to the handler; the tag of the last accepted delivery,
    /// for the caller to acknowledge once the handler committed. The poison is settled
    /// before the handler runs: a handler that fails returns only the accepted deliveries
    /// to the queue, so a retry does not dead-letter the poison again (it did, once per
    /// retry, for as long as the handler failed). `last` is the tag of the batch's last
    /// delivery.
    async fn process(
        &self,
        channel: &Channel,
        tenant: &str,
        queue: &str,
        batch: &[Delivery],
        last: u64,
    ) -> Result<Option<u64>, NotSettled> {
        let mut accepted = Vec::with_capacity(batch.len());
        let mut last_accepted = None;
        let mut poison = Vec::new();
        let mut poison_tags = Vec::new();
        for delivery in batch {
            let id = message_id(delivery, queue);
            match self.contract.check(&delivery.data) {
                Ok(value) => {
                    last_accepted = Some(delivery.delivery_tag);
                    accepted.push(Accepted {
                        message_id: id,
                        value,
                    });
                }
                Err(rejection) => {
                    let mut record = QuarantineRecord::new(
                        tenant,
                        queue,
                        id,
                        &self.contract,
                        &rejection,
                        &delivery.data,
                    );
                    if let Some(headers) = delivery.properties.headers() {
                        for (name, value) in headers.inner() {
                            if let Some(text) = text(value) {
                                record = record.with_header(name.as_str(), text);
                            }
                        }
                    }
                    // After the message's own: a header of that name it carried is not the
                    // routing key it came with.
                    record =
                        record.with_header(ORIGINAL_ROUTING_KEY, delivery.routing_key.as_str());
                    poison.push(record);
                    poison_tags.push(delivery.delivery_tag);
                }
            }
        }
        if !poison.is_empty() {
            // Nothing of the batch is acknowledged until the sink stored the poison: all of
            // it goes back, through its `last` delivery. (A poison acknowledgement fails only
            // with the channel, and the hand-back then fails too.)
            let whole = |error| NotSettled {
                error,
                through: last,
            };
            self.sink.put(&poison).await.map_err(|e| whole(e.into()))?;
            for tag in poison_tags {
                channel
                    .basic_ack(tag, BasicAckOptions { multiple: false })
                    .await
                    .map_err(|e| whole(e.into()))?;
            }
        }
        if let Some(through) = last_accepted {
            // The poison is acknowledged: only the accepted deliveries go back.
            self.handler
                .handle(tenant, &accepted)
                .await
                .map_err(|error| NotSettled { error, through })?;
            crate::guard::metrics::record_messages(queue, "accepted", accepted.len() as u64);
        }
        Ok(last_accepted)
    }
}

/// A batch [`Consumer::process`] could not settle.
struct NotSettled {
    /// Why.
    error: Box<dyn std::error::Error + Send + Sync>,
    /// Its last delivery still unacknowledged, to hand the batch back through: its last
    /// one, or its last accepted one once its poison was acknowledged (a nack through an
    /// acknowledged delivery names a tag the broker no longer knows, which closes the
    /// channel).
    through: u64,
}

/// A header value as text, if it is text.
fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// The `message_id` property, or a digest of the queue and the bytes when there is none.
fn message_id(delivery: &Delivery, queue: &str) -> String {
    match delivery.properties.message_id() {
        Some(id) if !id.as_str().is_empty() => id.as_str().to_owned(),
        _ => digest_id(queue, &delivery.data),
    }
}

/// Waits up to [`IDLE_WAIT`] for a first delivery, then takes what is already buffered,
/// up to `max`. `true` when the consumer ended.
pub(crate) async fn next_batch(
    consumer: &mut lapin::Consumer,
    max: usize,
) -> (Vec<Delivery>, bool) {
    let mut batch = Vec::with_capacity(max);
    match tokio::time::timeout(IDLE_WAIT, consumer.next()).await {
        Err(_) => return (batch, false),
        Ok(None) => return (batch, true),
        Ok(Some(Err(error))) => {
            tracing::warn!(%error, "consumer failed");
            return (batch, true);
        }
        Ok(Some(Ok(delivery))) => batch.push(delivery),
    }
    while batch.len() < max {
        match consumer.next().now_or_never() {
            Some(Some(Ok(delivery))) => batch.push(delivery),
            Some(None) => return (batch, true),
            _ => break,
        }
    }
    (batch, false)
}

/// Closes a consumer's channel however [`Consumer::run`] ends: returned early with an
/// error, or its future dropped (a task aborted, a `select!` that took another branch).
///
/// Dropping the channel is not enough. A `basic_consume` dropped while it waited for the
/// broker's answer leaves the subscription on the broker, and `lapin`, when the answer
/// comes, keeps a consumer for it that holds the channel open: nobody reads it, and what
/// the broker sends it stays unacknowledged until the whole connection closes. Closing the
/// channel ends the subscription and returns those deliveries to the queue. The close is
/// spawned on the current tokio runtime: dropped outside one (or while it shuts down), the
/// channel stays open until its connection closes.
struct ClosedWhenDone(Channel);

impl Drop for ClosedWhenDone {
    fn drop(&mut self) {
        if !self.0.status().connected() {
            return; // closed already (a stop), or by the broker
        }
        // The close is a round trip: it runs on the runtime `run` ran on, after this.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let channel = self.0.clone();
            runtime.spawn(async move {
                let _ = channel.close(200, "consumer ended").await;
            });
        }
    }
}

/// Cancels the consumer and returns the deliveries it held to the queue: once the broker
/// confirmed the cancel no delivery can follow, so every unacknowledged one of the channel
/// goes back (tag 0, which also drops what `lapin` had buffered).
async fn cancel(channel: &Channel, tag: &str, tenant: &str) -> Result<(), BrokerError> {
    channel
        .basic_cancel(tag, BasicCancelOptions::default())
        .await
        .map_err(|e| rabbit("cancelling the consumer", Some(tenant))(e.into()))?;
    hand_back(channel, 0, tenant).await
}

/// Puts unacknowledged deliveries back into their queue, with one nack: every one up to
/// `through` (`0`: all of them). A batch that was not handled goes back through its last
/// delivery, not as "all" while the consumer runs: deliveries the broker sent before it
/// read the nack but that arrive after it was sent would go back too, yet still be handled
/// from the consumer's buffer, their acknowledgement refused (the channel closed) and their
/// copies delivered again. Delivery tags grow on a channel, so those are exactly the ones
/// after the batch's last, and they stay the consumer's.
async fn hand_back(channel: &Channel, through: u64, tenant: &str) -> Result<(), BrokerError> {
    let options = BasicNackOptions {
        multiple: true,
        requeue: true,
    };
    channel
        .basic_nack(through, options)
        .await
        .map_err(|e| rabbit("returning deliveries to the queue", Some(tenant))(e.into()))
}
