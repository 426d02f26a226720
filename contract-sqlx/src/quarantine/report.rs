//! What the quarantine operations return: stored messages, backlog scans, replay reports.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::payload::Rejection;

/// One quarantined message, as stored: one row per time a message was quarantined (a
/// message replayed and rejected again, or a new message under a reused id, gets a row of
/// its own; no row is ever overwritten).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QuarantinedMessage {
    /// Row id in the quarantine table, in quarantine order.
    pub id: i64,
    /// The tenant.
    pub tenant: String,
    /// The queue name (see [`super::QueueQuarantine::with_queue_name`]).
    pub queue: String,
    /// The message id in the queue (restored on replay).
    pub source_id: i64,
    /// A parsed copy of the payload as JSON text: `None` when the payload is not a JSON
    /// document the database's JSON type can hold (see `payload_raw`).
    pub payload: Option<String>,
    /// The payload bytes, verbatim: always stored.
    pub payload_raw: Vec<u8>,
    /// The queue's enqueue time, as text (RFC 3339 UTC on PostgreSQL and MySQL; the
    /// queue's own value on SQLite).
    pub enqueued_at: Option<String>,
    /// The queue's attempt counter when the message was quarantined.
    pub attempts: i64,
    /// The rejection reason (`too_large`, `not_utf8`, `invalid_json`, `contract_mismatch`).
    pub reason: String,
    /// The failing field path, if any (`items[2].price`).
    pub field_path: Option<String>,
    /// The rejection message.
    pub error: String,
    /// The name of the contract that rejected it.
    pub contract_name: String,
    /// The fingerprint of the contract that rejected it.
    pub contract_fingerprint: String,
    /// When it was quarantined (RFC 3339 UTC).
    pub quarantined_at: String,
    /// When it was replayed; `None` while it waits in quarantine.
    pub replayed_at: Option<String>,
    /// How many times this row was replayed (0 or 1).
    pub replay_count: i64,
}

/// Read from a quarantine table's row on any backend (columns named as the fields).
impl<'r, R> sqlx::FromRow<'r, R> for QuarantinedMessage
where
    R: sqlx::Row,
    &'r str: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn from_row(row: &'r R) -> sqlx::Result<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            tenant: row.try_get("tenant")?,
            queue: row.try_get("queue")?,
            source_id: row.try_get("source_id")?,
            payload: row.try_get("payload")?,
            payload_raw: row.try_get("payload_raw")?,
            enqueued_at: row.try_get("enqueued_at")?,
            attempts: row.try_get("attempts")?,
            reason: row.try_get("reason")?,
            field_path: row.try_get("field_path")?,
            error: row.try_get("error")?,
            contract_name: row.try_get("contract_name")?,
            contract_fingerprint: row.try_get("contract_fingerprint")?,
            quarantined_at: row.try_get("quarantined_at")?,
            replayed_at: row.try_get("replayed_at")?,
            replay_count: row.try_get("replay_count")?,
        })
    }
}

impl QuarantinedMessage {
    /// Whether the message still waits in quarantine (not replayed).
    #[must_use]
    pub fn is_waiting(&self) -> bool {
        self.replayed_at.is_none()
    }
}

/// The result of validating a tenant's pending messages without consuming them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BacklogScan {
    /// Messages read.
    pub total: usize,
    /// Messages the contract accepts.
    pub valid: usize,
    /// Rejected messages per reason (`contract_mismatch` → 3, ...).
    pub rejected_by_reason: BTreeMap<String, usize>,
}

impl BacklogScan {
    /// Messages the contract rejects.
    #[must_use]
    pub fn rejected(&self) -> usize {
        self.rejected_by_reason.values().sum()
    }
}

/// What [`super::QueueQuarantine::replay`] did. Every waiting message is in exactly one
/// place afterwards: back in the queue (counted in `replayed`) or still waiting in
/// quarantine (listed in `still_rejected` or `held`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReplayReport {
    /// Messages put back into the queue.
    pub replayed: u64,
    /// Waiting messages the contract still rejects: they stay in quarantine.
    pub still_rejected: Vec<StillRejected>,
    /// Waiting messages the contract accepts but that could not go back yet: they stay
    /// in quarantine, and a later replay tries again.
    pub held: Vec<Held>,
}

impl ReplayReport {
    /// Messages still waiting in quarantine after this replay.
    #[must_use]
    pub fn waiting(&self) -> usize {
        self.still_rejected.len() + self.held.len()
    }

    /// Still-rejected messages per reason (`contract_mismatch` → 3, ...).
    #[must_use]
    pub fn still_rejected_by_reason(&self) -> BTreeMap<String, usize> {
        let mut by_reason = BTreeMap::new();
        for message in &self.still_rejected {
            *by_reason
                .entry(message.rejection.reason.as_str().to_owned())
                .or_default() += 1;
        }
        by_reason
    }
}

/// A quarantined message the contract still rejects on replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StillRejected {
    /// Row id in the quarantine table.
    pub quarantine_id: i64,
    /// The message id in the queue.
    pub source_id: i64,
    /// Why the contract rejects it now.
    pub rejection: Rejection,
}

/// A quarantined message the contract accepts that replay could not put back yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Held {
    /// Row id in the quarantine table.
    pub quarantine_id: i64,
    /// The message id in the queue.
    pub source_id: i64,
    /// Why it waits.
    pub why: HeldReason,
}

/// Why an accepted message stays in quarantine on replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HeldReason {
    /// The queue holds a message with the same id (or the same value of another unique
    /// key): for example a message quarantined earlier under a reused id, replayed first.
    /// It goes back once the id is free.
    IdInUse,
    /// The queue refused the payload (for example a `jsonb` column and a `\u0000`
    /// escape): the database's message.
    QueueRefused {
        /// What the database said.
        error: String,
    },
}
