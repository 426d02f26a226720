//! Resuming multi-transaction applies that a crash, a cut connection or a cancellation
//! stopped between transactions: their audit rows are `pending` with the transactions and
//! how many are committed; the next pass runs the rest.
//!
//! A transaction that can no longer run because an object it names is gone (the plan's
//! `NOT VALID` check dropped by hand, its column renamed or dropped, the table or schema
//! gone) would fail the same way on every pass: its row is settled instead, judged against
//! the live schema as MySQL's interrupted applies are (`applied`, `failed` or `unknown`, with
//! the evidence), and the next remediation plans from the schema as it is. Any other
//! failure (a lock, the server away, a row that breaks the check being validated) leaves
//! the row pending for the next pass.

use contract_core::TenantName;
use sqlx::{AssertSqlSafe, PgPool, Postgres, SqlSafeStr};

use super::phased::{Phased, Progress};
use crate::check::ContractSet;
use crate::error::{Error, error_chain};
use crate::postgres::apply::has_code;
use crate::remediation::phases::Transaction;
use crate::remediation::{
    ApplyOptions, AuditConfig, ReconcileOutcome, ReconciledAudit, judge_live,
};

/// SQLSTATE `undefined_table` and `undefined_column`: no audit table yet, or one from a
/// version without multi-transaction applies (then no row can be pending).
const NO_SUCH_TABLE_OR_COLUMN: [&str; 2] = ["42P01", "42703"];

/// SQLSTATEs of an object a statement names that is not there: `undefined_object` (a
/// constraint), `undefined_column`, `undefined_table`, `invalid_schema_name`.
const GONE: [&str; 4] = ["42704", "42703", "42P01", "3F000"];

/// Resumes every pending multi-transaction apply of `tenants`, oldest first, with the
/// caller's timeouts, retries and audit table (a `VALIDATE` that needs a longer
/// `statement_timeout` than the default gets it on resume too). Best effort: a failure is logged, reported as `unknown`
/// with the error, and the row stays pending for the next pass.
pub(in crate::postgres) async fn resume_pending(
    pool: &PgPool,
    tenants: &[TenantName],
    contracts: &ContractSet<Postgres>,
    options: &ApplyOptions,
) -> Vec<crate::remediation::ReconciledAudit> {
    let audit = &options.audit;
    let rows = match pending(pool, tenants, audit).await {
        Ok(rows) => rows,
        Err(error) => {
            if !has_code(&error, &NO_SUCH_TABLE_OR_COLUMN) {
                tracing::warn!(error = %error, "pending multi-transaction remediations not read; the next pass retries");
            }
            return Vec::new();
        }
    };
    let mut settled = Vec::new();
    for mut row in rows {
        let start = usize::try_from(row.phase).unwrap_or(0);
        let run = Phased {
            pool,
            tenant: &row.tenant,
            plan_hash: &row.plan_hash,
            audit_id: row.audit_id.clone(),
            transactions: std::mem::take(&mut row.transactions.0),
            options,
        };
        let total = run.transactions.len();
        let label = run
            .transactions
            .get(start)
            .map_or_else(String::new, |t| t.label.clone());
        let (outcome, evidence) = match run.resume(start).await {
            Ok(Progress::Ran) => (
                ReconcileOutcome::Applied,
                format!(
                    "resumed at transaction {} of {total} ({label}) and completed",
                    start + 1
                ),
            ),
            Ok(Progress::Skipped | Progress::Settled) => settled_elsewhere(),
            Err(Error::PhaseFailed {
                phase,
                stage,
                source,
                ..
            }) if has_code(&source, &GONE) => {
                let why =
                    format!("transaction {phase} of {total} ({stage}) can no longer run: {source}");
                settle(pool, &row, contracts, audit, &why).await
            }
            Err(error) => {
                let error = error_chain(&error);
                tracing::warn!(tenant = %row.tenant, audit_id = %row.audit_id, %error, "resuming a multi-transaction remediation failed; the next pass retries");
                (
                    ReconcileOutcome::Unknown,
                    format!(
                        "resuming at transaction {} of {total} ({label}) failed, the row stays pending and the next pass retries: {error}",
                        start + 1
                    ),
                )
            }
        };
        settled.push(ReconciledAudit {
            audit_id: row.audit_id,
            tenant: row.tenant,
            plan_hash: row.plan_hash,
            outcome,
            evidence,
        });
    }
    settled
}

/// The tenants among `tenants` with a pending multi-transaction apply
/// ([`resume_pending`] would run its next transaction). A failure to read is logged and
/// lists none (the resume then runs as before, when its tenant's apply fails).
pub(in crate::postgres) async fn tenants_to_resume(
    pool: &PgPool,
    tenants: &[TenantName],
    audit: &AuditConfig,
) -> Vec<TenantName> {
    let read = async {
        let table = audit_table(audit)?;
        let names: Vec<&str> = tenants.iter().map(TenantName::as_str).collect();
        // language=SQL
        let select = format!(
            "SELECT DISTINCT tenant FROM {table}
             WHERE status = 'pending' AND transactions IS NOT NULL AND tenant = ANY($1)"
        );
        sqlx::query_scalar::<_, String>(AssertSqlSafe(select).into_sql_str())
            .bind(names)
            .fetch_all(pool)
            .await
    };
    match read.await {
        Ok(pending) => tenants
            .iter()
            .filter(|t| pending.iter().any(|p| p == t.as_str()))
            .cloned()
            .collect(),
        Err(error) => {
            if !has_code(&error, &NO_SUCH_TABLE_OR_COLUMN) {
                tracing::warn!(error = %error, "pending multi-transaction remediations not read; none is put off");
            }
            Vec::new()
        }
    }
}

/// What a pending row that another replica completed or settled meanwhile is reported as.
fn settled_elsewhere() -> (ReconcileOutcome, String) {
    (
        ReconcileOutcome::Applied,
        "another replica completed or settled it meanwhile".to_owned(),
    )
}

/// Settles the pending row of an apply whose next transaction can no longer run (`why`):
/// its status judged against the live schema from the findings it fixes, with the
/// evidence. Should that fail, the row stays pending (`unknown`, the next pass tries again).
async fn settle(
    pool: &PgPool,
    row: &PendingRow,
    contracts: &ContractSet<Postgres>,
    audit: &AuditConfig,
    why: &str,
) -> (ReconcileOutcome, String) {
    match write_settled(pool, row, contracts, audit, why).await {
        Ok(Some(settled)) => settled,
        Ok(None) => settled_elsewhere(),
        Err(error) => {
            let error = error_chain(&error);
            tracing::warn!(tenant = %row.tenant, audit_id = %row.audit_id, %error, "settling a multi-transaction remediation that can no longer run failed; the next pass retries");
            (
                ReconcileOutcome::Unknown,
                format!(
                    "{why}; settling it failed, the row stays pending and the next pass retries: {error}"
                ),
            )
        }
    }
}

/// The judgement of [`settle`], written to the row; `None` when another replica settled or
/// completed it first.
async fn write_settled(
    pool: &PgPool,
    row: &PendingRow,
    contracts: &ContractSet<Postgres>,
    audit: &AuditConfig,
    why: &str,
) -> crate::error::Result<Option<(ReconcileOutcome, String)>> {
    let (outcome, judged) = judge_live(pool, &row.tenant, &row.drift_before, contracts).await?;
    let evidence = format!("{why}; settled by {}: {judged}", audit.actor);
    let table =
        contract_core::Dialect::Postgres.quote_qualified(Some(&audit.schema), &audit.table)?;
    // language=SQL
    let update = format!(
        "UPDATE {table} SET status = $2, finished_at = clock_timestamp(), evidence = $3
         WHERE audit_id = $1 AND status = 'pending'"
    );
    let updated = sqlx::query(AssertSqlSafe(update).into_sql_str())
        .bind(&row.audit_id)
        .bind(outcome.as_str())
        .bind(&evidence)
        .execute(pool)
        .await
        .map_err(Error::db_hint(
            "settling a pending audit row",
            crate::error::hint::TABLE,
            Some(&row.tenant),
        ))?;
    Ok((updated.rows_affected() == 1).then_some((outcome, evidence)))
}

struct PendingRow {
    audit_id: String,
    tenant: String,
    plan_hash: String,
    phase: i32,
    transactions: sqlx::types::Json<Vec<Transaction>>,
    /// The findings its steps fix, as JSON.
    drift_before: String,
}

async fn pending(
    pool: &PgPool,
    tenants: &[TenantName],
    audit: &AuditConfig,
) -> Result<Vec<PendingRow>, sqlx::Error> {
    let table = audit_table(audit)?;
    let names: Vec<&str> = tenants.iter().map(TenantName::as_str).collect();
    // language=SQL
    let select = format!(
        "SELECT audit_id, tenant, plan_hash, coalesce(phase, 0) AS phase, transactions,
                drift_before::text AS drift_before FROM {table}
         WHERE status = 'pending' AND transactions IS NOT NULL AND tenant = ANY($1)
         ORDER BY started_at, audit_id"
    );
    sqlx::query_as(AssertSqlSafe(select).into_sql_str())
        .bind(names)
        .fetch_all(pool)
        .await
}

/// The audit table's quoted, qualified name.
fn audit_table(audit: &AuditConfig) -> Result<String, sqlx::Error> {
    contract_core::Dialect::Postgres
        .quote_qualified(Some(&audit.schema), &audit.table)
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))
}

crate::from_row::impl_from_row!(sqlx::postgres::PgRow => PendingRow {
    audit_id, tenant, plan_hash, phase, transactions, drift_before,
});
