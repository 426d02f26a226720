//! [`TableSink`]: the quarantine table as a [`QuarantineSink`].

use contract_core::{Dialect, TenantName};
use futures_util::future::BoxFuture;
use sqlx::Pool;

use super::one_at_a_time::OneAtATime;
use super::{QuarantineRecord, QuarantineSink, SinkError};
use crate::quarantine::stored::{storable_contract_name, storable_text};
use crate::quarantine::{Quarantine, QuarantineStore, QueueQuarantine, QueueTable};

/// Rejected messages stored as rows of the quarantine table (the one
/// [`QueueQuarantine`] writes), for consumers whose messages are not rows: a broker's.
///
/// Each record is inserted unless a waiting row of the same tenant, source, id and bytes
/// is there already, so a record stored again after a crash is skipped, also when two
/// consumers store it at once (a redelivered message): the second waits for the first (on
/// PostgreSQL an advisory lock per record, on MySQL/MariaDB a user lock, on SQLite the
/// database's write lock). The `source_id`
/// column holds [`QuarantineRecord::source_id`]; the parsed copy (`payload`) is left empty.
/// On MySQL/MariaDB the table lives in each tenant's database, on SQLite in the pool's file.
///
/// ```no_run
/// # async fn demo(pool: sqlx::PgPool, record: contract_sqlx::quarantine::QuarantineRecord) -> Result<(), Box<dyn std::error::Error>> {
/// use contract_sqlx::quarantine::{Quarantine, QuarantineSink, TableSink};
/// let sink = TableSink::new(pool, Quarantine::default());
/// sink.ensure_table("tenant_1").await?;
/// let stored = sink.put(std::slice::from_ref(&record)).await?;
/// # let _ = stored; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct TableSink<DB: sqlx::Database> {
    pool: Pool<DB>,
    quarantine: Quarantine,
}

impl<DB: QuarantineStore> TableSink<DB> {
    /// The quarantine table `quarantine` reached through `pool`.
    #[must_use]
    pub fn new(pool: Pool<DB>, quarantine: Quarantine) -> Self {
        Self { pool, quarantine }
    }

    /// Creates (or upgrades) the quarantine table where `tenant`'s records go (one call
    /// covers every tenant on PostgreSQL).
    ///
    /// # Errors
    ///
    /// As [`QueueQuarantine::ensure_table`].
    pub async fn ensure_table(&self, tenant: &str) -> crate::Result<()> {
        QueueQuarantine::new(TenantName::new(tenant)?, QueueTable::new("queue"))
            .with_quarantine(self.quarantine.clone())
            .ensure_table(&self.pool)
            .await
    }

    /// The insert-unless-waiting statement for `tenant`'s quarantine table.
    fn insert_sql(&self, tenant: &str) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
        let tenant = TenantName::new(tenant)?;
        let (schema, table) = self.quarantine.location(DB::DIALECT, &tenant);
        let q = DB::DIALECT.quote_qualified(schema, table)?;
        // MySQL's table has no default for `quarantined_at` (`DATETIME(6)` cannot default
        // to the current time in UTC): the statement sets it, as the queue's move does.
        let (stamped, stamp, dual) = if DB::DIALECT == Dialect::MySql {
            (", quarantined_at", ", UTC_TIMESTAMP(6)", " FROM DUAL")
        } else {
            ("", "", "")
        };
        // language=SQL
        let sql = format!(
            "INSERT INTO {q} (tenant, queue, source_id, payload_raw, reason, field_path, error,
                contract_name, contract_fingerprint{stamped})
             SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?{stamp}{dual}
             WHERE NOT EXISTS (SELECT 1 FROM {q} WHERE tenant = ? AND queue = ? AND source_id = ?
                AND payload_raw = ? AND replayed_at IS NULL)"
        );
        Ok(numbered(DB::DIALECT, &sql))
    }
}

/// `?` placeholders as `$1, $2, …` on PostgreSQL.
fn numbered(dialect: Dialect, sql: &str) -> String {
    if dialect != Dialect::Postgres {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

/// The same sink for each backend (only the statement's placeholders differ).
macro_rules! impl_sink {
    ($feature:literal, $db:ty) => {
        #[cfg(feature = $feature)]
        impl QuarantineSink for TableSink<$db> {
            fn put<'a>(
                &'a self,
                records: &'a [QuarantineRecord],
            ) -> BoxFuture<'a, Result<u64, SinkError>> {
                Box::pin(async move {
                    let fail = |e| SinkError::write(self, records, e);
                    let table = format!("{}.{}", self.quarantine.schema, self.quarantine.table);
                    let mut conn = self.pool.acquire().await.map_err(|e| fail(e.into()))?;
                    let mut tx = <$db as OneAtATime>::begin_put(&mut conn, &table, records)
                        .await
                        .map_err(|e| fail(e.into()))?;
                    let mut stored = 0;
                    for r in records {
                        let sql = self.insert_sql(&r.tenant).map_err(fail)?;
                        let source_id = r.source_id();
                        // A record's texts are public fields: whatever they hold, a NUL
                        // (which PostgreSQL's `text` refuses) must not fail the write.
                        let source = storable_text(&r.source);
                        let done = sqlx::query::<$db>(sqlx::AssertSqlSafe(sql))
                            .bind(&r.tenant)
                            .bind(source.as_ref())
                            .bind(source_id)
                            .bind(&r.raw)
                            .bind(r.reason.as_str())
                            .bind(r.field_path.as_deref().map(storable_text))
                            .bind(storable_text(&r.error))
                            .bind(storable_contract_name(&r.contract))
                            .bind(&r.contract_fingerprint)
                            .bind(&r.tenant)
                            .bind(source.as_ref())
                            .bind(source_id)
                            .bind(&r.raw)
                            .execute(&mut *tx)
                            .await
                            .map_err(|e| fail(e.into()))?;
                        stored += done.rows_affected();
                        if done.rows_affected() > 0 {
                            crate::guard::metrics::record_messages(&r.source, "quarantined", 1);
                        }
                    }
                    tx.commit().await.map_err(|e| fail(e.into()))?;
                    Ok(stored)
                })
            }

            fn describe(&self) -> String {
                format!("quarantine table `{}`", self.quarantine.table)
            }
        }
    };
}

impl_sink!("postgres", sqlx::Postgres);
impl_sink!("mysql", sqlx::MySql);
impl_sink!("sqlite", sqlx::Sqlite);
