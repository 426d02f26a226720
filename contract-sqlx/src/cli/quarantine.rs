//! `contract quarantine list|show|replay`: the poison messages consumers moved aside.
//!
//! Replay here is unchecked: the message goes back into its queue and the consumer checks
//! it again against its payload contract when it claims it (quarantining it again if it
//! is still rejected, so nothing is lost). A replay that re-checks before moving needs the
//! consumer's `PayloadContract`, i.e. the consumer's code: `QueueQuarantine::replay`.

use std::fmt;

use serde::Serialize;

use super::args::{QuarantineCommand, QuarantineTable};
use super::connect::Db;
use super::error::CliError;
use super::render;
use crate::control::ControlPlane;
use crate::quarantine::QuarantinedMessage;

use super::quarantine_sql as sql;

/// One quarantined message as the CLI shows it (the payload as text, lossily decoded).
#[derive(Debug, Serialize)]
pub(crate) struct Message {
    pub id: i64,
    pub tenant: String,
    pub queue: String,
    pub source_id: i64,
    pub reason: String,
    pub field_path: Option<String>,
    pub error: String,
    pub contract_name: String,
    pub contract_fingerprint: String,
    pub attempts: i64,
    pub enqueued_at: Option<String>,
    pub quarantined_at: String,
    pub replayed_at: Option<String>,
    /// The payload bytes as UTF-8 text (invalid sequences replaced).
    pub payload: String,
    /// The payload's size in bytes.
    pub payload_bytes: usize,
}

impl From<QuarantinedMessage> for Message {
    fn from(m: QuarantinedMessage) -> Self {
        Self {
            payload: String::from_utf8_lossy(&m.payload_raw).into_owned(),
            payload_bytes: m.payload_raw.len(),
            id: m.id,
            tenant: m.tenant,
            queue: m.queue,
            source_id: m.source_id,
            reason: m.reason,
            field_path: m.field_path,
            error: m.error,
            contract_name: m.contract_name,
            contract_fingerprint: m.contract_fingerprint,
            attempts: m.attempts,
            enqueued_at: m.enqueued_at,
            quarantined_at: m.quarantined_at,
            replayed_at: m.replayed_at,
        }
    }
}

/// What `contract quarantine list` prints.
#[derive(Debug, Serialize)]
pub(crate) struct Listing {
    pub messages: Vec<Message>,
    pub waiting: usize,
}

/// What `contract quarantine show` prints.
#[derive(Debug, Serialize)]
pub(crate) struct Shown {
    pub message: Message,
}

/// What `contract quarantine replay` prints.
#[derive(Debug, Serialize)]
pub(crate) struct Replayed {
    pub id: i64,
    pub tenant: String,
    /// The queue table it went back into.
    pub queue_table: String,
    /// `true` when it went back; `false` when the queue holds its id already (it waits).
    pub replayed: bool,
    /// Replay here does not re-check the payload: the consumer does when it claims it.
    pub checked: bool,
}

pub(crate) async fn run(
    db: &Db,
    plane: &ControlPlane,
    command: &QuarantineCommand,
    json: bool,
) -> Result<u8, CliError> {
    match command {
        QuarantineCommand::List(args) => {
            let mut messages =
                sql::read(db, plane, &args.table, args.tenant.as_deref(), None).await?;
            if !args.all {
                messages.retain(QuarantinedMessage::is_waiting);
            }
            let waiting = messages.iter().filter(|m| m.is_waiting()).count();
            let messages = messages.into_iter().map(Message::from).collect();
            render::emit(json, &Listing { messages, waiting });
        }
        QuarantineCommand::Show(args) => {
            let message = find(db, plane, &args.table, args.tenant.as_deref(), args.id).await?;
            render::emit(
                json,
                &Shown {
                    message: message.into(),
                },
            );
        }
        QuarantineCommand::Replay(args) => {
            let message = find(db, plane, &args.table, args.tenant.as_deref(), args.id).await?;
            if !message.is_waiting() {
                return Err(CliError::NotFound(format!(
                    "quarantined message {} of tenant {} was replayed already ({})",
                    message.id,
                    message.tenant,
                    message.replayed_at.as_deref().unwrap_or("")
                )));
            }
            let queue_table = args
                .queue_table
                .clone()
                .unwrap_or_else(|| message.queue.clone());
            let replayed = sql::replay(
                db,
                plane,
                &args.table,
                &message,
                &queue_table,
                args.payload_type,
            )
            .await?;
            render::emit(
                json,
                &Replayed {
                    id: message.id,
                    tenant: message.tenant,
                    queue_table,
                    replayed,
                    checked: false,
                },
            );
        }
    }
    Ok(0)
}

/// The one row with this id (of `tenant`, which MySQL and SQLite need: ids are per tenant).
async fn find(
    db: &Db,
    plane: &ControlPlane,
    table: &QuarantineTable,
    tenant: Option<&str>,
    id: i64,
) -> Result<QuarantinedMessage, CliError> {
    let mut found = sql::read(db, plane, table, tenant, Some(id)).await?;
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(CliError::NotFound(format!(
            "no quarantined message with id {id}{} (`contract quarantine list --all` lists them)",
            tenant
                .map(|t| format!(" in tenant {t}"))
                .unwrap_or_default()
        ))),
        _ => Err(CliError::NotFound(format!(
            "id {id} is in the quarantine of several tenants ({}): pass --tenant",
            render::list(
                &found.iter().map(|m| m.tenant.clone()).collect::<Vec<_>>(),
                8
            )
        ))),
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} {} queue {} message {}: {}",
            self.id, self.tenant, self.queue, self.source_id, self.reason
        )?;
        if let Some(path) = &self.field_path {
            write!(f, " at {path}")?;
        }
        write!(f, " ({}); quarantined {}", self.error, self.quarantined_at)?;
        if let Some(at) = &self.replayed_at {
            write!(f, ", replayed {at}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Listing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for message in &self.messages {
            writeln!(f, "{message}")?;
        }
        write!(
            f,
            "{} messages, {} waiting",
            self.messages.len(),
            self.waiting
        )
    }
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.message;
        writeln!(f, "{m}")?;
        writeln!(
            f,
            "  rejected by contract {} (fingerprint {})",
            m.contract_name, m.contract_fingerprint
        )?;
        if let Some(at) = &m.enqueued_at {
            writeln!(f, "  enqueued {at}, {} attempts", m.attempts)?;
        }
        write!(f, "  payload ({} bytes): {}", m.payload_bytes, m.payload)
    }
}

impl fmt::Display for Replayed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.replayed {
            write!(
                f,
                "message #{} of tenant {} is back in {} (unchecked: the consumer checks it against its payload \
                 contract when it claims it, and quarantines it again if it is still rejected)",
                self.id, self.tenant, self.queue_table
            )
        } else {
            write!(
                f,
                "message #{} of tenant {} stays in quarantine: {} holds its id already; replay it once that \
                 message is consumed",
                self.id, self.tenant, self.queue_table
            )
        }
    }
}
