//! Quarantine of poison messages.
//!
//! A message whose payload the consumer's [`PayloadContract`] rejects is moved out of the
//! tenant's queue into a quarantine table, with its bytes verbatim, the reason, the failing
//! field path and the contract's fingerprint. One bad message never stalls the backlog,
//! and none is lost: once the contract (or the producer) is fixed, a replay puts back what
//! the contract now accepts. What is kept of the queue's row is what [`QueueTable`] names:
//! its id, payload, enqueue time and attempts. Other columns of the row (a priority, its
//! headers, a due time) are not kept: a replay writes those four, and the queue's defaults
//! fill the rest (a column with neither a default nor `NULL` allowed refuses the replay,
//! and the message stays in quarantine, held).
//!
//! Everything is done through a [`QueueQuarantine`]: one tenant's queue and where its
//! quarantine lives, named once (no positional arguments to swap).
//!
//! ```no_run
//! # async fn run(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! use contract_sqlx::TenantName;
//! use contract_sqlx::payload::PayloadContract;
//! use contract_sqlx::quarantine::{Quarantine, QueueQuarantine, QueueTable};
//!
//! #[derive(serde::Deserialize)]
//! struct Job { user_id: i64 }
//!
//! let contract = PayloadContract::<Job>::named("job").with_version("1");
//! let jobs = QueueQuarantine::new(TenantName::new("tenant_42")?, QueueTable::new("jobs"))
//!     .with_quarantine(Quarantine::default().with_schema("ops")); // optional
//! jobs.ensure_table(&pool).await?; // at start-up; creates or upgrades the table
//!
//! let mut tx = pool.begin().await?;
//! let batch: Vec<(i64, String)> = sqlx::query_as(
//!     "WITH c AS (SELECT id FROM tenant_42.jobs ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED)
//!      UPDATE tenant_42.jobs j SET attempts = j.attempts + 1 FROM c WHERE j.id = c.id
//!      RETURNING j.id, j.payload::text",
//! )
//! .fetch_all(&mut *tx)
//! .await?;
//! let checked: Vec<_> = batch
//!     .iter()
//!     .map(|(id, raw)| (*id, raw.as_bytes(), contract.check(raw.as_bytes())))
//!     .collect();
//! let poison: Vec<_> = checked
//!     .iter()
//!     .filter_map(|(id, raw, r)| r.as_ref().err().map(|e| (*id, *raw, e)))
//!     .collect();
//! jobs.quarantine(&mut *tx, &contract, &poison).await?; // in the batch's transaction
//! // ... hand each accepted `Job` to the handler and ack it in `tx` ...
//! tx.commit().await?;
//!
//! // Later, with the fixed contract: only what it accepts goes back.
//! let report = jobs.replay(&pool, &contract).await?;
//! println!("{} replayed, {} still waiting", report.replayed, report.waiting());
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//!
//! * **Atomic.** [`QueueQuarantine::quarantine`] deletes the queue rows and writes the
//!   quarantine rows in the caller's transaction (inside a savepoint of its own): they
//!   commit or roll back together with the batch. A rolled-back batch moved nothing.
//! * **Nothing is ever overwritten.** Each move writes a new quarantine row: a message
//!   rejected again after a replay, or a new message under a reused queue id (an identity
//!   reset, a SQLite `INTEGER PRIMARY KEY` that reuses the highest freed id,
//!   producer-chosen ids), gets a row of its own beside the waiting one.
//! * **Idempotent.** Only queue rows the move actually deletes are written to quarantine:
//!   quarantining a message that is no longer in the queue (a second call, another
//!   replica that got there first) is a no-op. Duplicate ids in one call count once.
//! * **The bytes are always stored.** `payload_raw` (`bytea` / `BLOB` / `LONGBLOB`) holds
//!   the payload verbatim, whatever it is: not UTF-8, not JSON, too large, `\u0000`, a
//!   lone surrogate escape. The parsed copy in `payload` (`jsonb` / `JSON` / `TEXT`) is
//!   best effort: it is left empty when the database's JSON type would refuse the
//!   payload, and a move the database still refuses because of it is retried once
//!   without any parsed copy. A poison can never make the move fail and stall the queue.
//! * **Replay re-checks.** [`QueueQuarantine::replay`] puts a waiting message back into
//!   the queue (its original id and payload, `attempts` = 0) only if the contract given
//!   now accepts it; the rest stays waiting, reported with the current reason in the
//!   [`ReplayReport`]. A replayed row is marked (`replayed_at`), never deleted. Each
//!   message is moved back together with its mark, in one transaction per page of 500.
//! * **One id at a time.** Two waiting rows may share a source id (reused ids). The queue
//!   can hold only one of them: replay takes them in quarantine order, puts back the first
//!   one the contract accepts, and holds the others ([`HeldReason::IdInUse`]) until the
//!   id is free again (consumed), for a later replay. Nothing is dropped.
//!
//! # Where the quarantine lives
//!
//! * PostgreSQL: one table for every tenant (`public.contract_quarantine` by default,
//!   see [`Quarantine`]); the queue is `<tenant schema>.<table>`. The move is one statement.
//! * MySQL/MariaDB: a table in each tenant database (`<tenant>.contract_quarantine`),
//!   beside the queue, like the remediation audit table: the move stays within one
//!   database, a tenant's quarantine goes with its database (dropped, moved or restored
//!   together) and needs no privilege outside it. InnoDB makes the move transactional.
//!   The move locks and deletes each row by primary key only. Consumers on InnoDB are
//!   best run at `READ COMMITTED`: under `REPEATABLE READ`, a statement over a batch of ids
//!   (`DELETE … WHERE id IN (…)`) may be executed as a scan that waits on the rows another
//!   consumer claimed, and deadlocks with it.
//! * SQLite: a table in each tenant file, beside the queue (one file is one database).
//!
//! # Upgrading from tables created by earlier releases
//!
//! Earlier releases created the table with `UNIQUE (tenant, queue, source_id)` and
//! overwrote a waiting row on a reused id. [`QueueQuarantine::ensure_table`] removes that
//! constraint, once and idempotently: PostgreSQL drops it (under the same advisory lock
//! that serialises the creation), SQLite rebuilds the table in one `IMMEDIATE`
//! transaction (its unique index cannot be dropped). Existing rows are kept. Call it at
//! start-up, as before.

// Without a backend feature nothing reads the plumbing.
#![cfg_attr(
    not(any(feature = "postgres", feature = "mysql", feature = "sqlite")),
    allow(dead_code)
)]

mod depth;
mod error;
mod replay;
mod report;
mod sink;
mod site;
mod stored;
pub(crate) mod table;

use std::future::Future;

use sqlx::{Pool, Transaction};

use crate::backend::Backend;
use crate::payload::PayloadContract;

pub use depth::QueueBacklog;
pub use error::{QuarantineAction, QuarantineError};
pub use report::{BacklogScan, Held, HeldReason, QuarantinedMessage, ReplayReport, StillRejected};
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
pub use sink::TableSink;
pub use sink::{QuarantineRecord, QuarantineSink, SinkError};
pub use site::QueueQuarantine;
pub use table::{PayloadType, Quarantine, QueueTable};

#[doc(hidden)]
pub use site::{Poison, Target};

/// One rejected message handed to [`QueueQuarantine::quarantine`]: `(message id, raw
/// payload, rejection)`.
pub type Rejected<'a> = (i64, &'a [u8], &'a crate::payload::Rejection);

/// A waiting quarantine row: `(row id, source id, raw payload)`.
#[doc(hidden)]
pub type WaitingRow = (i64, i64, Vec<u8>);

/// A backend that can hold a quarantine: PostgreSQL, MySQL/MariaDB and SQLite. Sealed:
/// its methods are plumbing for [`QueueQuarantine`].
pub trait QuarantineStore: Backend + sealed::Sealed {
    /// Creates (or upgrades) the quarantine table and its indexes.
    #[doc(hidden)]
    fn create_table(
        pool: &Pool<Self>,
        target: &Target<'_>,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// Moves `rows` (distinct ids) from the queue to quarantine; returns how many moved.
    #[doc(hidden)]
    fn move_rows(
        conn: &mut Self::Connection,
        target: &Target<'_>,
        contract: (&str, &str),
        rows: &[Poison<'_>],
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;

    /// A transaction that may write at once (SQLite: `BEGIN IMMEDIATE`).
    #[doc(hidden)]
    fn begin_write(
        pool: &Pool<Self>,
    ) -> impl Future<Output = Result<Transaction<'static, Self>, sqlx::Error>> + Send;

    /// Up to `limit` waiting rows with a row id above `after` and at most `through`, by
    /// row id, locked (only those: `after = id - 1, through = id` locks row `id` alone).
    #[doc(hidden)]
    fn waiting_page(
        conn: &mut Self::Connection,
        target: &Target<'_>,
        after: i64,
        through: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<WaitingRow>, sqlx::Error>> + Send;

    /// Re-enqueues quarantine row `id`, which the caller holds locked as waiting (read by
    /// [`QuarantineStore::waiting_page`] in the same transaction: a replay that read it
    /// waiting before another one committed would otherwise hand its message to the
    /// consumer twice); `false` when the queue holds its id already. `utf8`: whether its
    /// stored bytes are UTF-8 (MySQL converts only those to text; other
    /// bytes go as they are, which a binary column keeps and a text one refuses).
    #[doc(hidden)]
    fn restore(
        conn: &mut Self::Connection,
        target: &Target<'_>,
        id: i64,
        utf8: bool,
    ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;

    /// Marks quarantine rows replayed.
    #[doc(hidden)]
    fn mark_replayed(
        conn: &mut Self::Connection,
        target: &Target<'_>,
        ids: &[i64],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// One page of `(id, raw payload)` of the queue with `id > after`, by id.
    #[doc(hidden)]
    fn queue_page(
        pool: &Pool<Self>,
        target: &Target<'_>,
        after: Option<i64>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<(i64, Vec<u8>)>, sqlx::Error>> + Send;

    /// Every quarantine row of the tenant queue, by source id then row id.
    #[doc(hidden)]
    fn list_rows(
        pool: &Pool<Self>,
        target: &Target<'_>,
    ) -> impl Future<Output = Result<Vec<QuarantinedMessage>, sqlx::Error>> + Send;

    /// Whether the table `schema.table` (`table` in the main database) exists.
    #[doc(hidden)]
    fn table_exists(
        conn: &mut Self::Connection,
        schema: Option<&str>,
        table: &str,
    ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;

    /// Whether `error` says a table does not exist.
    #[doc(hidden)]
    fn is_missing_table(error: &sqlx::Error) -> bool;

    /// Whether `error` is the database refusing a value (where a refused parsed copy
    /// shows up), as opposed to a lock, a conflict or a lost connection.
    #[doc(hidden)]
    fn is_data_error(error: &sqlx::Error) -> bool;
}

mod sealed {
    pub trait Sealed {}
    #[cfg(feature = "postgres")]
    impl Sealed for sqlx::Postgres {}
    #[cfg(feature = "mysql")]
    impl Sealed for sqlx::MySql {}
    #[cfg(feature = "sqlite")]
    impl Sealed for sqlx::Sqlite {}
}

/// The contract's name and fingerprint, as stored with each quarantined message.
fn contract_id<T>(contract: &PayloadContract<T>) -> (String, String) {
    (
        stored::storable_contract_name(contract.name()).into_owned(),
        stored::storable_text(contract.fingerprint()).into_owned(),
    )
}
