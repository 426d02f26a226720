//! Resuming multi-transaction applies that a crash, a cut connection or a cancellation
//! stopped between transactions: their audit rows are `pending` with the transactions and
//! how many are committed; the next pass runs the rest.

use contract_core::TenantName;
use sqlx::{AssertSqlSafe, PgPool, Postgres, SqlSafeStr};

use super::phased::{Phased, Progress};
use crate::check::ContractSet;
use crate::error::error_chain;
use crate::remediation::phases::Transaction;
use crate::remediation::{ApplyOptions, AuditConfig, ReconcileOutcome, ReconciledAudit};

/// SQLSTATE `undefined_table` and `undefined_column`: no audit table yet, or one from a
/// version without multi-transaction applies (then no row can be pending).
const NO_SUCH_TABLE_OR_COLUMN: [&str; 2] = ["42P01", "42703"];

/// Resumes every pending multi-transaction apply of `tenants`, oldest first, with the
/// default timeouts and retries. Best effort: a failure is logged, reported as `unknown`
/// with the error, and the row stays pending for the next pass.
pub(in crate::postgres) async fn resume_pending(
    pool: &PgPool,
    tenants: &[TenantName],
    _contracts: &ContractSet<Postgres>,
    audit: &AuditConfig,
) -> Vec<crate::remediation::ReconciledAudit> {
    let rows = match pending(pool, tenants, audit).await {
        Ok(rows) => rows,
        Err(error) => {
            let missing = error
                .as_database_error()
                .and_then(|e| e.code())
                .is_some_and(|c| NO_SUCH_TABLE_OR_COLUMN.contains(&c.as_ref()));
            if !missing {
                tracing::warn!(error = %error, "pending multi-transaction remediations not read; the next pass retries");
            }
            return Vec::new();
        }
    };
    let options = ApplyOptions {
        audit: audit.clone(),
        ..ApplyOptions::default()
    };
    let mut settled = Vec::new();
    for row in rows {
        let start = usize::try_from(row.phase).unwrap_or(0);
        let run = Phased {
            pool,
            tenant: &row.tenant,
            plan_hash: &row.plan_hash,
            audit_id: row.audit_id.clone(),
            transactions: row.transactions.0,
            options: &options,
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
            Ok(Progress::Skipped | Progress::Settled) => (
                ReconcileOutcome::Applied,
                "another replica completed or settled it meanwhile".to_owned(),
            ),
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

struct PendingRow {
    audit_id: String,
    tenant: String,
    plan_hash: String,
    phase: i32,
    transactions: sqlx::types::Json<Vec<Transaction>>,
}

async fn pending(
    pool: &PgPool,
    tenants: &[TenantName],
    audit: &AuditConfig,
) -> Result<Vec<PendingRow>, sqlx::Error> {
    let table = contract_core::Dialect::Postgres
        .quote_qualified(Some(&audit.schema), &audit.table)
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let names: Vec<&str> = tenants.iter().map(TenantName::as_str).collect();
    // language=SQL
    let select = format!(
        "SELECT audit_id, tenant, plan_hash, coalesce(phase, 0) AS phase, transactions FROM {table}
         WHERE status = 'pending' AND transactions IS NOT NULL AND tenant = ANY($1)
         ORDER BY started_at, audit_id"
    );
    sqlx::query_as(AssertSqlSafe(select).into_sql_str())
        .bind(names)
        .fetch_all(pool)
        .await
}

crate::from_row::impl_from_row!(sqlx::postgres::PgRow => PendingRow {
    audit_id, tenant, plan_hash, phase, transactions,
});
