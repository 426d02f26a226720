//! RabbitMQ dead letters: the [`QuarantineSink`] that publishes them under publisher
//! confirms, reading them back (one per message id) and replaying them.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use futures_util::future::BoxFuture;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, ChannelState, Connection};
use serde::de::DeserializeOwned;

use super::{Topology, channel, rabbit, text};
use crate::broker::{BrokerError, BrokerReplay, DeadLetter, dead_letter_headers};
use crate::payload::PayloadContract;
use crate::quarantine::{QuarantineRecord, QuarantineSink, SinkError};

/// Publishes rejected messages to the [`Topology`]'s dead-letter exchange (routing key:
/// the tenant), persistent, with the headers of [`crate::broker`] and `mandatory` set, and
/// returns once the broker confirmed every one (a returned or nacked publish is an error,
/// and so is a confirm that does not come within [`DeadLetters::with_confirm_timeout`]).
#[derive(Debug, Clone)]
pub struct DeadLetters {
    channel: Channel,
    topology: Topology,
    confirm_timeout: Duration,
}

/// How long a dead-letter publish waits for the broker's confirm by default.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

impl DeadLetters {
    /// A sink on a channel of its own, in confirm mode.
    ///
    /// # Errors
    ///
    /// [`BrokerError::Broker`] when the channel cannot be opened.
    pub async fn new(connection: &Connection, topology: Topology) -> Result<Self, BrokerError> {
        let channel = channel(connection, "opening the dead-letter channel").await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| rabbit("enabling publisher confirms", None)(e.into()))?;
        Ok(Self {
            channel,
            topology,
            confirm_timeout: CONFIRM_TIMEOUT,
        })
    }

    /// How long a publish waits for the broker's confirm (30 s by default). A broker under
    /// a memory or disk alarm reads no publishing connection: the wait then fails, the
    /// batch goes back to the queue, and the consumer tries again (and can be stopped in
    /// between) instead of waiting for the alarm to end.
    #[must_use]
    pub fn with_confirm_timeout(mut self, timeout: Duration) -> Self {
        self.confirm_timeout = timeout;
        self
    }
}

/// The headers of a dead-lettered record.
fn headers(record: &QuarantineRecord) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in dead_letter_headers(record) {
        table.insert(
            ShortString::from(name),
            AMQPValue::LongString(value.as_ref().into()),
        );
    }
    table
}

impl QuarantineSink for DeadLetters {
    fn put<'a>(&'a self, records: &'a [QuarantineRecord]) -> BoxFuture<'a, Result<u64, SinkError>> {
        Box::pin(async move {
            let fail =
                |e: Box<dyn std::error::Error + Send + Sync>| SinkError::write(self, records, e);
            let exchange = self.topology.dead_letter_exchange();
            let mut confirms = Vec::with_capacity(records.len());
            for record in records {
                let properties = BasicProperties::default()
                    .with_message_id(record.message_id.as_str().into())
                    .with_delivery_mode(2)
                    .with_headers(headers(record));
                let options = BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                };
                let confirm = self
                    .channel
                    .basic_publish(&exchange, &record.tenant, options, &record.raw, properties)
                    .await
                    .map_err(|e| fail(e.into()))?;
                confirms.push(confirm);
            }
            let deadline = tokio::time::Instant::now() + self.confirm_timeout;
            for confirm in confirms {
                let confirmed = tokio::time::timeout_at(deadline, confirm)
                    .await
                    .map_err(|_| {
                        fail(format!(
                            "no publisher confirm within {} ms (is the broker under a memory or disk alarm?)",
                            self.confirm_timeout.as_millis()
                        )
                        .into())
                    })?;
                match confirmed.map_err(|e| fail(e.into()))? {
                    Confirmation::Ack(None) => {}
                    Confirmation::Ack(Some(_)) => {
                        return Err(fail(
                            "the dead-letter queue is not bound (message returned)".into(),
                        ));
                    }
                    Confirmation::Nack(_) => {
                        return Err(fail("the broker nacked the publish".into()));
                    }
                    Confirmation::NotRequested => {
                        return Err(fail("publisher confirms are off".into()));
                    }
                }
            }
            for record in records {
                crate::guard::metrics::record_messages(&record.source, "quarantined", 1);
            }
            Ok(records.len() as u64)
        })
    }

    fn describe(&self) -> String {
        format!(
            "RabbitMQ exchange `{}`",
            self.topology.dead_letter_exchange()
        )
    }

    /// `true` once the broker closed the sink's channel (a publish to a deleted exchange,
    /// say, or over the broker's size limit): a closed channel never opens again.
    fn is_closed(&self) -> bool {
        matches!(
            self.channel.status().state(),
            ChannelState::Closing | ChannelState::Closed | ChannelState::Error
        )
    }
}

/// A header as text.
fn header(headers: &BTreeMap<ShortString, AMQPValue>, name: &str) -> Option<String> {
    headers.get(&ShortString::from(name)).and_then(text)
}

/// Reads a delivery's dead-letter headers.
fn dead_letter(delivery: &lapin::message::Delivery) -> DeadLetter {
    let empty = BTreeMap::new();
    let h = delivery
        .properties
        .headers()
        .as_ref()
        .map_or(&empty, FieldTable::inner);
    DeadLetter::from_headers(|name| header(h, name), delivery.data.clone())
}

/// Every message of `tenant`'s dead-letter queue, read with `basic.get` on a channel of
/// its own and left in place (the channel closes unacknowledged). Copies sharing a
/// [`MESSAGE_ID`](crate::broker::MESSAGE_ID) are one message: the second element counts the extra copies.
///
/// # Errors
///
/// [`BrokerError::Broker`] when the queue cannot be read.
pub async fn dead_letters(
    connection: &Connection,
    topology: &Topology,
    tenant: &str,
) -> Result<(Vec<DeadLetter>, u64), BrokerError> {
    let channel = channel(connection, "opening a channel").await?;
    let deliveries = get_all(&channel, &topology.dead_letter_queue(tenant), tenant).await?;
    let _ = channel.close(200, "read").await;
    let mut seen = HashSet::new();
    let mut letters = Vec::new();
    let mut duplicates = 0;
    for delivery in &deliveries {
        let letter = dead_letter(delivery);
        if seen.insert(letter.message_id.clone()) {
            letters.push(letter);
        } else {
            duplicates += 1;
        }
    }
    Ok((letters, duplicates))
}

async fn get_all(
    channel: &Channel,
    queue: &str,
    tenant: &str,
) -> Result<Vec<lapin::message::Delivery>, BrokerError> {
    let mut deliveries = Vec::new();
    loop {
        let got = channel
            .basic_get(queue, BasicGetOptions { no_ack: false })
            .await
            .map_err(|e| rabbit(format!("reading queue {queue}"), Some(tenant))(e.into()))?;
        match got {
            Some(message) => deliveries.push(message.delivery),
            None => return Ok(deliveries),
        }
    }
}

/// Replays `tenant`'s dead letters that `contract` now accepts: each is re-published to
/// the tenant's queue (same message id and headers) under publisher confirms, and only
/// after the confirm is it (with any extra copy of the same id) removed from the
/// dead-letter queue. The rest stays there, with the reason now.
///
/// # Errors
///
/// [`BrokerError::Broker`] when a read or a publish fails: what was not confirmed stays
/// in the dead-letter queue.
pub async fn replay<T: DeserializeOwned>(
    connection: &Connection,
    topology: &Topology,
    tenant: &str,
    contract: &PayloadContract<T>,
) -> Result<BrokerReplay, BrokerError> {
    let channel = channel(connection, "opening a channel").await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| rabbit("enabling publisher confirms", Some(tenant))(e.into()))?;
    let deliveries = get_all(&channel, &topology.dead_letter_queue(tenant), tenant).await?;
    let mut copies: BTreeMap<String, Vec<&lapin::message::Delivery>> = BTreeMap::new();
    for delivery in &deliveries {
        copies
            .entry(dead_letter(delivery).message_id)
            .or_default()
            .push(delivery);
    }
    let mut report = BrokerReplay::default();
    let queue = topology.queue(tenant);
    for (id, group) in copies {
        let first = group[0];
        if let Err(rejection) = contract.check(&first.data) {
            report.still_rejected.push((id, rejection));
            continue;
        }
        let properties = first.properties.clone();
        let confirm = channel
            .basic_publish(
                "",
                &queue,
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &first.data,
                properties,
            )
            .await
            .map_err(|e| rabbit(format!("re-publishing to {queue}"), Some(tenant))(e.into()))?
            .await
            .map_err(|e| rabbit(format!("re-publishing to {queue}"), Some(tenant))(e.into()))?;
        if !matches!(confirm, Confirmation::Ack(None)) {
            return Err(rabbit(format!("re-publishing to {queue}"), Some(tenant))(
                "not confirmed".into(),
            ));
        }
        for copy in &group {
            channel
                .basic_ack(copy.delivery_tag, BasicAckOptions::default())
                .await
                .map_err(|e| rabbit("removing a replayed dead letter", Some(tenant))(e.into()))?;
        }
        report.replayed += 1;
        report.duplicates_removed += group.len() as u64 - 1;
    }
    // What was not acknowledged goes back to the dead-letter queue with the channel.
    let _ = channel.close(200, "replayed").await;
    Ok(report)
}
