//! Creating the guard's own tables (audit, pauses, quarantine) on PostgreSQL.

use sqlx::{AssertSqlSafe, PgPool};

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
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(lock)
        .execute(&mut *tx)
        .await
        .map_err(Error::db(context, None))?;
    sqlx::raw_sql(AssertSqlSafe(ddl))
        .execute(&mut *tx)
        .await
        .map_err(Error::db(context, None))?;
    tx.commit().await.map_err(Error::db(context, None))
}
