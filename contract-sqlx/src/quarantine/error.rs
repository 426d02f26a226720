//! What a failed quarantine operation says: which table is missing, or what the database
//! refused, always naming the tenant and the queue.

use std::fmt;

/// The quarantine operation that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum QuarantineAction {
    /// [`QueueQuarantine::ensure_table`](super::QueueQuarantine::ensure_table).
    CreateTable,
    /// [`QueueQuarantine::quarantine`](super::QueueQuarantine::quarantine).
    Quarantine,
    /// [`QueueQuarantine::replay`](super::QueueQuarantine::replay).
    Replay,
    /// [`QueueQuarantine::list`](super::QueueQuarantine::list).
    List,
    /// [`QueueQuarantine::backlog_scan`](super::QueueQuarantine::backlog_scan).
    BacklogScan,
}

impl QuarantineAction {
    /// What was being done, as a phrase (`quarantining rejected messages`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            QuarantineAction::CreateTable => "creating the quarantine table",
            QuarantineAction::Quarantine => "quarantining rejected messages",
            QuarantineAction::Replay => "replaying quarantined messages",
            QuarantineAction::List => "listing quarantined messages",
            QuarantineAction::BacklogScan => "scanning the queue backlog",
        }
    }

    /// What state the failure left behind; `transaction_ended`: the failure ended the
    /// caller's transaction too (see [`QuarantineError::Database`]).
    const fn outcome(self, transaction_ended: bool) -> &'static str {
        match self {
            QuarantineAction::CreateTable => "the table was not created or upgraded",
            QuarantineAction::Quarantine if transaction_ended => {
                "nothing was moved, and the caller's transaction ended with the move: the database rolled it back whole (as MySQL does to a deadlock's victim) or its connection failed; roll it back and run the batch again"
            }
            QuarantineAction::Quarantine => {
                "nothing was moved, and the caller's transaction is still usable"
            }
            QuarantineAction::Replay => {
                "every message is either back in the queue or still waiting in quarantine"
            }
            QuarantineAction::List | QuarantineAction::BacklogScan => "nothing was changed",
        }
    }
}

impl fmt::Display for QuarantineAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A quarantine operation failed. Reached through [`crate::Error::Quarantine`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuarantineError {
    /// The quarantine table does not exist.
    #[error(
        "{action} for tenant `{tenant}`, queue `{queue}` failed: the quarantine table {table} does not exist; create it with `QueueQuarantine::ensure_table` (on MySQL and SQLite once per tenant)"
    )]
    QuarantineTableMissing {
        /// What was being done.
        action: QuarantineAction,
        /// The tenant.
        tenant: String,
        /// The queue name.
        queue: String,
        /// The quarantine table, quoted as in the SQL.
        table: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// The tenant's queue table does not exist.
    #[error(
        "{action} for tenant `{tenant}`, queue `{queue}` failed: the queue table {table} does not exist; check the tenant name and the `QueueTable`"
    )]
    QueueTableMissing {
        /// What was being done.
        action: QuarantineAction,
        /// The tenant.
        tenant: String,
        /// The queue name.
        queue: String,
        /// The queue table, quoted as in the SQL.
        table: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// The database refused a statement, or the connection failed.
    #[error("{action} for tenant `{tenant}`, queue `{queue}` failed: {problem}; {}", .action.outcome(*.transaction_ended))]
    Database {
        /// What was being done.
        action: QuarantineAction,
        /// The tenant.
        tenant: String,
        /// The queue name.
        queue: String,
        /// What went wrong, in words (the database's own message, or the connection error).
        problem: String,
        /// For [`QuarantineAction::Quarantine`]: the failure ended the caller's transaction
        /// as well, not only the move's savepoint (MySQL rolls a deadlock's victim back
        /// whole; or the connection failed). The caller must roll it back: committing it
        /// would commit nothing of the batch. `false` for the other actions, which run in
        /// transactions of their own.
        transaction_ended: bool,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
}

impl QuarantineError {
    /// The operation that failed.
    #[must_use]
    pub fn action(&self) -> QuarantineAction {
        match self {
            QuarantineError::QuarantineTableMissing { action, .. }
            | QuarantineError::QueueTableMissing { action, .. }
            | QuarantineError::Database { action, .. } => *action,
        }
    }
}

impl From<QuarantineError> for crate::Error {
    fn from(error: QuarantineError) -> Self {
        crate::Error::Quarantine(Box::new(error))
    }
}

/// The database's own words for `error`: its message and code for a refused statement,
/// the cause for a failed connection.
pub(crate) fn problem(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!(
                "the database refused a statement: {} (code {code})",
                db.message()
            ),
            None => format!("the database refused a statement: {}", db.message()),
        },
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => format!("the connection to the database failed ({error})"),
        other => other.to_string(),
    }
}

/// Which table a "no such table" error was about, found by looking (not by parsing the
/// driver's message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missing {
    Quarantine,
    Queue,
}
