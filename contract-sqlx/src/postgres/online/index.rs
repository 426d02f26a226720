//! An index built `CONCURRENTLY` by a resumable step: skipped when a valid one is there,
//! dropped and built again when an interrupted build left it invalid.

use sqlx::{AssertSqlSafe, PgPool};

use crate::error::Result;

/// Runs `build` (a `CREATE [UNIQUE] INDEX CONCURRENTLY` of the index `qualified`,
/// `"schema"."name"`) unless that index exists and is valid; an invalid one (a build
/// interrupted earlier) is dropped `CONCURRENTLY` first. Neither stops the table's writers.
/// Errors name `tenant`.
pub(super) async fn build_concurrently(
    pool: &PgPool,
    tenant: &str,
    qualified: &str,
    build: String,
) -> Result<()> {
    let db = |context| super::step_failed(context, tenant);
    let valid: Option<bool> = sqlx::query_scalar(
        "SELECT x.indisvalid FROM pg_index x WHERE x.indexrelid = to_regclass($1)",
    )
    .bind(qualified)
    .fetch_optional(pool)
    .await
    .map_err(db("looking up an index built online"))?;
    if valid == Some(true) {
        return Ok(());
    }
    if valid == Some(false) {
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP INDEX CONCURRENTLY IF EXISTS {qualified}"
        )))
        .execute(pool)
        .await
        .map_err(db("dropping an invalid index built online"))?;
    }
    sqlx::raw_sql(AssertSqlSafe(build))
        .execute(pool)
        .await
        .map_err(db("building an index concurrently"))?;
    Ok(())
}
