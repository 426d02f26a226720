//! [`QuarantineSink`]: one place where a rejected message goes, whatever it was read from.
//!
//! A consumer of a queue table moves poison with [`super::QueueQuarantine::quarantine`] in
//! its batch's transaction. A consumer of a broker cannot: the message is not a row. It
//! builds a [`QuarantineRecord`] (tenant, source, reason, field path, contract, raw bytes,
//! headers) and hands it to a sink: the quarantine table (`TableSink`) or a broker's
//! dead-letter destination (`broker::rabbitmq::DeadLetters`, `broker::nats::DeadLetters`).
//! The consumer acknowledges the message only after the sink said it is stored.

use std::collections::BTreeMap;
use std::fmt;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::payload::{PayloadContract, RejectReason, Rejection};

/// A rejected message, as any [`QuarantineSink`] stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QuarantineRecord {
    /// The tenant.
    pub tenant: String,
    /// Where the message was read from: a queue table, a RabbitMQ queue, a NATS subject.
    pub source: String,
    /// The message's id at its source (the key that makes storing it idempotent).
    pub message_id: String,
    /// Why the contract rejected it.
    pub reason: RejectReason,
    /// The failing field path (`items[2].price`), if any.
    pub field_path: Option<String>,
    /// The rejection, as a sentence.
    pub error: String,
    /// The name of the contract that rejected it.
    pub contract: String,
    /// The fingerprint of that contract (name and version).
    pub contract_fingerprint: String,
    /// The payload, verbatim.
    pub raw: Vec<u8>,
    /// The message's own headers (text ones), kept beside it.
    pub headers: BTreeMap<String, String>,
}

impl QuarantineRecord {
    /// The record of `raw`, read from `source` for `tenant` under `message_id`, rejected by
    /// `contract` with `rejection`.
    ///
    /// ```
    /// use contract_sqlx::payload::{PayloadContract, RejectReason};
    /// use contract_sqlx::quarantine::QuarantineRecord;
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Job { user_id: i64 }
    /// let contract = PayloadContract::<Job>::named("job");
    /// let raw = br#"{"user_id": "seven"}"#;
    /// let rejection = contract.check(raw).err().expect("poison");
    /// let record = QuarantineRecord::new("tenant_1", "jobs.tenant_1", "m-42", &contract, &rejection, raw)
    ///     .with_header("producer", "billing");
    /// assert_eq!(record.reason, RejectReason::ContractMismatch);
    /// assert_eq!(record.field_path.as_deref(), Some("user_id"));
    /// assert_eq!(record.contract, "job");
    /// ```
    #[must_use]
    pub fn new<T>(
        tenant: impl Into<String>,
        source: impl Into<String>,
        message_id: impl Into<String>,
        contract: &PayloadContract<T>,
        rejection: &Rejection,
        raw: &[u8],
    ) -> Self {
        Self {
            tenant: tenant.into(),
            source: source.into(),
            message_id: message_id.into(),
            reason: rejection.reason,
            field_path: rejection.path.clone(),
            error: rejection.message.clone(),
            contract: contract.name().to_owned(),
            contract_fingerprint: contract.fingerprint().to_owned(),
            raw: raw.to_vec(),
            headers: BTreeMap::new(),
        }
    }

    /// Adds one of the message's headers.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// The message id as the `source_id` of a quarantine table row: the id itself when it
    /// is an integer, otherwise a stable 63-bit digest of it (the same id always maps to
    /// the same value, so storing a record twice is recognised).
    #[must_use]
    pub fn source_id(&self) -> i64 {
        if let Ok(id) = self.message_id.parse::<i64>() {
            return id;
        }
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(self.message_id.as_bytes());
        let mut bytes = [0_u8; 8];
        bytes.copy_from_slice(&digest[..8]);
        i64::from_be_bytes(bytes) & i64::MAX
    }
}

impl fmt::Display for QuarantineRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "message {} of tenant {} from {} rejected by contract {} ({}",
            self.message_id, self.tenant, self.source, self.contract, self.reason
        )?;
        if let Some(path) = &self.field_path {
            write!(f, " at {path}")?;
        }
        write!(f, "): {}", self.error)
    }
}

/// A sink could not store rejected messages: nothing was acknowledged, so the broker (or
/// the queue) delivers them again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The write (or its confirmation) failed.
    #[error(
        "storing {count} rejected message(s) of tenant `{tenant}` in {sink} failed: {source}; they were not acknowledged and will be delivered again"
    )]
    Write {
        /// The sink, as [`QuarantineSink::describe`] says it.
        sink: String,
        /// The tenant.
        tenant: String,
        /// How many records were being stored.
        count: usize,
        /// What the database or the broker said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl SinkError {
    /// A failed write of `records` to `sink`.
    pub fn write(
        sink: &dyn QuarantineSink,
        records: &[QuarantineRecord],
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        SinkError::Write {
            sink: sink.describe(),
            tenant: records
                .first()
                .map(|r| r.tenant.clone())
                .unwrap_or_default(),
            count: records.len(),
            source: source.into(),
        }
    }
}

/// Where rejected messages are stored until someone fixes the contract or the producer.
///
/// `put` returns once every record is durably stored (committed, or confirmed by the
/// broker); only then may the consumer acknowledge the messages. Storing the same record
/// twice (a consumer killed between the store and the acknowledgement) must be harmless:
/// a sink either skips it (`TableSink`) or tags it with the message id so that readers
/// count it once (the broker dead-letter sinks).
pub trait QuarantineSink: Send + Sync {
    /// Stores `records`; returns how many were newly stored (duplicates a sink can
    /// recognise are not counted).
    fn put<'a>(&'a self, records: &'a [QuarantineRecord]) -> BoxFuture<'a, Result<u64, SinkError>>;

    /// The sink, as a person reads it (`quarantine table public.contract_quarantine`).
    fn describe(&self) -> String;

    /// `true` once this sink can never store anything again (the channel a RabbitMQ
    /// `DeadLetters` publishes on, closed by the broker): a broker consumer whose batch it
    /// failed then stops with the error instead of retrying the batch for ever, so that
    /// whoever runs it can build a new sink. `false` by default: a sink that fails for a
    /// while (a server away) recovers on a later try.
    fn is_closed(&self) -> bool {
        false
    }
}

#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
mod one_at_a_time;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
mod table_sink;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
pub use table_sink::TableSink;
