//! Quarantine of poison messages (DESIGN D9, queues-prior-art §6.3).
//!
//! A message whose payload the consumer's [`PayloadContract`] rejects is moved out of the
//! tenant's queue into a quarantine table, atomically and in the caller's transaction
//! (delete from the queue + insert into quarantine), with the raw payload verbatim, the
//! reason, the failing field path and the contract's fingerprint. One bad message never
//! stalls the backlog, and none is lost: after the contract (or the producer) is fixed,
//! [`replay`] puts the messages back into the queue.
//!
//! * PostgreSQL: one quarantine table (`public.contract_quarantine` by default) for every
//!   tenant; the queue is `<tenant schema>.<table>`. The move is one statement.
//! * SQLite: the quarantine table lives in each tenant file, beside the queue.
//!
//! Quarantine is idempotent on `(tenant, queue, source_id)`: quarantining a message that
//! is no longer in the queue is a no-op, and a message that comes back (after a replay)
//! and is rejected again updates its quarantine row instead of being dropped.
//!
//! ```no_run
//! # async fn run(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! use contract_sqlx::TenantName;
//! use contract_sqlx::payload::PayloadContract;
//! use contract_sqlx::quarantine::{self, Quarantine, QueueTable};
//!
//! #[derive(serde::Deserialize)]
//! struct Job { user_id: i64 }
//!
//! let contract = PayloadContract::<Job>::named("job").with_version("1");
//! let tenant = TenantName::new("tenant_42")?;
//! let (table, q) = (QueueTable::new("jobs"), Quarantine::default());
//! quarantine::ensure_table(&pool, &q).await?;
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
//! quarantine::quarantine(&mut *tx, &tenant, "jobs", &table, &q, &contract, &poison).await?;
//! // ... hand each accepted `Job` to the handler and ack it in `tx` ...
//! tx.commit().await?;
//! # Ok(()) }
//! ```

pub(crate) mod table;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;

use contract_core::TenantName;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::{Database, Pool};

use crate::error::Result;
use crate::payload::{PayloadContract, Rejection};

pub use table::{PayloadType, Quarantine, QueueTable};

/// How many queue rows [`backlog_scan`] reads per page.
const BACKLOG_PAGE: i64 = 500;

/// One quarantined message, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct QuarantinedMessage {
    /// Row id in the quarantine table.
    pub id: i64,
    /// The tenant.
    pub tenant: String,
    /// The queue name given when quarantining.
    pub queue: String,
    /// The message id in the queue (restored on replay).
    pub source_id: i64,
    /// The payload as JSON text, when it was valid JSON (`None` otherwise; see `payload_raw`).
    pub payload: Option<String>,
    /// The payload bytes, verbatim.
    pub payload_raw: Vec<u8>,
    /// The queue's enqueue time, as text (RFC 3339 UTC on PostgreSQL).
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
    /// When it was (last) quarantined (RFC 3339 UTC).
    pub quarantined_at: String,
    /// When it was last replayed; `None` while it waits in quarantine.
    pub replayed_at: Option<String>,
    /// How many times it was replayed.
    pub replay_count: i64,
}

/// The result of validating a tenant's pending messages without consuming them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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

/// Which queue of which tenant, and where its quarantine is (backend plumbing).
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct Site<'a> {
    /// The tenant.
    pub tenant: &'a TenantName,
    /// The queue name recorded in quarantine.
    pub queue: &'a str,
    /// The queue table.
    pub table: &'a QueueTable,
    /// The quarantine table.
    pub quarantine: &'a Quarantine,
}

/// A backend that can hold a quarantine: PostgreSQL and SQLite. Sealed.
pub trait QuarantineStore: Database + sealed::Sealed {
    /// Creates the quarantine table and its index if missing.
    #[doc(hidden)]
    fn create_table(
        pool: &Pool<Self>,
        quarantine: &Quarantine,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Moves `rows` (distinct ids) from the queue to quarantine; returns how many moved.
    #[doc(hidden)]
    fn move_rows(
        conn: &mut Self::Connection,
        site: Site<'_>,
        contract: (&str, &str),
        rows: &[(i64, &[u8], &Rejection)],
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Re-enqueues the waiting quarantined messages of one tenant queue.
    #[doc(hidden)]
    fn replay_rows(pool: &Pool<Self>, site: Site<'_>) -> impl Future<Output = Result<u64>> + Send;

    /// One page of `(id, raw payload)` with `id > after`, by id.
    #[doc(hidden)]
    fn queue_page(
        pool: &Pool<Self>,
        tenant: &TenantName,
        table: &QueueTable,
        after: Option<i64>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<(i64, Vec<u8>)>>> + Send;

    /// The quarantined rows of one tenant queue, by source id.
    #[doc(hidden)]
    fn list_rows(
        pool: &Pool<Self>,
        tenant: &TenantName,
        queue: &str,
        quarantine: &Quarantine,
    ) -> impl Future<Output = Result<Vec<QuarantinedMessage>>> + Send;
}

mod sealed {
    pub trait Sealed {}
    #[cfg(feature = "postgres")]
    impl Sealed for sqlx::Postgres {}
    #[cfg(feature = "sqlite")]
    impl Sealed for sqlx::Sqlite {}
}

/// Creates the quarantine table if it is missing (race-safe: an advisory lock on
/// PostgreSQL, SQLite's write lock). On SQLite, call it once per tenant pool.
///
/// # Errors
///
/// [`crate::Error::Ident`] for an unusable table name, [`crate::Error::Database`] when the
/// role may not create it.
pub async fn ensure_table<DB: QuarantineStore>(
    pool: &Pool<DB>,
    quarantine: &Quarantine,
) -> Result<()> {
    DB::create_table(pool, quarantine).await
}

/// Moves rejected messages from the tenant's queue into quarantine, in the caller's
/// transaction (pass `&mut *tx`; a bare connection, `&mut *pool.acquire().await?`, also
/// works, the move is then its own transaction), and returns how many moved.
///
/// Each entry is `(message id, raw payload, rejection)`; duplicate ids count once (the
/// first entry wins). The queue row is deleted and the quarantine row written together:
/// one statement on PostgreSQL, a savepoint on SQLite. `enqueued_at` and `attempts` are
/// copied from the deleted row. A message that is no longer in the queue is skipped (so
/// a second call is a no-op); a message quarantined before and back in the queue (after
/// [`replay`]) updates its quarantine row, which becomes pending again.
///
/// # Errors
///
/// [`crate::Error::Ident`] for unusable names, [`crate::Error::Database`] when a statement
/// fails (the caller's transaction should then be rolled back: nothing was moved).
// The connection is taken as `&mut C`, not as a generic `sqlx::Acquire<'c>`: with
// `Acquire`, the future was not `Send` for every lifetime (rustc's "implementation of
// `Send` is not general enough"), so a consumer could not call this in `tokio::spawn`.
pub async fn quarantine<C, T>(
    conn: &mut C,
    tenant: &TenantName,
    queue: &str,
    table: &QueueTable,
    quarantine: &Quarantine,
    contract: &PayloadContract<T>,
    rejected: &[(i64, &[u8], &Rejection)],
) -> Result<u64>
where
    C: sqlx::Connection,
    C::Database: QuarantineStore,
{
    let mut seen = HashSet::with_capacity(rejected.len());
    let rows: Vec<(i64, &[u8], &Rejection)> = rejected
        .iter()
        .copied()
        .filter(|(id, _, _)| seen.insert(*id))
        .collect();
    if rows.is_empty() {
        return Ok(0);
    }
    let site = Site {
        tenant,
        queue,
        table,
        quarantine,
    };
    let moved = <C::Database as QuarantineStore>::move_rows(
        conn,
        site,
        (contract.name(), contract.fingerprint()),
        &rows,
    )
    .await?;
    if moved > 0 {
        tracing::info!(tenant = %tenant, queue, moved, contract = contract.name(), "quarantined poison messages");
        crate::guard::metrics::record_messages(queue, "quarantined", moved);
        // By reason when every row moved (the usual case); a partial no-op is counted above only.
        if moved == rows.len() as u64 {
            for (_, _, rejection) in &rows {
                ::metrics::counter!(
                    crate::guard::metrics::QUARANTINED_TOTAL,
                    "queue" => queue.to_owned(),
                    "reason" => rejection.reason.as_str()
                )
                .increment(1);
            }
        }
    }
    Ok(moved)
}

/// Puts the waiting quarantined messages of a tenant queue back into the queue, in one
/// transaction: original message id and payload, `attempts` = 0; each quarantine row is
/// marked `replayed_at` and its `replay_count` bumped. Returns how many were re-enqueued.
///
/// A message whose id is already in the queue again is left waiting in quarantine. Replay
/// only after the contract or the producer was fixed: a message rejected again simply
/// returns to quarantine.
///
/// # Errors
///
/// [`crate::Error::Database`] when the transaction fails (then nothing was replayed), for
/// example a payload that is not valid UTF-8, or not JSON for a `json`/`jsonb` queue.
pub async fn replay<DB: QuarantineStore>(
    pool: &Pool<DB>,
    tenant: &TenantName,
    queue: &str,
    table: &QueueTable,
    quarantine: &Quarantine,
) -> Result<u64> {
    let site = Site {
        tenant,
        queue,
        table,
        quarantine,
    };
    let replayed = DB::replay_rows(pool, site).await?;
    tracing::info!(tenant = %tenant, queue, replayed, "replayed quarantined messages");
    Ok(replayed)
}

/// Validates every pending message of a tenant's queue against `contract` without
/// consuming, locking or changing anything: reads the queue in pages by id.
///
/// # Errors
///
/// [`crate::Error::Ident`] for unusable names, [`crate::Error::Database`] when a page
/// cannot be read.
pub async fn backlog_scan<DB: QuarantineStore, T: DeserializeOwned>(
    pool: &Pool<DB>,
    tenant: &TenantName,
    table: &QueueTable,
    contract: &PayloadContract<T>,
) -> Result<BacklogScan> {
    let mut scan = BacklogScan::default();
    let mut after = None;
    loop {
        let page = DB::queue_page(pool, tenant, table, after, BACKLOG_PAGE).await?;
        for (_, raw) in &page {
            scan.total += 1;
            match contract.check(raw) {
                Ok(_) => scan.valid += 1,
                Err(rejection) => {
                    *scan
                        .rejected_by_reason
                        .entry(rejection.reason.as_str().to_owned())
                        .or_default() += 1;
                }
            }
        }
        match page.last() {
            Some((id, _)) if i64::try_from(page.len()).is_ok_and(|n| n == BACKLOG_PAGE) => {
                after = Some(*id);
            }
            _ => return Ok(scan),
        }
    }
}

/// The quarantined messages of a tenant queue (waiting and replayed), by source id.
///
/// # Errors
///
/// [`crate::Error::Ident`] for an unusable table name, [`crate::Error::Database`] when the
/// query fails.
pub async fn list<DB: QuarantineStore>(
    pool: &Pool<DB>,
    tenant: &TenantName,
    queue: &str,
    quarantine: &Quarantine,
) -> Result<Vec<QuarantinedMessage>> {
    DB::list_rows(pool, tenant, queue, quarantine).await
}

/// The payload as JSON text for the `payload` column: only when it is a valid JSON
/// document; otherwise only `payload_raw` holds it.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn json_text<'a>(raw: &'a [u8], rejection: &Rejection) -> Option<&'a str> {
    rejection
        .raw_is_json
        .then(|| std::str::from_utf8(raw).ok())
        .flatten()
}
