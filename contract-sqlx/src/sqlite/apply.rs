//! Remediation on SQLite (DESIGN D6): one `BEGIN IMMEDIATE` transaction per tenant file.
//! Taking the write lock up front is the per-tenant lock (a racing replica waits in
//! `busy_timeout`); the re-introspection, the statements and the audit row all run inside
//! it, since SQLite DDL is transactional (schema-diff-prior-art §4 rule 33).

use std::time::{Duration, Instant, SystemTime};

use contract_core::Dialect;
use sqlx::sqlite::SqliteConnection;
use sqlx::{AssertSqlSafe, Connection, SqlSafeStr, Sqlite, SqlitePool};

use crate::apply::ApplyJob;
use crate::audit::{AuditConfig, AuditRecord, new_audit_id};
use crate::error::{Error, Result};

/// The primary result code `SQLITE_BUSY` (extended codes keep it in their low byte).
const SQLITE_BUSY: i64 = 5;

/// Creates the audit table in the tenant's file if it is missing.
pub(super) async fn ensure_audit_table(
    pool: &SqlitePool,
    audit: &AuditConfig,
    tenant: &str,
) -> Result<()> {
    let context = "creating the audit table";
    let mut conn = pool
        .acquire()
        .await
        .map_err(Error::db(context, Some(tenant)))?;
    check_own_file(&mut conn, tenant)
        .await
        .map_err(Error::db(context, Some(tenant)))??;
    let table = Dialect::Sqlite.quote_qualified(Some("main"), &audit.table)?;
    // language=SQL
    let ddl = format!(
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
            error TEXT)"
    );
    sqlx::raw_sql(AssertSqlSafe(ddl))
        .execute(&mut *conn)
        .await
        .map_err(Error::db(context, Some(tenant)))?;
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
    let fail = |stage: &str| {
        let stage = stage.to_owned();
        move |source| Error::Apply {
            tenant: tenant.to_owned(),
            attempts: attempt,
            stage,
            source,
        }
    };
    let started = Instant::now();
    let mut conn = pool.acquire().await.map_err(fail("connect"))?;
    check_own_file(&mut conn, tenant)
        .await
        .map_err(fail("connect"))??;
    let busy_timeout: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(&mut *conn)
        .await
        .map_err(fail("set timeouts"))?;
    let result = in_transaction(&mut conn, job, attempt, started).await;
    // Hand the pooled connection back with its own timeout (this also runs the rollback
    // of a failed transaction); a connection that cannot be reset is closed instead.
    let restored = sqlx::raw_sql(AssertSqlSafe(format!(
        "PRAGMA busy_timeout = {busy_timeout}"
    )))
    .execute(&mut *conn)
    .await;
    if restored.is_err() {
        conn.close_on_drop();
    }
    result
}

async fn in_transaction(
    conn: &mut SqliteConnection,
    job: &ApplyJob<'_, Sqlite>,
    attempt: u32,
    started: Instant,
) -> Result<AuditRecord> {
    let tenant = job.tenant.as_str();
    let fail = |stage: &str| {
        let stage = stage.to_owned();
        move |source| Error::Apply {
            tenant: tenant.to_owned(),
            attempts: attempt,
            stage,
            source,
        }
    };
    // Only one writer per file: a racing replica waits here (DESIGN D10).
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
    let mut schemas = vec![tenant.to_owned()];
    schemas.extend(job.contracts.fixed_schemas());
    let live = super::introspect_on(&mut tx, &schemas, job.contracts)
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
    let audit_id = new_audit_id(tenant);
    let table = Dialect::Sqlite.quote_qualified(Some("main"), &job.options.audit.table)?;
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    // language=SQL
    let insert = format!(
        "INSERT INTO {table} (audit_id, tenant, plan_hash, statements, drift_before, status, actor, attempts, started_at, finished_at, duration_ms)
         VALUES (?, ?, ?, ?, ?, 'applied', ?, ?, ?, ?, ?)"
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
        .execute(&mut *tx)
        .await
        .map_err(fail("audit row"))?;
    tx.commit().await.map_err(fail("commit"))?;
    Ok(AuditRecord {
        audit_id,
        tenant: tenant.to_owned(),
        plan_hash: job.plan.hash.clone(),
        statements,
        status: "applied".into(),
        attempts: attempt,
        duration_ms,
    })
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

fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

fn is_busy(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .and_then(|c| c.parse::<i64>().ok())
        .is_some_and(|c| c & 0xff == SQLITE_BUSY)
}
