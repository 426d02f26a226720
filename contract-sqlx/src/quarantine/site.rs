//! [`QueueQuarantine`]: one tenant queue and its quarantine, and the operations on it.

use std::borrow::Cow;
use std::collections::HashSet;

use contract_core::{Dialect, TenantName};
use serde::de::DeserializeOwned;
use sqlx::{Connection, Pool};

use super::error::{Missing, QuarantineAction, QuarantineError, problem};
use super::stored::{parsed_copy, storable_text};
use super::table::{Quoted, queue_location};
use super::{
    BacklogScan, PayloadType, Quarantine, QuarantineStore, QuarantinedMessage, QueueTable,
    Rejected, contract_id,
};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::payload::PayloadContract;

/// How many queue rows [`QueueQuarantine::backlog_scan`] reads per page.
const BACKLOG_PAGE: i64 = 500;

/// One tenant's queue and where its quarantine lives: the value every quarantine
/// operation is called on.
///
/// Built from the tenant and the [`QueueTable`]; the queue name recorded in quarantine
/// (the table name by default) and the [`Quarantine`] table (`contract_quarantine`, in
/// `public` on PostgreSQL) are optional. Cheap to clone; keep one per tenant queue or
/// build one per batch.
///
/// ```
/// use contract_sqlx::TenantName;
/// use contract_sqlx::quarantine::{PayloadType, Quarantine, QueueQuarantine, QueueTable};
///
/// let site = QueueQuarantine::new(
///     TenantName::new("tenant_7").unwrap(),
///     QueueTable::new("outbox").with_payload("body", PayloadType::Text),
/// )
/// .with_queue_name("emails")
/// .with_quarantine(Quarantine::default().with_table("poison"));
/// assert_eq!(site.queue_name(), "emails");
/// assert_eq!(site.quarantine_table().table, "poison");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueQuarantine {
    tenant: TenantName,
    table: QueueTable,
    queue: String,
    quarantine: Quarantine,
}

impl QueueQuarantine {
    /// The queue `table` of `tenant`, recorded in quarantine under the table's name, with
    /// the default [`Quarantine`] table.
    #[must_use]
    pub fn new(tenant: TenantName, table: QueueTable) -> Self {
        Self {
            queue: table.table.clone(),
            tenant,
            table,
            quarantine: Quarantine::default(),
        }
    }

    /// Sets the queue name recorded in quarantine (the table name by default): tells
    /// apart several logical queues kept in one table, or keeps the name stable when the
    /// table is renamed.
    #[must_use]
    pub fn with_queue_name(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// Sets where quarantined messages go.
    #[must_use]
    pub fn with_quarantine(mut self, quarantine: Quarantine) -> Self {
        self.quarantine = quarantine;
        self
    }

    /// The tenant.
    #[must_use]
    pub fn tenant(&self) -> &TenantName {
        &self.tenant
    }

    /// The queue table.
    #[must_use]
    pub fn queue_table(&self) -> &QueueTable {
        &self.table
    }

    /// The queue name recorded in quarantine.
    #[must_use]
    pub fn queue_name(&self) -> &str {
        &self.queue
    }

    /// The quarantine table.
    #[must_use]
    pub fn quarantine_table(&self) -> &Quarantine {
        &self.quarantine
    }

    /// Creates the quarantine table and its indexes if missing, and upgrades a table made
    /// by an earlier release (see the [module docs](super)). Race-safe: an advisory lock on
    /// PostgreSQL, the metadata lock on MySQL, an `IMMEDIATE` transaction on SQLite.
    ///
    /// On PostgreSQL one call covers every tenant using the same [`Quarantine`]; on MySQL
    /// and SQLite the table lives in the tenant's database or file: call it per tenant.
    ///
    /// # Errors
    ///
    /// [`Error::Ident`] for an unusable name; [`Error::Quarantine`] when the role may not
    /// create the table (grant `CREATE` on its schema, or create it beforehand).
    pub async fn ensure_table<DB: QuarantineStore>(&self, pool: &Pool<DB>) -> Result<()> {
        let target = self.target(DB::DIALECT)?;
        match DB::create_table(pool, &target).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.error(DB::DIALECT, QuarantineAction::CreateTable, e, None)),
        }
    }

    /// Moves rejected messages from the queue into quarantine, in the caller's transaction
    /// (pass `&mut *tx`; a bare connection, `&mut *pool.acquire().await?`, also works: the
    /// move is then its own transaction), and returns how many moved.
    ///
    /// Each entry is `(message id, raw payload, rejection)`; duplicate ids count once (the
    /// first entry wins). The queue row is deleted and a new quarantine row written
    /// together, in a savepoint: one statement on PostgreSQL, a few on MySQL and SQLite.
    /// `enqueued_at` and `attempts` are copied from the deleted row. A message that is no
    /// longer in the queue is skipped, so a second call is a no-op. A waiting quarantine
    /// row is never overwritten.
    ///
    /// # Errors
    ///
    /// [`Error::Ident`] for unusable names; [`Error::Quarantine`] naming the tenant and the
    /// queue, and whether the quarantine table or the queue table is missing or what the
    /// database refused. Nothing was moved then. The move's savepoint was rolled back and the
    /// caller's transaction is still usable, unless the error says otherwise
    /// ([`QuarantineError::Database`]'s `transaction_ended`: on MySQL a deadlock rolls the
    /// whole transaction back; or the connection failed): roll it back then.
    // The connection is taken as `&mut C`, not as a generic `sqlx::Acquire<'c>`: with
    // `Acquire`, the future was not `Send` for every lifetime (rustc's "implementation of
    // `Send` is not general enough"), so a consumer could not call this in `tokio::spawn`.
    pub async fn quarantine<C, T>(
        &self,
        conn: &mut C,
        contract: &PayloadContract<T>,
        rejected: &[Rejected<'_>],
    ) -> Result<u64>
    where
        C: Connection,
        C::Database: QuarantineStore,
    {
        let dialect = <C::Database as Backend>::DIALECT;
        let target = self.target(dialect)?;
        let mut seen = HashSet::with_capacity(rejected.len());
        let mut rows: Vec<Poison<'_>> = rejected
            .iter()
            .filter(|(id, _, _)| seen.insert(*id))
            .map(|(id, raw, rejection)| Poison {
                source_id: *id,
                raw,
                parsed: parsed_copy(raw, rejection),
                reason: rejection.reason.as_str(),
                path: rejection.path.as_deref().map(storable_text),
                error: storable_text(&rejection.message),
            })
            .collect();
        if rows.is_empty() {
            return Ok(0);
        }
        let (name, fingerprint) = contract_id(contract);
        let contract_id = (name.as_str(), fingerprint.as_str());
        let mut outcome = move_in_savepoint::<C::Database>(conn, &target, contract_id, &rows).await;
        // The parsed copy is best effort: a database that refuses it gets the move
        // without any parsed copy (the raw bytes always fit).
        if let Err(Failed::RolledBack(e)) = &outcome
            && <C::Database as QuarantineStore>::is_data_error(e)
            && rows.iter().any(|r| r.parsed.is_some())
        {
            tracing::warn!(tenant = %self.tenant, queue = %self.queue, error = %e,
                "the database refused the parsed copy of a quarantined payload; stored raw only");
            rows.iter_mut().for_each(|r| r.parsed = None);
            outcome = move_in_savepoint::<C::Database>(conn, &target, contract_id, &rows).await;
        }
        let moved = match outcome {
            Ok(moved) => moved,
            Err(Failed::RolledBack(e)) => {
                let missing = self.missing_table::<C::Database>(conn, &e).await;
                return Err(self.error(dialect, QuarantineAction::Quarantine, e, missing));
            }
            Err(Failed::Broken(e)) => {
                return Err(self.transaction_ended(QuarantineAction::Quarantine, e));
            }
        };
        if moved > 0 {
            self.count_moved(contract.name(), moved, &rows);
        }
        Ok(moved)
    }

    /// Validates every pending message of the queue against `contract` without
    /// consuming, locking or changing anything: reads the queue in pages by id.
    ///
    /// # Errors
    ///
    /// [`Error::Ident`] for unusable names; [`Error::Quarantine`] when a page cannot be
    /// read (for example a missing queue table).
    pub async fn backlog_scan<DB: QuarantineStore, T: DeserializeOwned>(
        &self,
        pool: &Pool<DB>,
        contract: &PayloadContract<T>,
    ) -> Result<BacklogScan> {
        let target = self.target(DB::DIALECT)?;
        let mut scan = BacklogScan::default();
        let mut after = None;
        loop {
            let page = match DB::queue_page(pool, &target, after, BACKLOG_PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    let missing = DB::is_missing_table(&e).then_some(Missing::Queue);
                    return Err(self.error(DB::DIALECT, QuarantineAction::BacklogScan, e, missing));
                }
            };
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

    /// Every quarantine row of this tenant queue, waiting and replayed, by source id then
    /// quarantine order.
    ///
    /// # Errors
    ///
    /// [`Error::Ident`] for an unusable name; [`Error::Quarantine`] when the query fails
    /// (for example a missing quarantine table).
    pub async fn list<DB: QuarantineStore>(
        &self,
        pool: &Pool<DB>,
    ) -> Result<Vec<QuarantinedMessage>> {
        let target = self.target(DB::DIALECT)?;
        DB::list_rows(pool, &target).await.map_err(|e| {
            let missing = DB::is_missing_table(&e).then_some(Missing::Quarantine);
            self.error(DB::DIALECT, QuarantineAction::List, e, missing)
        })
    }

    /// The names of this site, quoted for `dialect`.
    pub(super) fn target(&self, dialect: Dialect) -> Result<Target<'_>> {
        Ok(Target {
            tenant: self.tenant.as_str(),
            queue: &self.queue,
            payload_type: self.table.payload_type,
            quarantine_name: &self.quarantine.table,
            sql: Quoted::new(dialect, &self.tenant, &self.table, &self.quarantine)?,
        })
    }

    /// Which of the two tables is missing, when `error` says one is: looked up on `conn`
    /// (the savepoint was rolled back, so the connection is usable).
    pub(super) async fn missing_table<DB: QuarantineStore>(
        &self,
        conn: &mut DB::Connection,
        error: &sqlx::Error,
    ) -> Option<Missing> {
        if !DB::is_missing_table(error) {
            return None;
        }
        let (schema, table) = self.quarantine.location(DB::DIALECT, &self.tenant);
        if !DB::table_exists(conn, schema, table).await.ok()? {
            return Some(Missing::Quarantine);
        }
        let (schema, table) = queue_location(DB::DIALECT, &self.tenant, &self.table);
        (!DB::table_exists(conn, schema, table).await.ok()?).then_some(Missing::Queue)
    }

    /// The error of a failed `action` that ended the caller's transaction as well: its
    /// savepoint could not be rolled back.
    fn transaction_ended(&self, action: QuarantineAction, source: sqlx::Error) -> Error {
        QuarantineError::Database {
            action,
            tenant: self.tenant.to_string(),
            queue: self.queue.clone(),
            problem: problem(&source),
            transaction_ended: true,
            source,
        }
        .into()
    }

    /// The error of a failed `action`, naming the tenant, the queue and the missing table.
    pub(super) fn error(
        &self,
        dialect: Dialect,
        action: QuarantineAction,
        source: sqlx::Error,
        missing: Option<Missing>,
    ) -> Error {
        let (tenant, queue) = (self.tenant.to_string(), self.queue.clone());
        let quoted = |missing: Missing| {
            let (schema, table) = match missing {
                Missing::Quarantine => self.quarantine.location(dialect, &self.tenant),
                Missing::Queue => queue_location(dialect, &self.tenant, &self.table),
            };
            dialect
                .quote_qualified(schema, table)
                .unwrap_or_else(|_| table.to_owned())
        };
        let error = match missing {
            Some(Missing::Quarantine) => QuarantineError::QuarantineTableMissing {
                action,
                tenant,
                queue,
                table: quoted(Missing::Quarantine),
                source,
            },
            Some(Missing::Queue) => QuarantineError::QueueTableMissing {
                action,
                tenant,
                queue,
                table: quoted(Missing::Queue),
                source,
            },
            None => QuarantineError::Database {
                action,
                tenant,
                queue,
                problem: problem(&source),
                transaction_ended: false,
                source,
            },
        };
        error.into()
    }

    /// Counts moved messages in the metrics, by reason when every row moved (the usual
    /// case; a partial no-op is counted in total only).
    fn count_moved(&self, contract: &str, moved: u64, rows: &[Poison<'_>]) {
        let queue = self.queue.as_str();
        tracing::info!(tenant = %self.tenant, queue, moved, contract, "quarantined poison messages");
        crate::guard::metrics::record_messages(queue, "quarantined", moved);
        if moved == rows.len() as u64 {
            for row in rows {
                crate::telemetry::count_queue(
                    crate::guard::metrics::QUARANTINED_TOTAL,
                    queue,
                    "reason",
                    row.reason,
                    1,
                );
            }
        }
    }
}

/// The names of one tenant queue and its quarantine (backend plumbing).
#[doc(hidden)]
#[derive(Debug)]
pub struct Target<'a> {
    pub(crate) tenant: &'a str,
    pub(crate) queue: &'a str,
    /// The queue's payload type: replay casts to it on PostgreSQL.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) payload_type: PayloadType,
    /// The quarantine table's name, unquoted: SQLite reads its indexes by name.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) quarantine_name: &'a str,
    pub(crate) sql: Quoted,
}

/// One message to move, with the text already made storable (backend plumbing).
#[doc(hidden)]
#[derive(Debug)]
pub struct Poison<'a> {
    pub(crate) source_id: i64,
    pub(crate) raw: &'a [u8],
    /// The best-effort parsed copy; `None` stores the raw bytes only.
    pub(crate) parsed: Option<&'a str>,
    pub(crate) reason: &'static str,
    pub(crate) path: Option<Cow<'a, str>>,
    pub(crate) error: Cow<'a, str>,
}

/// How a move failed.
enum Failed {
    /// The savepoint was rolled back: nothing moved, the connection is usable.
    RolledBack(sqlx::Error),
    /// The savepoint could not even be opened or rolled back (a lost connection, a
    /// transaction the server aborted).
    Broken(sqlx::Error),
}

/// One move in a savepoint of the caller's transaction (a transaction of its own on a
/// bare connection).
async fn move_in_savepoint<DB: QuarantineStore>(
    conn: &mut DB::Connection,
    target: &Target<'_>,
    contract: (&str, &str),
    rows: &[Poison<'_>],
) -> Result<u64, Failed> {
    let mut savepoint = conn.begin().await.map_err(Failed::Broken)?;
    match DB::move_rows(&mut savepoint, target, contract, rows).await {
        Ok(moved) => savepoint
            .commit()
            .await
            .map(|()| moved)
            .map_err(Failed::Broken),
        Err(e) => match savepoint.rollback().await {
            Ok(()) => Err(Failed::RolledBack(e)),
            Err(_) => Err(Failed::Broken(e)),
        },
    }
}
