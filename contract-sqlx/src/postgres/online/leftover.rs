//! What an interrupted shadow-column change of the same column to *another* type left
//! behind: its shadow column, trigger and checkpoint. `ADD COLUMN IF NOT EXISTS` keeps such
//! a column, so the backfill would cast into the old type and the swap would put that type
//! in place. It is dropped, with its checkpoints, before the change begins.

use sqlx::{AssertSqlSafe, PgPool, SqlSafeStr};

use super::type_change::{Names, OnlineTypeChange, short_tx};
use crate::error::Result;
use contract_core::Dialect;

/// Drops the shadow column of `names` when it exists with a type other than
/// `change.new_type`, with the trigger that fills it, the indexes and check built on it,
/// and every checkpoint of a change of this column (whatever its type).
pub(super) async fn discard_other_type(
    pool: &PgPool,
    change: &OnlineTypeChange,
    names: &Names,
) -> Result<()> {
    let db = |context| super::step_failed(context, &change.schema);
    let context = "comparing a leftover shadow column's type with the new type";
    let mut tx = pool.begin().await.map_err(db(context))?;
    let have: Option<String> = sqlx::query_scalar(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute
         WHERE attrelid = to_regclass($1) AND attname = $2 AND attnum > 0 AND NOT attisdropped",
    )
    .bind(&names.table)
    .bind(&names.shadow_raw)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db(context))?;
    let Some(have) = have else {
        return Ok(());
    };
    // The new type as the catalog spells it (`int8` is `bigint`, `numeric(20,2)` keeps its
    // modifier): a column of it, in a temporary table gone when the transaction ends.
    let probe = format!(
        "CREATE TEMPORARY TABLE contract_type_probe (probe {}) ON COMMIT DROP",
        change.new_type
    );
    sqlx::raw_sql(AssertSqlSafe(probe).into_sql_str())
        .execute(&mut *tx)
        .await
        .map_err(db(context))?;
    let want: String = sqlx::query_scalar(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute
         WHERE attrelid = 'pg_temp.contract_type_probe'::regclass AND attname = 'probe'",
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(db(context))?;
    tx.rollback().await.map_err(db(context))?;
    if have == want {
        return Ok(());
    }
    tracing::warn!(table = %names.table, column = %change.column, shadow = %names.shadow_raw, left_as = %have, new_type = %want, "an interrupted online change of this column to another type left its shadow column; dropping it and starting over");
    let prefix = Dialect::Postgres.string_literal(&names.key_prefix)?;
    let discard = format!(
        "DROP TRIGGER IF EXISTS {tr} ON {t};
         ALTER TABLE {t} DROP COLUMN {s};
         DELETE FROM {p} WHERE left(change, length({prefix})) = {prefix}",
        tr = names.trigger,
        t = names.table,
        s = names.shadow,
        p = names.progress,
    );
    short_tx(
        pool,
        change,
        &discard,
        "dropping a leftover shadow column of another type",
    )
    .await
    .map(drop)
}
