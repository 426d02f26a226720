//! Remediation on MySQL / MariaDB (`ARCHITECTURE.md` D6). DDL commits implicitly, so there is no
//! transaction to put the audit row in: it is written `pending` before the first
//! statement and settled `applied` or `failed` afterwards (`ARCHITECTURE.md` D6 and
//! section 5). One dedicated connection per tenant holds the per-tenant user lock
//! (`GET_LOCK`), the re-introspection under it, the session timeouts and the statements.

use std::time::{Duration, Instant};

use contract_core::Dialect;
use sqlx::mysql::MySqlConnection;
use sqlx::{AssertSqlSafe, Connection, MySql, MySqlPool, SqlSafeStr};

use crate::error::error_chain;
use crate::error::{Error, Result};
use crate::remediation::audit::to_json;
use crate::remediation::{ApplyJob, failed, outcome_unknown};
use crate::remediation::{AuditConfig, AuditRecord, new_audit_id};

/// `ER_LOCK_WAIT_TIMEOUT`: `lock_wait_timeout` (metadata lock) or
/// `innodb_lock_wait_timeout` (row lock) fired.
const LOCK_WAIT_TIMEOUT: u16 = 1205;
/// `ER_UNKNOWN_SYSTEM_VARIABLE`: `max_statement_time` is MariaDB's, not MySQL's.
const UNKNOWN_SYSTEM_VARIABLE: u16 = 1193;
/// MySQL rejects user-lock names longer than this (MariaDB has no limit).
const MAX_LOCK_NAME: usize = 64;

/// `CREATE TABLE IF NOT EXISTS` for the audit table in the tenant's database, run on the
/// locked connection before the pending audit row (safe when replicas race: the server
/// serialises it on the table's metadata lock).
fn audit_table_ddl(audit: &AuditConfig, tenant: &str) -> Result<String> {
    let table = Dialect::MySql.quote_qualified(Some(tenant), &audit.table)?;
    // `JSON` is a real type on MySQL and a checked `LONGTEXT` alias on MariaDB.
    // language=SQL
    Ok(format!(
        "CREATE TABLE IF NOT EXISTS {table} (
            audit_id VARCHAR(64) NOT NULL PRIMARY KEY,
            tenant VARCHAR(255) NOT NULL,
            plan_hash VARCHAR(64) NOT NULL,
            statements JSON NOT NULL,
            drift_before JSON NOT NULL,
            status VARCHAR(16) NOT NULL,
            actor VARCHAR(255) NOT NULL,
            attempts INT NOT NULL,
            started_at DATETIME(6) NOT NULL,
            finished_at DATETIME(6) NULL,
            duration_ms BIGINT NULL,
            error TEXT NULL,
            evidence TEXT NULL,
            approval_id VARCHAR(64) NULL,
            approved_by TEXT NULL)"
    ))
}

/// Columns later releases added to the audit table, added to a table an older one created.
const LATER_COLUMNS: [(&str, &str); 3] = [
    ("evidence", "TEXT NULL"),
    ("approval_id", "VARCHAR(64) NULL"),
    ("approved_by", "TEXT NULL"),
];

/// Adds the [`LATER_COLUMNS`] a tenant's audit table lacks (one catalog read when none).
pub(super) async fn upgrade_audit_table(
    conn: &mut MySqlConnection,
    tenant: &str,
    audit: &AuditConfig,
) -> sqlx::Result<()> {
    let present: Vec<String> = sqlx::query_scalar(
        "SELECT COLUMN_NAME FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND COLUMN_NAME IN (?, ?, ?)",
    )
    .bind(tenant)
    .bind(&audit.table)
    .bind(LATER_COLUMNS[0].0)
    .bind(LATER_COLUMNS[1].0)
    .bind(LATER_COLUMNS[2].0)
    .fetch_all(&mut *conn)
    .await?;
    let table = Dialect::MySql
        .quote_qualified(Some(tenant), &audit.table)
        .map_err(|e| sqlx::Error::InvalidArgument(e.to_string()))?;
    for (column, definition) in LATER_COLUMNS {
        if !present.iter().any(|p| p.eq_ignore_ascii_case(column)) {
            // Only a quoted identifier and fixed text are formatted in.
            sqlx::raw_sql(AssertSqlSafe(format!(
                "ALTER TABLE {table} ADD COLUMN {column} {definition}"
            )))
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

/// Applies one tenant's steps under its user lock, with bounded retries of a statement
/// that hit `lock_wait_timeout`.
pub(super) async fn apply(pool: &MySqlPool, job: &ApplyJob<'_, MySql>) -> Result<AuditRecord> {
    let tenant = job.tenant.as_str();
    let started = Instant::now();
    let mut conn = pool.acquire().await.map_err(failed(tenant, 1, "connect"))?;
    // The user lock and the session timeouts belong to this connection only: it is closed
    // rather than returned to the pool, even if this future is dropped half-way, and
    // closing it releases the lock.
    conn.close_on_drop();
    let lock = lock_name(tenant);
    // Only one replica remediates a tenant at a time (`ARCHITECTURE.md` D10).
    let acquired: i64 = sqlx::query_scalar("SELECT COALESCE(GET_LOCK(?, ?), -1)")
        .bind(&lock)
        .bind(whole_seconds(job.options.advisory_lock_wait))
        .fetch_one(&mut *conn)
        .await
        .map_err(failed(tenant, 1, "advisory lock"))?;
    if acquired != 1 {
        // `GET_LOCK` says 0 when the wait ran out, NULL (here -1) when it failed otherwise
        // (the session was killed, say).
        let why = if acquired == 0 {
            format!(
                "another apply or reconcile of this tenant (by this or another replica) held its lock `{lock}` for longer than {} s",
                whole_seconds(job.options.advisory_lock_wait)
            )
        } else {
            format!("the server did not grant the tenant's lock `{lock}` (GET_LOCK returned NULL)")
        };
        return Err(failed(tenant, 1, "advisory lock")(sqlx::Error::Io(
            std::io::Error::new(std::io::ErrorKind::TimedOut, why),
        )));
    }
    let result = locked(pool, &mut conn, job, started).await;
    // Release at once so a waiting replica proceeds (closing would release it too).
    let _ = sqlx::query("DO RELEASE_LOCK(?)")
        .bind(&lock)
        .execute(&mut *conn)
        .await;
    result
}

/// Everything done while holding the tenant's lock.
async fn locked(
    pool: &MySqlPool,
    conn: &mut MySqlConnection,
    job: &ApplyJob<'_, MySql>,
    started: Instant,
) -> Result<AuditRecord> {
    let tenant = job.tenant.as_str();
    set_timeouts(conn, job)
        .await
        .map_err(failed(tenant, 1, "set timeouts"))?;
    // Re-verify under the lock: a plan made on another schema is stale.
    let live = super::introspect_on(conn, &job.schemas(), job.contracts)
        .await
        .map_err(failed(tenant, 1, "re-introspect under lock"))?;
    if !job.still_matches(&live) {
        return Err(Error::StalePlan {
            tenant: tenant.to_owned(),
        });
    }

    let statements = job.statements();
    let audit = Audit {
        table: Dialect::MySql.quote_qualified(Some(tenant), &job.options.audit.table)?,
        id: new_audit_id(),
    };
    sqlx::raw_sql(AssertSqlSafe(audit_table_ddl(&job.options.audit, tenant)?))
        .execute(&mut *conn)
        .await
        .map_err(failed(
            tenant,
            1,
            "creating the audit table (grant CREATE on the tenant database, or create it beforehand)",
        ))?;
    upgrade_audit_table(conn, tenant, &job.options.audit)
        .await
        .map_err(failed(tenant, 1, "upgrading the audit table"))?;
    // Written and committed before any DDL: a crash mid-way leaves it `pending`.
    audit
        .insert_pending(conn, job, &statements)
        .await
        .map_err(failed(tenant, 1, "audit row"))?;

    let (mut attempts, mut applied) = (1, Vec::new());
    let mut failure = None;
    'statements: for statement in &statements {
        loop {
            match sqlx::raw_sql(AssertSqlSafe(statement.clone()))
                .execute(&mut *conn)
                .await
            {
                Ok(_) => {
                    applied.push(statement.clone());
                    break;
                }
                // The statement waited for a metadata lock and did nothing: run it again.
                Err(error)
                    if is_lock_wait_timeout(&error) && attempts < job.options.max_attempts =>
                {
                    tracing::warn!(%tenant, %statement, attempts, "lock wait timeout during remediation; retrying");
                    tokio::time::sleep(job.options.backoff(attempts)).await;
                    attempts += 1;
                }
                Err(error) => {
                    failure = Some((statement.clone(), error));
                    break 'statements;
                }
            }
        }
    }

    let duration_ms = crate::remediation::elapsed_ms(started);
    let Some((stage, source)) = failure else {
        let settled = audit
            .settle(conn, "applied", attempts, duration_ms, None)
            .await;
        return match settled {
            Ok(()) => Ok(AuditRecord::applied(
                job,
                audit.id,
                statements,
                attempts,
                duration_ms,
            )),
            Err(source) => Err(Error::AuditNotSettled {
                tenant: tenant.to_owned(),
                audit_id: audit.id,
                source,
            }),
        };
    };
    if outcome_unknown(&source) {
        // The connection was lost during the statement: the server may have run it (DDL
        // commits implicitly). `failed` could be a lie; the row stays `pending`.
        return Err(Error::OutcomeUnknown {
            tenant: tenant.to_owned(),
            stage,
            audit_id: audit.id,
            source,
        });
    }
    // The row lists every planned statement: its error says which of them ran and stay.
    let text = if applied.is_empty() {
        error_chain(&source)
    } else {
        format!(
            "{} of {} statement(s) had been applied and stay (MySQL cannot roll back DDL): {}; then `{stage}` failed: {}",
            applied.len(),
            statements.len(),
            applied.join("; "),
            error_chain(&source)
        )
    };
    let settled = audit
        .settle(conn, "failed", attempts, duration_ms, Some(&text))
        .await;
    if let Err(error) = settled {
        // The statement may have broken the session (killed, timed out): try a fresh one.
        let retried = match MySqlConnection::connect_with(&pool.connect_options()).await {
            Ok(mut fresh) => {
                let result = audit
                    .settle(&mut fresh, "failed", attempts, duration_ms, Some(&text))
                    .await;
                let _ = fresh.close().await;
                result
            }
            Err(connect) => Err(connect),
        };
        if let Err(retry) = retried {
            tracing::error!(%tenant, audit_id = %audit.id, error = %error, retry = %retry,
                "cannot mark the audit row failed; it stays pending");
        }
    }
    if applied.is_empty() {
        // Each DDL statement is atomic: the one that failed left the tenant unchanged.
        Err(failed(tenant, attempts, &stage)(source))
    } else {
        Err(Error::PartiallyApplied {
            tenant: tenant.to_owned(),
            stage,
            applied,
            audit_id: audit.id,
            source: Box::new(source),
        })
    }
}

/// The audit row of one remediation.
struct Audit {
    table: String,
    id: String,
}

impl Audit {
    async fn insert_pending(
        &self,
        conn: &mut MySqlConnection,
        job: &ApplyJob<'_, MySql>,
        statements: &[String],
    ) -> sqlx::Result<()> {
        let table = &self.table;
        // language=SQL
        let insert = format!(
            "INSERT INTO {table} (audit_id, tenant, plan_hash, statements, drift_before, status, actor, attempts, started_at, approval_id, approved_by)
             VALUES (?, ?, ?, ?, ?, 'pending', ?, 1, UTC_TIMESTAMP(6), ?, ?)"
        );
        sqlx::query(AssertSqlSafe(insert).into_sql_str())
            .bind(&self.id)
            .bind(job.tenant.as_str())
            .bind(&job.plan.hash)
            .bind(to_json(&statements))
            .bind(to_json(&job.drift_before))
            .bind(&job.options.audit.actor)
            .bind(job.approval.and_then(|a| a.id.as_deref()))
            .bind(job.approval.map(|a| a.approver.as_str()))
            .execute(conn)
            .await
            .map(|_| ())
    }

    async fn settle(
        &self,
        conn: &mut MySqlConnection,
        status: &str,
        attempts: u32,
        duration_ms: u64,
        error: Option<&str>,
    ) -> sqlx::Result<()> {
        let table = &self.table;
        // language=SQL
        let update = format!(
            "UPDATE {table} SET status = ?, attempts = ?, finished_at = UTC_TIMESTAMP(6), duration_ms = ?, error = ?
             WHERE audit_id = ?"
        );
        sqlx::query(AssertSqlSafe(update).into_sql_str())
            .bind(status)
            .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
            .bind(i64::try_from(duration_ms).unwrap_or(i64::MAX))
            .bind(error)
            .bind(&self.id)
            .execute(conn)
            .await
            .map(|_| ())
    }
}

/// Session timeouts of the dedicated connection: `lock_wait_timeout` bounds the
/// metadata-lock wait of the DDL (rule 32), `max_statement_time` (MariaDB) or
/// `max_execution_time` (MySQL, `SELECT` only) each statement.
async fn set_timeouts(conn: &mut MySqlConnection, job: &ApplyJob<'_, MySql>) -> sqlx::Result<()> {
    let lock = whole_seconds(job.options.lock_timeout);
    // Only numbers are formatted into these statements.
    sqlx::raw_sql(AssertSqlSafe(format!(
        "SET SESSION lock_wait_timeout = {lock}, SESSION innodb_lock_wait_timeout = {lock}"
    )))
    .execute(&mut *conn)
    .await?;
    let statement_ms = crate::remediation::timeout_ms(job.options.statement_timeout);
    let mariadb = sqlx::raw_sql(AssertSqlSafe(format!(
        "SET SESSION max_statement_time = {}",
        seconds_text(statement_ms)
    )))
    .execute(&mut *conn)
    .await;
    match mariadb {
        Err(error) if error_number(&error) == Some(UNKNOWN_SYSTEM_VARIABLE) => {
            sqlx::raw_sql(AssertSqlSafe(format!(
                "SET SESSION max_execution_time = {statement_ms}"
            )))
            .execute(&mut *conn)
            .await?;
        }
        other => {
            other?;
        }
    }
    Ok(())
}

/// `contract:tenant:<tenant>`, or a digest of it when it would exceed MySQL's limit.
pub(super) fn lock_name(tenant: &str) -> String {
    let name = format!("contract:tenant:{tenant}");
    if name.len() <= MAX_LOCK_NAME {
        name
    } else {
        format!(
            "contract:tenant:{}",
            &contract_core::digest_hex(tenant.as_bytes())[..40]
        )
    }
}

/// `ms` milliseconds as seconds with three decimals (MariaDB's `max_statement_time`).
fn seconds_text(ms: u64) -> String {
    format!("{}.{:03}", ms / 1_000, ms % 1_000)
}

/// Whole seconds, rounded up, at least 1 (the servers' lock timeouts are in seconds).
fn whole_seconds(duration: Duration) -> u64 {
    crate::remediation::timeout_ms(duration).div_ceil(1_000)
}

pub(super) fn error_number(error: &sqlx::Error) -> Option<u16> {
    error
        .as_database_error()
        .and_then(|e| e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        .map(sqlx::mysql::MySqlDatabaseError::number)
}

fn is_lock_wait_timeout(error: &sqlx::Error) -> bool {
    error_number(error) == Some(LOCK_WAIT_TIMEOUT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_name_fits_mysql_limit() {
        assert_eq!(lock_name("tenant_1"), "contract:tenant:tenant_1");
        // The longest tenant that fits is kept verbatim; one byte more is digested.
        let prefix = "contract:tenant:";
        let fits = "t".repeat(MAX_LOCK_NAME - prefix.len());
        assert_eq!(lock_name(&fits), format!("{prefix}{fits}"));
        let long = "t".repeat(64);
        for tenant in [format!("{fits}t"), long.clone(), format!("{long}x")] {
            let name = lock_name(&tenant);
            assert!(name.len() <= MAX_LOCK_NAME, "{name}");
            assert!(name.starts_with(prefix), "{name}");
            assert!(!name.contains(&tenant), "{name} must be a digest");
        }
        // Distinct long tenants never share a lock, even with a common prefix.
        assert_ne!(lock_name(&long), lock_name(&format!("{long}x")));
        assert_ne!(lock_name(&fits), lock_name(&format!("{fits}t")));
    }

    #[test]
    fn a_statement_bound_is_never_zero_which_mariadb_and_mysql_read_as_no_limit() {
        use crate::remediation::timeout_ms;
        assert_eq!(seconds_text(timeout_ms(Duration::ZERO)), "0.001");
        assert_eq!(
            seconds_text(timeout_ms(Duration::from_micros(400))),
            "0.001"
        );
        assert_eq!(
            seconds_text(timeout_ms(Duration::from_millis(2_500))),
            "2.500"
        );
    }

    #[test]
    fn whole_seconds_round_up_and_never_zero() {
        assert_eq!(whole_seconds(Duration::from_millis(0)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(whole_seconds(Duration::from_secs(3)), 3);
    }
}
