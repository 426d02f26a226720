//! Reading the remediation audit back: the rows [`AuditRecord`](super::AuditRecord)s were
//! written as, newest first. The `contract audit` command is built on this.
//!
//! Where the rows are depends on the backend (see [`AuditConfig`]): one table for every
//! tenant on PostgreSQL, a table in each tenant database on MySQL/MariaDB, a table in each
//! tenant file on SQLite.
//!
//! ```no_run
//! # async fn demo(pool: sqlx::PgPool) -> contract_sqlx::Result<()> {
//! use contract_sqlx::remediation::{AuditConfig, AuditEntry, AuditQuery};
//!
//! let query = AuditQuery::default().tenant("tenant_42").limit(20);
//! for entry in AuditEntry::read_postgres(&pool, &AuditConfig::default(), &query).await? {
//!     println!("{entry}");
//! }
//! # Ok(()) }
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

#[allow(unused_imports)]
use super::AuditConfig;
#[allow(unused_imports)] // each backend reads with a subset
use crate::error::{Error, Result};

/// One audit row as stored: what was applied to a tenant, when, by whom, under which
/// approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditEntry {
    /// Unique id of the row (a UUIDv7: ids sort by creation time).
    pub audit_id: String,
    /// The tenant.
    pub tenant: String,
    /// The full hash of the plan the statements came from.
    pub plan_hash: String,
    /// The statements run, in order.
    pub statements: Vec<String>,
    /// `applied`, or `pending` / `failed` (MySQL two-phase audit, SQLite failures).
    pub status: String,
    /// Who applied: the guard's or the operator's actor name.
    pub actor: String,
    /// How many attempts it took (lock-timeout retries).
    pub attempts: i64,
    /// When the apply started (RFC 3339 UTC).
    pub started_at: String,
    /// When it finished (RFC 3339 UTC), if it did.
    pub finished_at: Option<String>,
    /// Wall time of the successful attempt.
    pub duration_ms: Option<i64>,
    /// The approval that covered the plan's hazardous steps, if one did.
    pub approval_id: Option<String>,
    /// Who approved them.
    pub approved_by: Option<String>,
    /// Why it failed (MySQL and SQLite record failures).
    pub error: Option<String>,
    /// How a later pass settled a row an apply left `pending` (a MySQL apply interrupted
    /// mid-DDL; a PostgreSQL multi-transaction apply whose next transaction can no longer
    /// run): which of the drift it fixed the live schema still shows.
    pub evidence: Option<String>,
}

impl fmt::Display for AuditEntry {
    /// `2026-…Z tenant_7 applied plan <full hash> by contract-guard@host/12 (approved by
    /// alice, approval …) in 42 ms`, then the statements, one per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} plan {} by {}",
            self.started_at, self.tenant, self.status, self.plan_hash, self.actor
        )?;
        match (&self.approved_by, &self.approval_id) {
            (Some(by), Some(id)) => write!(f, " (approved by {by}, approval {id})")?,
            (Some(by), None) => write!(f, " (approved by {by})")?,
            (None, Some(id)) => write!(f, " (approval {id})")?,
            (None, None) => f.write_str(" (no approval needed)")?,
        }
        if let Some(ms) = self.duration_ms {
            write!(f, " in {ms} ms")?;
        }
        if self.attempts > 1 {
            write!(f, ", {} attempts", self.attempts)?;
        }
        if let Some(error) = &self.error {
            write!(f, "; error: {error}")?;
        }
        if let Some(evidence) = &self.evidence {
            write!(f, "; {evidence}")?;
        }
        for statement in &self.statements {
            write!(f, "\n    {statement}")?;
        }
        Ok(())
    }
}

/// Which audit rows to read: all of them, or one tenant's, newest first, at most `limit`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditQuery {
    /// Only this tenant's rows.
    pub tenant: Option<String>,
    /// At most this many rows (the newest).
    pub limit: Option<u32>,
}

impl AuditQuery {
    /// Only `tenant`'s rows.
    #[must_use]
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// At most `rows` rows, the newest.
    #[must_use]
    pub fn limit(mut self, rows: u32) -> Self {
        self.limit = Some(rows);
        self
    }

    /// `LIMIT n`, or nothing.
    #[allow(dead_code)]
    fn limit_sql(&self) -> String {
        self.limit
            .map(|n| format!(" LIMIT {n}"))
            .unwrap_or_default()
    }
}

/// Rows → entries, the same for every backend's row type.
#[allow(unused_macros)]
macro_rules! entry {
    ($row:expr) => {{
        use sqlx::Row as _;
        let row = $row;
        let statements: String = row.try_get("statements")?;
        AuditEntry {
            audit_id: row.try_get("audit_id")?,
            tenant: row.try_get("tenant")?,
            plan_hash: row.try_get("plan_hash")?,
            statements: serde_json::from_str(&statements).unwrap_or_else(|_| vec![statements]),
            status: row.try_get("status")?,
            actor: row.try_get("actor")?,
            attempts: row.try_get("attempts")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
            duration_ms: row.try_get("duration_ms")?,
            approval_id: row.try_get("approval_id")?,
            approved_by: row.try_get("approved_by")?,
            error: row.try_get("error")?,
            evidence: row.try_get("evidence")?,
        }
    }};
}

const CONTEXT: &str = "reading the audit table";

impl AuditEntry {
    /// The audit rows of every tenant schema (`<schema>.<table>` of `config`), newest
    /// first. No table yet (nothing was ever applied) reads as no rows.
    ///
    /// # Errors
    ///
    /// [`Error::Ident`] for an unusable table name, [`Error::Database`] when it cannot be
    /// read.
    #[cfg(feature = "postgres")]
    pub async fn read_postgres(
        pool: &sqlx::PgPool,
        config: &AuditConfig,
        query: &AuditQuery,
    ) -> Result<Vec<Self>> {
        let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
            .bind(
                contract_core::Dialect::Postgres
                    .quote_qualified(Some(&config.schema), &config.table)?,
            )
            .fetch_one(pool)
            .await
            .map_err(Error::db(CONTEXT, None))?;
        if exists.is_none() {
            return Ok(Vec::new());
        }
        let table = contract_core::Dialect::Postgres
            .quote_qualified(Some(&config.schema), &config.table)?;
        let time = |c: &str| {
            format!("to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS {c}")
        };
        // language=SQL
        let sql = format!(
            "SELECT audit_id, tenant, plan_hash, statements::text AS statements, status, actor, \
             attempts::int8 AS attempts, {}, {}, duration_ms, approval_id, approved_by, \
             NULL::text AS error, to_jsonb(a) ->> 'evidence' AS evidence \
             FROM {table} a WHERE $1::text IS NULL OR tenant = $1 \
             ORDER BY started_at DESC, audit_id DESC{}",
            time("started_at"),
            time("finished_at"),
            query.limit_sql()
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(query.tenant.as_deref())
            .fetch_all(pool)
            .await
            .map_err(Error::db(CONTEXT, query.tenant.as_deref()))?;
        rows.iter()
            .map(|row| Ok(entry!(row)))
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(Error::db(CONTEXT, None))
    }

    /// The audit rows of every database on the server that holds the audit table (or of
    /// the query's tenant only), newest first.
    ///
    /// # Errors
    ///
    /// [`Error::Ident`] for unusable names, [`Error::Database`] when a table cannot be
    /// read.
    #[cfg(feature = "mysql")]
    pub async fn read_mysql(
        pool: &sqlx::MySqlPool,
        config: &AuditConfig,
        query: &AuditQuery,
    ) -> Result<Vec<Self>> {
        let databases: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(TABLE_SCHEMA AS CHAR) FROM information_schema.TABLES \
             WHERE TABLE_NAME = ? AND (? IS NULL OR TABLE_SCHEMA = ?) ORDER BY TABLE_SCHEMA",
        )
        .bind(&config.table)
        .bind(query.tenant.as_deref())
        .bind(query.tenant.as_deref())
        .fetch_all(pool)
        .await
        .map_err(Error::db(CONTEXT, None))?;
        let mut entries = Vec::new();
        for database in databases {
            let table =
                contract_core::Dialect::MySql.quote_qualified(Some(&database), &config.table)?;
            let time = |c: &str| format!("DATE_FORMAT({c}, '%Y-%m-%dT%H:%i:%s.%fZ') AS {c}");
            // language=SQL
            let sql = format!(
                "SELECT audit_id, tenant, plan_hash, CAST(statements AS CHAR) AS statements, status, actor, \
                 CAST(attempts AS SIGNED) AS attempts, {}, {}, duration_ms, approval_id, approved_by, error, evidence \
                 FROM {table} ORDER BY started_at DESC, audit_id DESC{}",
                time("started_at"),
                time("finished_at"),
                query.limit_sql()
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(pool)
                .await
                .map_err(Error::db(CONTEXT, Some(&database)))?;
            let read: Vec<AuditEntry> = rows
                .iter()
                .map(|row| Ok(entry!(row)))
                .collect::<std::result::Result<_, sqlx::Error>>()
                .map_err(Error::db(CONTEXT, Some(&database)))?;
            entries.extend(read);
        }
        Ok(newest_first(entries, query))
    }

    /// The audit rows of one tenant file (`pool` on it), newest first. No table yet reads
    /// as no rows.
    ///
    /// # Errors
    ///
    /// [`Error::Ident`] for an unusable table name, [`Error::Database`] when it cannot be
    /// read.
    #[cfg(feature = "sqlite")]
    pub async fn read_sqlite(
        pool: &sqlx::SqlitePool,
        config: &AuditConfig,
        query: &AuditQuery,
    ) -> Result<Vec<Self>> {
        let exists: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
        )
        .bind(&config.table)
        .fetch_one(pool)
        .await
        .map_err(Error::db(CONTEXT, None))?;
        if exists == 0 {
            return Ok(Vec::new());
        }
        let table = contract_core::Dialect::Sqlite.quote_qualified(Some("main"), &config.table)?;
        // language=SQL
        let sql = format!(
            "SELECT audit_id, tenant, plan_hash, statements, status, actor, attempts, started_at, \
             finished_at, duration_ms, approval_id, approved_by, error, NULL AS evidence FROM {table} \
             WHERE ?1 IS NULL OR tenant = ?1 ORDER BY started_at DESC, audit_id DESC{}",
            query.limit_sql()
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(query.tenant.as_deref())
            .fetch_all(pool)
            .await
            .map_err(Error::db(CONTEXT, query.tenant.as_deref()))?;
        rows.iter()
            .map(|row| Ok(entry!(row)))
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(Error::db(CONTEXT, None))
    }

    /// Merges rows read from several tables: newest first, at most the query's limit.
    #[must_use]
    pub fn merge(entries: Vec<Self>, query: &AuditQuery) -> Vec<Self> {
        newest_first(entries, query)
    }
}

fn newest_first(mut entries: Vec<AuditEntry>, query: &AuditQuery) -> Vec<AuditEntry> {
    entries.sort_by(|a, b| (&b.started_at, &b.audit_id).cmp(&(&a.started_at, &a.audit_id)));
    if let Some(limit) = query.limit {
        entries.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    }
    entries
}
