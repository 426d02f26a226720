//! Creating the guard's own tables (audit, pauses, quarantine) on PostgreSQL, and the
//! advisory lock that serialises it (and each tenant's remediation).

use sqlx::{AssertSqlSafe, PgConnection, PgPool};

use crate::error::{Error, Result};

/// Runs `ddl` (idempotent `CREATE … IF NOT EXISTS` statements) in one transaction under
/// the advisory lock `lock`: replicas starting together would otherwise collide on the
/// catalog (`duplicate key value violates unique constraint "pg_type_typname_nsp_index"`).
pub(crate) async fn create_under_lock(
    pool: &PgPool,
    lock: &str,
    ddl: String,
    context: &'static str,
) -> Result<()> {
    let mut tx = pool.begin().await.map_err(Error::db(context, None))?;
    xact_lock(&mut tx, lock)
        .await
        .map_err(Error::db(context, None))?;
    sqlx::raw_sql(AssertSqlSafe(ddl))
        .execute(&mut *tx)
        .await
        .map_err(Error::db(context, None))?;
    tx.commit().await.map_err(Error::db(context, None))
}

/// Waits for the transaction-scoped advisory lock `name` (released at commit or rollback).
pub(crate) async fn xact_lock(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(name)
        .execute(conn)
        .await
        .map(drop)
}
