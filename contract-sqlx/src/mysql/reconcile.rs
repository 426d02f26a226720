//! Settling audit rows left `pending` by an apply that was interrupted after its DDL (a
//! cancelled future, a cut connection, a killed process): MySQL DDL commits implicitly, so
//! the row written before it says nothing about what ran. The next run judges each such row
//! against the tenant's live schema, checked under the tenant's lock so an apply still in
//! progress on another replica is never judged.

use contract_core::{Dialect, TenantName};
use sqlx::mysql::MySqlConnection;
use sqlx::{AssertSqlSafe, MySql, MySqlPool, SqlSafeStr};

use super::apply::lock_name;
use crate::backend::binds::placeholders;
use crate::check::ContractSet;
use crate::error::{Error, Result, error_chain, hint};
use crate::remediation::{AuditConfig, ReconciledAudit, judge_live};

/// Tenant databases read per `UNION ALL` query.
const CHUNK: usize = 200;

/// One pending audit row.
#[derive(Debug)]
struct PendingRow {
    tenant: String,
    audit_id: String,
    plan_hash: String,
    drift_before: String,
}

pub(super) async fn reconcile(
    pool: &MySqlPool,
    tenants: &[TenantName],
    contracts: &ContractSet<MySql>,
    audit: &AuditConfig,
) -> Vec<ReconciledAudit> {
    let pending = match pending_rows(pool, tenants, audit).await {
        Ok(rows) => rows,
        Err(error) => {
            tracing::warn!(error = %error_chain(&error), "cannot read pending audit rows; they are reconciled next run");
            return Vec::new();
        }
    };
    let mut settled = Vec::new();
    if pending.is_empty() {
        return settled;
    }
    let mut conn = match pool.acquire().await {
        Ok(conn) => conn,
        Err(error) => {
            tracing::warn!(error = %error_chain(&error), "cannot reconcile pending audit rows; they are reconciled next run");
            return settled;
        }
    };
    // It takes tenant locks: closed rather than pooled if this future is dropped half-way
    // (closing releases them).
    conn.close_on_drop();
    for row in pending {
        let (tenant, audit_id) = (row.tenant.clone(), row.audit_id.clone());
        match settle(&mut conn, pool, row, contracts, audit).await {
            Ok(Some(done)) => {
                tracing::warn!(tenant = %done.tenant, audit_id = %done.audit_id, outcome = %done.outcome, evidence = %done.evidence, "pending audit row reconciled");
                settled.push(done);
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%tenant, %audit_id, error = %error_chain(&error), "cannot reconcile a pending audit row; it stays pending until the next run");
            }
        }
    }
    settled
}

/// The pending rows of every tenant database that has the audit table: one catalog query,
/// then one `UNION ALL` per [`CHUNK`] databases.
async fn pending_rows(
    pool: &MySqlPool,
    tenants: &[TenantName],
    audit: &AuditConfig,
) -> Result<Vec<PendingRow>> {
    let context = "reading pending audit rows";
    if tenants.is_empty() {
        return Ok(Vec::new());
    }
    // language=SQL
    let with_table = format!(
        "SELECT TABLE_SCHEMA FROM information_schema.TABLES WHERE TABLE_NAME = ? AND TABLE_SCHEMA IN ({})",
        placeholders(tenants.len())
    );
    let mut query = sqlx::query_scalar::<_, String>(AssertSqlSafe(with_table).into_sql_str())
        .bind(&audit.table);
    for tenant in tenants {
        query = query.bind(tenant.as_str());
    }
    let databases =
        query
            .fetch_all(pool)
            .await
            .map_err(Error::db_hint(context, hint::TABLE, None))?;
    let mut rows = Vec::new();
    for chunk in databases.chunks(CHUNK) {
        let mut selects = Vec::with_capacity(chunk.len());
        for database in chunk {
            let table = Dialect::MySql.quote_qualified(Some(database), &audit.table)?;
            // language=SQL
            selects.push(format!(
                "SELECT CAST(? AS CHAR) AS tenant, audit_id, plan_hash, CAST(drift_before AS CHAR) AS drift_before \
                 FROM {table} WHERE status = 'pending'"
            ));
        }
        let mut query = sqlx::query_as::<_, PendingRow>(
            AssertSqlSafe(selects.join(" UNION ALL ")).into_sql_str(),
        );
        for database in chunk {
            query = query.bind(database);
        }
        rows.extend(query.fetch_all(pool).await.map_err(Error::db_hint(
            context,
            hint::TABLE,
            None,
        ))?);
    }
    Ok(rows)
}

/// Judges and settles one row under its tenant's lock; `None` when another replica holds
/// the lock (its apply may still be running) or the row was settled meanwhile.
async fn settle(
    conn: &mut MySqlConnection,
    pool: &MySqlPool,
    row: PendingRow,
    contracts: &ContractSet<MySql>,
    audit: &AuditConfig,
) -> Result<Option<ReconciledAudit>> {
    let context = "reconciling a pending audit row";
    let tenant = TenantName::new(row.tenant.as_str())?;
    let lock = lock_name(tenant.as_str());
    let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, 0)")
        .bind(&lock)
        .fetch_one(&mut *conn)
        .await
        .map_err(Error::db_hint(context, hint::TABLE, Some(tenant.as_str())))?;
    if locked != Some(1) {
        return Ok(None);
    }
    let settled = settle_locked(conn, pool, &tenant, row, contracts, audit).await;
    let released = sqlx::query("DO RELEASE_LOCK(?)")
        .bind(&lock)
        .execute(&mut *conn)
        .await;
    let settled = settled?;
    released.map_err(Error::db_hint(context, hint::TABLE, Some(tenant.as_str())))?;
    Ok(settled)
}

async fn settle_locked(
    conn: &mut MySqlConnection,
    pool: &MySqlPool,
    tenant: &TenantName,
    row: PendingRow,
    contracts: &ContractSet<MySql>,
    audit: &AuditConfig,
) -> Result<Option<ReconciledAudit>> {
    let context = "reconciling a pending audit row";
    // The tenant as it is now that no apply can run on it.
    let (outcome, evidence) =
        judge_live(pool, tenant.as_str(), &row.drift_before, contracts).await?;
    let evidence = format!("reconciled by {}: {evidence}", audit.actor);
    let table = Dialect::MySql.quote_qualified(Some(tenant.as_str()), &audit.table)?;
    // Audit tables created before the `evidence` column existed gain it here.
    super::apply::upgrade_audit_table(conn, tenant.as_str(), audit)
        .await
        .map_err(Error::db_hint(context, hint::TABLE, Some(tenant.as_str())))?;
    // language=SQL
    let update = format!(
        "UPDATE {table} SET status = ?, finished_at = UTC_TIMESTAMP(6), evidence = ? \
         WHERE audit_id = ? AND status = 'pending'"
    );
    let updated = sqlx::query(AssertSqlSafe(update).into_sql_str())
        .bind(outcome.as_str())
        .bind(&evidence)
        .bind(&row.audit_id)
        .execute(&mut *conn)
        .await
        .map_err(Error::db_hint(context, hint::TABLE, Some(tenant.as_str())))?;
    Ok((updated.rows_affected() == 1).then(|| ReconciledAudit {
        audit_id: row.audit_id,
        tenant: tenant.to_string(),
        plan_hash: row.plan_hash,
        outcome,
        evidence,
    }))
}

crate::from_row::impl_from_row!(sqlx::mysql::MySqlRow => PendingRow {
    tenant, audit_id, plan_hash, drift_before,
});
