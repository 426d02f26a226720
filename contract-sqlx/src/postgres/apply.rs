//! Remediation on PostgreSQL: one transaction per tenant, with the audit row inside it.

use std::time::Instant;

use sqlx::{AssertSqlSafe, PgPool, Postgres, SqlSafeStr, Transaction};

use crate::error::{Error, Result};
use crate::remediation::{ApplyJob, failed, outcome_unknown};
use crate::remediation::{AuditConfig, AuditRecord, new_audit_id};

/// SQLSTATE `lock_not_available`: `lock_timeout` fired.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// Creates the audit table if missing, under an advisory lock so racing replicas do not
/// collide on the catalog.
pub(super) async fn ensure_audit_table(pool: &PgPool, audit: &AuditConfig) -> Result<()> {
    let table =
        contract_core::Dialect::Postgres.quote_qualified(Some(&audit.schema), &audit.table)?;
    // language=SQL
    let ddl = format!(
        "CREATE TABLE IF NOT EXISTS {table} (
            audit_id text PRIMARY KEY,
            tenant text NOT NULL,
            plan_hash text NOT NULL,
            statements jsonb NOT NULL,
            drift_before jsonb NOT NULL,
            status text NOT NULL,
            actor text NOT NULL,
            attempts int4 NOT NULL,
            started_at timestamptz NOT NULL,
            finished_at timestamptz NOT NULL,
            duration_ms int8 NOT NULL,
            approval_id text,
            approved_by text);
         ALTER TABLE {table} ADD COLUMN IF NOT EXISTS approval_id text,
             ADD COLUMN IF NOT EXISTS approved_by text,
             ADD COLUMN IF NOT EXISTS phase int4,
             ADD COLUMN IF NOT EXISTS transactions jsonb"
    );
    let context = "creating the audit table";
    super::ddl::create_under_lock(pool, "contract:audit-table", ddl, context).await
}

/// Applies with bounded retries on lock timeout.
pub(super) async fn apply(pool: &PgPool, job: &ApplyJob<'_, Postgres>) -> Result<AuditRecord> {
    if job.steps.iter().any(|s| s.online.is_some()) {
        return super::online::apply_online(pool, job).await;
    }
    apply_statements(pool, job).await
}

/// Applies steps that are all statements (no online type change): in the tenant's one
/// transaction, or in their phases' transactions.
pub(super) async fn apply_statements(
    pool: &PgPool,
    job: &ApplyJob<'_, Postgres>,
) -> Result<AuditRecord> {
    if crate::remediation::phases::is_phased(&job.steps) {
        return super::online::apply_phased(pool, job).await;
    }
    let mut attempt = 1;
    loop {
        match apply_once(pool, job, attempt).await {
            Err(Error::Apply {
                source,
                stage,
                tenant,
                ..
            }) if is_lock_timeout(&source) && attempt < job.options.max_attempts => {
                tracing::warn!(%tenant, %stage, attempt, "lock timeout during remediation; retrying");
                tokio::time::sleep(job.options.backoff(attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

pub(super) fn is_lock_timeout(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|c| c == LOCK_NOT_AVAILABLE)
}

async fn apply_once(
    pool: &PgPool,
    job: &ApplyJob<'_, Postgres>,
    attempt: u32,
) -> Result<AuditRecord> {
    let tenant = job.tenant.as_str();
    let fail = |stage: &str| failed(tenant, attempt, stage);
    let started = Instant::now();
    // One round trip: the transaction, the wait bound for the tenant's lock, and generic
    // plans for the re-check (see `recheck.rs`). `SET LOCAL` ends with the transaction.
    // The lock is not taken in the same message: a `BEGIN` that sqlx has not confirmed is
    // never rolled back by it, so a lock wait that timed out (or a future dropped while it
    // waited) would hand the connection back to the pool inside the transaction.
    let begin = format!(
        "BEGIN; SET LOCAL statement_timeout = '{}'; SET LOCAL plan_cache_mode = force_generic_plan",
        millis(job.options.advisory_lock_wait)
    );
    let mut tx = pool
        .begin_with(AssertSqlSafe(begin))
        .await
        .map_err(fail("begin"))?;
    // Only one replica remediates a tenant at a time.
    super::ddl::xact_lock(&mut tx, &super::ddl::tenant_lock_name(tenant))
        .await
        .map_err(fail("advisory lock"))?;
    // Re-verify under the lock what the steps touch: a plan made on another schema is
    // stale.
    let mut tables: Vec<String> = job.rechecked_tables().into_iter().map(|(_, t)| t).collect();
    tables.sort_unstable();
    tables.dedup();
    let live = super::recheck::reintrospect(&mut tx, &job.schemas(), &tables, job.contracts)
        .await
        .map_err(fail("re-introspect under lock"))?;
    if !job.still_matches(&live) {
        return Err(Error::StalePlan {
            tenant: tenant.to_owned(),
        });
    }
    // The DDL's own bounds, and a pinned search path and time zone, travel with its first
    // statement. (Not earlier: the re-check must see the search path the check saw, as
    // `format_type` names a type by it.)
    let statements = job.statements();
    let bounds = format!(
        "SET LOCAL lock_timeout = '{}'; SET LOCAL statement_timeout = '{}'; \
         SET LOCAL search_path = pg_catalog, pg_temp; SET LOCAL TimeZone = 'UTC'; ",
        millis(job.options.lock_timeout),
        millis(job.options.statement_timeout)
    );
    for (i, statement) in statements.iter().enumerate() {
        let sql = if i == 0 {
            format!("{bounds}{statement}")
        } else {
            statement.clone()
        };
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await
            .map_err(fail(statement))?;
    }
    let audit_id = new_audit_id();
    let table = contract_core::Dialect::Postgres
        .quote_qualified(Some(&job.options.audit.schema), &job.options.audit.table)?;
    let duration_ms = crate::remediation::elapsed_ms(started);
    // language=SQL
    let insert = format!(
        "INSERT INTO {table} (audit_id, tenant, plan_hash, statements, drift_before, status, actor, attempts, started_at, finished_at, duration_ms, approval_id, approved_by)
         VALUES ($1, $2, $3, $4, $5, 'applied', $6, $7, now(), clock_timestamp(), $8, $9, $10)"
    );
    sqlx::query(AssertSqlSafe(insert).into_sql_str())
        .bind(&audit_id)
        .bind(tenant)
        .bind(&job.plan.hash)
        .bind(sqlx::types::Json(&statements))
        .bind(sqlx::types::Json(&job.drift_before))
        .bind(&job.options.audit.actor)
        .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
        .bind(i64::try_from(duration_ms).unwrap_or(i64::MAX))
        .bind(job.approval.and_then(|a| a.id.as_deref()))
        .bind(job.approval.map(|a| a.approver.as_str()))
        .execute(&mut *tx)
        .await
        .map_err(fail("audit row"))?;
    // A commit whose answer was lost may have taken effect: never report it unchanged.
    tx.commit().await.map_err(|source| {
        if outcome_unknown(&source) {
            Error::OutcomeUnknown {
                tenant: tenant.to_owned(),
                stage: "commit".into(),
                audit_id: audit_id.clone(),
                source,
            }
        } else {
            fail("commit")(source)
        }
    })?;
    Ok(AuditRecord::applied(
        job,
        audit_id,
        statements,
        attempt,
        duration_ms,
    ))
}

/// A duration as a PostgreSQL setting value (`"2000ms"`).
fn millis(value: std::time::Duration) -> String {
    format!("{}ms", value.as_millis())
}

/// `SET LOCAL name = value` for a duration setting, as one statement.
pub(super) async fn set_local(
    tx: &mut Transaction<'_, Postgres>,
    name: &str,
    value: std::time::Duration,
) -> sqlx::Result<()> {
    sqlx::query("SELECT set_config($1, $2, true)")
        .bind(name)
        .bind(millis(value))
        .execute(&mut **tx)
        .await
        .map(|_| ())
}
