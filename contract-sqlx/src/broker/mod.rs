//! The gate and the payload contract in front of a message broker: RabbitMQ
//! (`broker::rabbitmq`, feature `rabbitmq`) and NATS JetStream (`broker::nats`, feature
//! `nats`); each module is documented only when its feature is on (docs.rs: both).
//!
//! A broker consumer reads one tenant's messages, asks the guard's gate before each batch,
//! checks each payload with the consumer's [`PayloadContract`](crate::payload::PayloadContract),
//! hands the accepted ones to a [`Handler`] and stores the rejected ones in a
//! [`QuarantineSink`](crate::quarantine::QuarantineSink) (the broker's dead-letter
//! destination, with readable headers), and acknowledges only then:
//!
//! * **Paused tenant: nothing is touched.** Its consumer stops (RabbitMQ: the consumer is
//!   cancelled; JetStream: the pull stops). Its messages stay in the broker, not
//!   redelivered in a loop and not dead-lettered; the backlog monitor counts them.
//! * **Ack after commit.** The handler writes in its own transaction, keyed by the
//!   message id so that a redelivered message is not written twice, and returns once it
//!   committed; the batch is acknowledged after that. A consumer killed in between gets
//!   the batch again and the handler skips what it wrote.
//! * **Poison is dead-lettered once, readably.** It is published with the headers
//!   below under the broker's confirmation, then acknowledged. A consumer killed between
//!   the two publishes a second copy, with the same [`MESSAGE_ID`] header: readers of
//!   the dead letters count one message per id (see each broker's `dead_letters`).

// Without a broker feature, only the shared types are compiled.
#![cfg_attr(not(any(feature = "rabbitmq", feature = "nats")), allow(dead_code))]

use std::borrow::Cow;

use futures_util::future::BoxFuture;

use crate::quarantine::QuarantineRecord;

#[cfg(feature = "rabbitmq")]
#[cfg_attr(docsrs, doc(cfg(feature = "rabbitmq")))]
pub mod rabbitmq;

#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub mod nats;

/// Header of a dead-lettered message: the rejection reason (`contract_mismatch`, …).
pub const REASON: &str = "x-contract-reason";
/// Header: the rejection as a sentence.
pub const ERROR: &str = "x-contract-error";
/// Header: the failing field path (`items[2].price`), when there is one.
pub const FIELD_PATH: &str = "x-contract-field-path";
/// Header: the name of the contract that rejected the message.
pub const CONTRACT: &str = "x-contract-contract";
/// Header: the tenant.
pub const TENANT: &str = "x-contract-tenant";
/// Header: where the message was read from (the RabbitMQ queue, the NATS subject).
pub const SOURCE: &str = "x-contract-source";
/// Header: the original routing key (RabbitMQ) or subject (NATS).
pub const ORIGINAL_ROUTING_KEY: &str = "x-contract-original-routing-key";
/// Header: the message id, which makes the dead-letter copy idempotent for its readers.
pub const MESSAGE_ID: &str = "x-contract-message-id";

/// An error a [`Handler`] returns (its database's, usually).
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// A message the contract accepted, with the id that keys its write.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Accepted<T> {
    /// The message id (RabbitMQ: the `message_id` property; JetStream: the
    /// [`MESSAGE_ID`] header of a replayed message, else `Nats-Msg-Id`, else the stream
    /// sequence). Write it with the message and skip ids written before.
    pub message_id: String,
    /// The parsed payload.
    pub value: T,
}

/// What the consumer does with a tenant's accepted messages.
pub trait Handler<T>: Send + Sync + 'static {
    /// Writes `batch` for `tenant` and returns once the write committed. Must be
    /// idempotent on [`Accepted::message_id`]: a batch is delivered again when the
    /// consumer dies before acknowledging it. An error leaves the batch unacknowledged;
    /// it is delivered again after a short back-off.
    fn handle<'a>(
        &'a self,
        tenant: &'a str,
        batch: &'a [Accepted<T>],
    ) -> BoxFuture<'a, Result<(), HandlerError>>;
}

/// A broker call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The broker could not be reached or refused the call.
    #[error("{broker} refused {action}{}: {source}", tenant_suffix(.tenant))]
    Broker {
        /// `RabbitMQ` or `NATS`.
        broker: &'static str,
        /// What was being done (`declaring queue orders.tenant_1`).
        action: String,
        /// The tenant concerned, if one.
        tenant: Option<String>,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A name cannot be used for a queue, a subject or a tenant.
    #[error("`{name}` cannot be used as {what}: {why}")]
    Name {
        /// The name.
        name: String,
        /// What it was for.
        what: &'static str,
        /// Why not.
        why: &'static str,
    },
}

impl BrokerError {
    pub(crate) fn broker(
        broker: &'static str,
        action: impl Into<String>,
        tenant: Option<&str>,
    ) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> Self {
        let action = action.into();
        let tenant = tenant.map(str::to_owned);
        move |source| BrokerError::Broker {
            broker,
            action,
            tenant,
            source,
        }
    }
}

fn tenant_suffix(tenant: &Option<String>) -> String {
    tenant
        .as_ref()
        .map(|t| format!(" for tenant `{t}`"))
        .unwrap_or_default()
}

/// A dead-lettered message as read back: its payload and the headers the consumer wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The [`MESSAGE_ID`] header.
    pub message_id: String,
    /// The tenant.
    pub tenant: String,
    /// The reason (`contract_mismatch`, …).
    pub reason: String,
    /// The rejection as a sentence.
    pub error: String,
    /// The failing field path, if any.
    pub field_path: Option<String>,
    /// The contract's name.
    pub contract: String,
    /// The original routing key or subject.
    pub original_routing_key: String,
    /// The payload, verbatim.
    pub payload: Vec<u8>,
}

impl DeadLetter {
    /// A dead letter read back from its headers (`header(name)`: the header's text, if
    /// present) and its payload: the inverse of [`dead_letter_headers`], for every broker.
    pub(crate) fn from_headers(header: impl Fn(&str) -> Option<String>, payload: Vec<u8>) -> Self {
        let get = |name| header(name).unwrap_or_default();
        Self {
            message_id: get(MESSAGE_ID),
            tenant: get(TENANT),
            reason: get(REASON),
            error: get(ERROR),
            field_path: header(FIELD_PATH),
            contract: get(CONTRACT),
            original_routing_key: get(ORIGINAL_ROUTING_KEY),
            payload,
        }
    }
}

/// The most bytes of a record's own headers a dead letter carries (names, values and 6
/// bytes of encoding each): the rest are left out. A header frame above RabbitMQ's
/// `frame_max` (131,072 bytes by default) closes the whole connection, every tenant's
/// consumer with it, and a poison message redelivered after the restart would close it
/// again. The headers the consumers add themselves (the original routing key, the NATS
/// dedup key `Nats-Msg-Id`) are not counted: they are never left out. A producer's
/// `x-contract-*` headers are counted like any other of the message's own.
pub(crate) const MAX_COPIED_HEADER_BYTES: usize = 16 * 1024;

/// The most characters of one of the `x-contract-*` texts a dead letter carries (a
/// [`Rejection`](crate::payload::Rejection)'s are shorter; a record's fields are public).
/// Not the message id: it is the dead letter's identity, and cutting it could make two
/// messages one.
pub(crate) const MAX_HEADER_TEXT_CHARS: usize = 4 * 1024;

/// The headers a dead letter sets itself, whatever the record's headers say.
const DEAD_LETTER_OWN: [&str; 7] = [
    REASON, ERROR, FIELD_PATH, CONTRACT, TENANT, SOURCE, MESSAGE_ID,
];

/// Whether a record's header is one the consumers set themselves: the original routing
/// key or subject, and the NATS dedup key, each by its exact name (one header each, at
/// most [`MAX_HEADER_TEXT_CHARS`] characters). Any other name, `x-contract-*` or another
/// spelling of `Nats-Msg-Id` too (AMQP names are case-sensitive), may be the producer's,
/// and is copied (or left out) as the message's own.
fn set_by_consumer(name: &str) -> bool {
    name == ORIGINAL_ROUTING_KEY || name == "Nats-Msg-Id"
}

/// Whether a dead letter's header is this library's: one the consumers set or one the dead
/// letter sets itself, not a copy of the message's own.
pub(crate) fn is_ours(name: &str) -> bool {
    set_by_consumer(name) || DEAD_LETTER_OWN.contains(&name)
}

/// The headers a dead-lettered record is published with, in order: the record's own
/// headers (up to [`MAX_COPIED_HEADER_BYTES`], in name order, then the ones the consumers
/// set), then the `x-contract-*` ones above, each text but the message id at most
/// [`MAX_HEADER_TEXT_CHARS`] characters, control characters escaped. A record's header
/// named like one of those (a producer's, or an earlier dead letter's on a replayed
/// message) is not copied: a field path the rejection does not have is not made up. Every
/// broker's dead-letter sink writes these.
pub(crate) fn dead_letter_headers(record: &QuarantineRecord) -> Vec<(&str, Cow<'_, str>)> {
    let capped = |text| crate::payload::printable(text, MAX_HEADER_TEXT_CHARS);
    let mut budget = MAX_COPIED_HEADER_BYTES;
    let mut headers: Vec<(&str, Cow<'_, str>)> = Vec::with_capacity(record.headers.len() + 8);
    for (name, value) in record.headers.iter().filter(|(name, _)| !is_ours(name)) {
        let Some(left) = budget.checked_sub(name.len() + value.len() + 6) else {
            continue;
        };
        budget = left;
        headers.push((name.as_str(), Cow::Borrowed(value.as_str())));
    }
    for (name, value) in record
        .headers
        .iter()
        .filter(|(name, _)| set_by_consumer(name))
    {
        headers.push((name.as_str(), capped(value)));
    }
    headers.extend([
        (REASON, Cow::Borrowed(record.reason.as_str())),
        (ERROR, capped(&record.error)),
    ]);
    if let Some(path) = &record.field_path {
        headers.push((FIELD_PATH, capped(path)));
    }
    headers.extend([
        (CONTRACT, capped(&record.contract)),
        (TENANT, Cow::Borrowed(record.tenant.as_str())),
        (SOURCE, capped(&record.source)),
        (MESSAGE_ID, Cow::Borrowed(record.message_id.as_str())),
    ]);
    headers
}

impl std::fmt::Display for DeadLetter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} ({}) rejected by {}: {}",
            self.message_id, self.tenant, self.original_routing_key, self.contract, self.error
        )
    }
}

/// What a replay of dead letters did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerReplay {
    /// Messages the contract now accepts, re-published (confirmed) and removed from the
    /// dead letters.
    pub replayed: u64,
    /// Extra copies of a replayed message (a consumer killed between its dead-letter
    /// publish and its ack): removed with it.
    pub duplicates_removed: u64,
    /// Messages the contract still rejects: left in the dead letters, with the reason now.
    pub still_rejected: Vec<(String, crate::payload::Rejection)>,
}

/// The URL without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// A stable id for a message that carries none: a digest of its source and bytes.
pub(crate) fn digest_id(source: &str, payload: &[u8]) -> String {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    hasher.update(source.as_bytes());
    hasher.update([0]);
    hasher.update(payload);
    let digest = hasher.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// What a broker consumer asks before each batch: the guard's gate.
pub trait TenantGate: Send + Sync + 'static {
    /// Open with a permit, or paused.
    fn gate(&self, tenant: &str) -> crate::Gate;

    /// The gate of one of the tenant's queues (a RabbitMQ queue, a NATS subject): paused
    /// also by an operator pause of that queue alone. The consumers ask this one; by
    /// default it is the tenant's gate.
    fn gate_queue(&self, tenant: &str, queue: &str) -> crate::Gate {
        let _ = queue;
        self.gate(tenant)
    }
}

impl<DB: crate::control::ControlStore> TenantGate for crate::Guard<DB> {
    fn gate(&self, tenant: &str) -> crate::Gate {
        crate::Guard::gate(self, tenant)
    }

    fn gate_queue(&self, tenant: &str, queue: &str) -> crate::Gate {
        crate::Guard::gate_queue(self, tenant, queue)
    }
}

#[cfg(test)]
mod tests {
    use super::{
        ERROR, FIELD_PATH, MAX_COPIED_HEADER_BYTES, MAX_HEADER_TEXT_CHARS, MESSAGE_ID, REASON,
        dead_letter_headers,
    };
    use crate::payload::PayloadContract;
    use crate::quarantine::QuarantineRecord;

    /// A poison message whose own headers (or whose record's texts) are huge still makes a
    /// dead letter whose headers fit well inside a RabbitMQ frame and a NATS message.
    #[test]
    fn a_dead_letter_s_headers_stay_small_whatever_the_message_carried() {
        let contract = PayloadContract::<i64>::named("n");
        let rejection = contract.check(b"\"x\"").expect_err("poison");
        let mut record = QuarantineRecord::new("t1", "q", "m-1", &contract, &rejection, b"\"x\"")
            .with_header("a-small", "kept")
            .with_header("b-huge", "x".repeat(140_000))
            .with_header("c-small", "kept too");
        record.error = "e".repeat(100_000);
        record.message_id = "m".repeat(10_000);
        // Small headers sorted before ours fill the budget to the last bytes; ours must not
        // lose to it.
        for i in 0..2_000 {
            record = record.with_header(format!("d-{i:04}"), "12345678");
        }
        record = record
            .with_header("x-contract-original-routing-key", "jobs.t1")
            .with_header("Nats-Msg-Id", "dead-letter:s:1@abc");
        let headers = dead_letter_headers(&record);
        let total: usize = headers.iter().map(|(n, v)| n.len() + v.len()).sum();
        assert!(
            total < MAX_COPIED_HEADER_BYTES + 4 * MAX_HEADER_TEXT_CHARS,
            "{total} bytes of headers"
        );
        let names: Vec<&str> = headers.iter().map(|(n, _)| *n).collect();
        assert!(
            names.contains(&"a-small") && names.contains(&"c-small"),
            "{} names",
            names.len()
        );
        assert!(!names.contains(&"b-huge"), "{} names", names.len());
        assert!(
            names.contains(&REASON) && names.contains(&ERROR),
            "{} names",
            names.len()
        );
        assert!(
            names.contains(&"x-contract-original-routing-key") && names.contains(&"Nats-Msg-Id"),
            "the consumers' own headers are never left out: {:?}",
            names
                .iter()
                .filter(|n| !n.starts_with("d-"))
                .collect::<Vec<_>>()
        );
        let id = headers
            .iter()
            .find(|(n, _)| *n == MESSAGE_ID)
            .map(|(_, v)| v.len());
        assert_eq!(id, Some(10_000), "the message id is never cut");
    }

    /// A producer's headers named `x-contract-*` are the message's own: counted against
    /// the budget, and never in place of the dead letter's. Each was passed as one the
    /// consumers set: forty such headers of control characters (escaped to six bytes each)
    /// made a header frame of about 1 MB, over RabbitMQ's `frame_max`, which closed the
    /// sink's connection on every redelivery of the message (helper-65); and a producer's
    /// field path stood in for a rejection that has none.
    #[test]
    fn a_producer_s_x_contract_headers_are_its_own_not_the_dead_letter_s() {
        let contract = PayloadContract::<i64>::named("n");
        let rejection = contract.check(b"{").expect_err("broken JSON");
        assert_eq!(rejection.path, None);
        let mut record = QuarantineRecord::new("t1", "q", "m-1", &contract, &rejection, b"{")
            .with_header("x-contract-field-path", "made.up")
            .with_header("x-contract-reason", "made up");
        for i in 0..40 {
            record = record.with_header(format!("x-contract-pad-{i:02}"), "\u{1}".repeat(4096));
        }
        // Other spellings of the NATS dedup key are the producer's too (helper-66).
        for name in ["nats-msg-id", "NATS-MSG-ID", "Nats-msg-id", "nats-Msg-Id"] {
            record = record.with_header(name, "\u{1}".repeat(4096));
        }
        let headers = dead_letter_headers(&record);
        let total: usize = headers.iter().map(|(n, v)| n.len() + v.len()).sum();
        assert!(
            total <= MAX_COPIED_HEADER_BYTES + 4 * MAX_HEADER_TEXT_CHARS,
            "{total} bytes of headers"
        );
        assert!(
            !headers.iter().any(|(n, _)| *n == FIELD_PATH),
            "no field path the rejection does not have"
        );
        let reasons: Vec<&str> = headers
            .iter()
            .filter(|(n, _)| *n == REASON)
            .map(|(_, v)| v.as_ref())
            .collect();
        assert_eq!(
            reasons,
            [record.reason.as_str()],
            "the dead letter's reason only"
        );
    }
}
