//! Remediation on SQLite (`ARCHITECTURE.md` D6): one `BEGIN IMMEDIATE` transaction per tenant file.
//! Taking the write lock up front is the per-tenant lock (a racing replica waits in
//! `busy_timeout`); the re-introspection, the statements and the audit row all run inside
//! it, since SQLite DDL is transactional (`ARCHITECTURE.md` section 5).
//!
//! A type change is a table rebuild (create, copy, drop, rename; see the planner). Its
//! `DROP TABLE` must not fire foreign-key actions (`ON DELETE CASCADE` in a child table
//! would empty it), and `PRAGMA foreign_keys` is a no-op inside a transaction: so when a
//! step has the `table_rebuild` hazard, foreign keys are turned off on the connection
//! before `BEGIN IMMEDIATE`, `PRAGMA foreign_key_check` must find no violation involving a
//! rebuilt table before the commit (or everything is rolled back), and the setting is
//! restored afterwards. A connection whose settings were not verified restored (an error
//! while restoring, or the caller dropping the future at any await, for example on a
//! timeout while `BEGIN IMMEDIATE` waits for another writer) is closed instead of going
//! back to the pool the consumers share (see `AlteredConnection`).

use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant, SystemTime};

use contract_core::Dialect;
use contract_core::plan::Hazard;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::SqliteConnection;
use sqlx::{AssertSqlSafe, Connection, SqlSafeStr, Sqlite, SqlitePool};

use crate::error::{Error, Result};
use crate::remediation::audit::to_json;
use crate::remediation::{ApplyJob, failed};
use crate::remediation::{AuditConfig, AuditRecord, new_audit_id};

/// The primary result code `SQLITE_BUSY` (extended codes keep it in their low byte).
const SQLITE_BUSY: i64 = 5;

/// `CREATE TABLE IF NOT EXISTS` for the audit table in the tenant's file: run inside the
/// apply transaction, right before the audit row (SQLite DDL is transactional).
fn audit_table_ddl(audit: &AuditConfig) -> Result<String> {
    let table = Dialect::Sqlite.quote_qualified(Some("main"), &audit.table)?;
    // language=SQL
    Ok(format!(
        "CREATE TABLE IF NOT EXISTS {table} (
            audit_id TEXT PRIMARY KEY NOT NULL,
            tenant TEXT NOT NULL,
            plan_hash TEXT NOT NULL,
            statements TEXT NOT NULL,
            drift_before TEXT NOT NULL,
            status TEXT NOT NULL,
            actor TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            duration_ms INTEGER,
            error TEXT,
            approval_id TEXT,
            approved_by TEXT)"
    ))
}

/// Adds the approval columns to an audit table created before they existed.
async fn upgrade_audit_table(conn: &mut SqliteConnection, audit: &AuditConfig) -> sqlx::Result<()> {
    for column in ["approval_id", "approved_by"] {
        let present: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pragma_table_info(?, 'main') WHERE name = ?")
                .bind(&audit.table)
                .bind(column)
                .fetch_one(&mut *conn)
                .await?;
        if present == 0 {
            let table = Dialect::Sqlite
                .quote_qualified(Some("main"), &audit.table)
                .map_err(|e| sqlx::Error::InvalidArgument(e.to_string()))?;
            // Only quoted identifiers are formatted in.
            sqlx::raw_sql(AssertSqlSafe(format!(
                "ALTER TABLE {table} ADD COLUMN {column} TEXT"
            )))
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

/// Applies with bounded retries when the commit finds the file busy.
pub(super) async fn apply(pool: &SqlitePool, job: &ApplyJob<'_, Sqlite>) -> Result<AuditRecord> {
    let mut attempt = 1;
    loop {
        match apply_once(pool, job, attempt).await {
            // Waiting for the write lock itself already took `advisory_lock_wait`.
            Err(Error::Apply {
                source,
                stage,
                tenant,
                ..
            }) if stage != "begin immediate"
                && is_busy(&source)
                && attempt < job.options.max_attempts =>
            {
                tracing::warn!(%tenant, %stage, attempt, "database busy during remediation; retrying");
                tokio::time::sleep(job.options.backoff(attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn apply_once(
    pool: &SqlitePool,
    job: &ApplyJob<'_, Sqlite>,
    attempt: u32,
) -> Result<AuditRecord> {
    let tenant = job.tenant.as_str();
    let fail = |stage: &str| failed(tenant, attempt, stage);
    let started = Instant::now();
    let mut conn = AlteredConnection::new(pool.acquire().await.map_err(fail("connect"))?);
    check_own_file(&mut conn, tenant)
        .await
        .map_err(fail("connect"))??;
    let busy_timeout: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(&mut *conn)
        .await
        .map_err(fail("set timeouts"))?;
    let rebuilt = rebuilt_tables(job);
    // `Some(previous setting)` when a rebuild turned foreign keys off.
    let foreign_keys = if rebuilt.is_empty() {
        None
    } else {
        Some(
            foreign_keys_enabled(&mut conn)
                .await
                .map_err(fail("turn foreign keys off"))?,
        )
    };
    let result = match foreign_keys_off(&mut conn, foreign_keys).await {
        Ok(false) => in_transaction(&mut conn, job, attempt, started, &rebuilt).await,
        // Never rebuild with foreign keys enforced: the DROP TABLE would cascade.
        Ok(true) => Err(fail("turn foreign keys off")(sqlx::Error::InvalidArgument(
            "PRAGMA foreign_keys = OFF did not take effect; a table rebuild needs foreign keys off"
                .into(),
        ))),
        Err(error) => Err(fail("turn foreign keys off")(error)),
    };
    // Hand the pooled connection back with its own timeout and foreign-key setting (this
    // also runs the rollback of a failed transaction first); a connection that cannot be
    // reset, or whose future is dropped before it is, is closed instead.
    let mut reset = format!("PRAGMA busy_timeout = {busy_timeout}");
    if foreign_keys == Some(true) {
        reset.push_str("; PRAGMA foreign_keys = ON");
    }
    let restored = sqlx::raw_sql(AssertSqlSafe(reset))
        .execute(&mut *conn)
        .await;
    let fk_restored = match foreign_keys {
        Some(previous) => foreign_keys_enabled(&mut conn).await.ok() == Some(previous),
        None => true,
    };
    if restored.is_ok() && fk_restored {
        conn.restored();
    }
    result
}

/// A pooled connection whose session settings (`busy_timeout`, `foreign_keys`) an apply
/// changes. Dropped without [`AlteredConnection::restored`] (an error, or the future
/// dropped at any await) it is closed rather than returned to the pool: the pool is the
/// consumers' too, and a connection with foreign keys off would let their deletes skip
/// `ON DELETE CASCADE` and accept children of missing parents.
struct AlteredConnection {
    conn: PoolConnection<Sqlite>,
    restored: bool,
}

impl AlteredConnection {
    fn new(conn: PoolConnection<Sqlite>) -> Self {
        Self {
            conn,
            restored: false,
        }
    }

    /// The settings are verified restored: dropping `self` returns it to the pool.
    fn restored(mut self) {
        self.restored = true;
    }
}

impl Drop for AlteredConnection {
    fn drop(&mut self) {
        if !self.restored {
            self.conn.close_on_drop();
        }
    }
}

impl Deref for AlteredConnection {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        &self.conn
    }
}

impl DerefMut for AlteredConnection {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }
}

/// The tables a step rebuilds (`table_rebuild` hazard).
fn rebuilt_tables(job: &ApplyJob<'_, Sqlite>) -> Vec<String> {
    let mut tables: Vec<String> = job
        .steps
        .iter()
        .filter(|s| s.hazards.contains(&Hazard::TableRebuild))
        .map(|s| s.table.clone())
        .collect();
    tables.dedup();
    tables
}

/// Turns foreign-key enforcement off when it was on (`previous`), outside any transaction
/// where the pragma works, and returns whether it is still on.
async fn foreign_keys_off(
    conn: &mut SqliteConnection,
    previous: Option<bool>,
) -> sqlx::Result<bool> {
    if previous != Some(true) {
        return Ok(false);
    }
    sqlx::raw_sql("PRAGMA foreign_keys = OFF")
        .execute(&mut *conn)
        .await?;
    foreign_keys_enabled(conn).await
}

async fn foreign_keys_enabled(conn: &mut SqliteConnection) -> sqlx::Result<bool> {
    sqlx::query_scalar::<_, i64>("PRAGMA foreign_keys")
        .fetch_one(&mut *conn)
        .await
        .map(|on| on != 0)
}

/// One row of `PRAGMA foreign_key_check`.
#[derive(Debug)]
struct ForeignKeyViolation {
    table: String,
    rowid: Option<i64>,
    parent: String,
}

/// `PRAGMA foreign_key_check` after a rebuild: the violations whose child or parent is a
/// rebuilt table, described for the error (`None` when there is none).
async fn foreign_key_violations(
    conn: &mut SqliteConnection,
    rebuilt: &[String],
) -> sqlx::Result<Option<String>> {
    let rows: Vec<ForeignKeyViolation> = sqlx::query_as("PRAGMA foreign_key_check")
        .fetch_all(&mut *conn)
        .await?;
    let involved = |name: &str| rebuilt.iter().any(|t| t.eq_ignore_ascii_case(name));
    let found: Vec<String> = rows
        .iter()
        .filter(|r| involved(&r.table) || involved(&r.parent))
        .map(|r| {
            format!(
                "row {} of `{}` references a missing row of `{}`",
                r.rowid.map_or_else(|| "?".to_owned(), |id| id.to_string()),
                r.table,
                r.parent
            )
        })
        .collect();
    Ok((!found.is_empty()).then(|| {
        let shown = found.iter().take(5).cloned().collect::<Vec<_>>().join("; ");
        let more = found.len().saturating_sub(5);
        format!(
            "PRAGMA foreign_key_check found {} foreign-key violation(s) after rebuilding {}: {shown}{}",
            found.len(),
            rebuilt
                .iter()
                .map(|t| format!("`{t}`"))
                .collect::<Vec<_>>()
                .join(", "),
            if more > 0 {
                format!(" (and {more} more)")
            } else {
                String::new()
            }
        )
    }))
}

async fn in_transaction(
    conn: &mut SqliteConnection,
    job: &ApplyJob<'_, Sqlite>,
    attempt: u32,
    started: Instant,
    rebuilt: &[String],
) -> Result<AuditRecord> {
    let tenant = job.tenant.as_str();
    let fail = |stage: &str| failed(tenant, attempt, stage);
    // Only one writer per file: a racing replica waits here (`ARCHITECTURE.md` D10).
    set_busy_timeout(conn, job.options.advisory_lock_wait)
        .await
        .map_err(fail("set timeouts"))?;
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(fail("begin immediate"))?;
    set_busy_timeout(&mut tx, job.options.lock_timeout)
        .await
        .map_err(fail("set timeouts"))?;
    // Re-verify under the lock: a plan made on another schema is stale.
    let live = super::introspect_on(&mut tx, &job.schemas(), job.contracts)
        .await
        .map_err(fail("re-introspect under lock"))?;
    if !job.still_matches(&live) {
        return Err(Error::StalePlan {
            tenant: tenant.to_owned(),
        });
    }
    let started_at = now();
    let statements = job.statements();
    for statement in &statements {
        sqlx::raw_sql(AssertSqlSafe(statement.clone()))
            .execute(&mut *tx)
            .await
            .map_err(fail(statement))?;
    }
    if !rebuilt.is_empty() {
        // Foreign keys were off for the rebuild: prove nothing dangles before committing.
        let violations = foreign_key_violations(&mut tx, rebuilt)
            .await
            .map_err(fail("foreign key check"))?;
        if let Some(message) = violations {
            return Err(fail("foreign key check")(sqlx::Error::InvalidArgument(
                message,
            )));
        }
    }
    sqlx::raw_sql(AssertSqlSafe(audit_table_ddl(&job.options.audit)?))
        .execute(&mut *tx)
        .await
        .map_err(fail("audit table"))?;
    upgrade_audit_table(&mut tx, &job.options.audit)
        .await
        .map_err(fail("audit table"))?;
    let audit_id = new_audit_id();
    let table = Dialect::Sqlite.quote_qualified(Some("main"), &job.options.audit.table)?;
    let duration_ms = crate::remediation::elapsed_ms(started);
    // language=SQL
    let insert = format!(
        "INSERT INTO {table} (audit_id, tenant, plan_hash, statements, drift_before, status, actor, attempts, started_at, finished_at, duration_ms, approval_id, approved_by)
         VALUES (?, ?, ?, ?, ?, 'applied', ?, ?, ?, ?, ?, ?, ?)"
    );
    sqlx::query(AssertSqlSafe(insert).into_sql_str())
        .bind(&audit_id)
        .bind(tenant)
        .bind(&job.plan.hash)
        .bind(to_json(&statements))
        .bind(to_json(&job.drift_before))
        .bind(&job.options.audit.actor)
        .bind(i64::from(attempt))
        .bind(started_at)
        .bind(now())
        .bind(i64::try_from(duration_ms).unwrap_or(i64::MAX))
        .bind(job.approval.and_then(|a| a.id.as_deref()))
        .bind(job.approval.map(|a| a.approver.as_str()))
        .execute(&mut *tx)
        .await
        .map_err(fail("audit row"))?;
    tx.commit().await.map_err(fail("commit"))?;
    Ok(AuditRecord::applied(
        job,
        audit_id,
        statements,
        attempt,
        duration_ms,
    ))
}

/// The planner writes SQLite statements unqualified (one file per tenant), so a tenant
/// reached as an attached database of a shared connection is refused rather than
/// remediated through `main`.
async fn check_own_file(conn: &mut SqliteConnection, tenant: &str) -> sqlx::Result<Result<()>> {
    let databases: Vec<String> = sqlx::query_scalar(super::query::DATABASES)
        .fetch_all(&mut *conn)
        .await?;
    Ok(
        if tenant != "main" && databases.iter().any(|d| d == tenant) {
            Err(Error::Unsupported {
                dialect: Dialect::Sqlite,
                what: "remediation of an attached database (open one pool per tenant file)",
            })
        } else {
            Ok(())
        },
    )
}

async fn set_busy_timeout(conn: &mut SqliteConnection, timeout: Duration) -> sqlx::Result<()> {
    let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // Only a number is formatted into the pragma.
    sqlx::raw_sql(AssertSqlSafe(format!("PRAGMA busy_timeout = {millis}")))
        .execute(conn)
        .await
        .map(|_| ())
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn is_busy(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .and_then(|c| c.parse::<i64>().ok())
        .is_some_and(|c| c & 0xff == SQLITE_BUSY)
}

crate::from_row::impl_from_row!(sqlx::sqlite::SqliteRow => ForeignKeyViolation {
    table, rowid, parent,
});
