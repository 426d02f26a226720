//! What an interrupted shadow-column change of the same column left behind when this run
//! cannot resume it: a change to *another* type (its shadow column, trigger and
//! checkpoint; `ADD COLUMN IF NOT EXISTS` would keep that column, the backfill would cast
//! into its type and the swap would put that type in place), or a checkpoint whose shadow
//! column is gone (the backfill would resume past rows it never filled). Cleared before the
//! change begins, so it starts over.

use sqlx::{AssertSqlSafe, PgPool, SqlSafeStr};

use super::type_change::{Names, OnlineTypeChange, short_tx};
use crate::error::Result;
use contract_core::Dialect;

/// Unless the shadow column of `names` exists with this very change's checkpoint (a run
/// to resume): drops the shadow column, if any, with the trigger that fills it and the
/// indexes and check built on it, and every shadow-column checkpoint of this column. A
/// run always adds its shadow column and its checkpoint in one transaction, so either
/// without the other is a leftover.
pub(super) async fn discard_unresumable(
    pool: &PgPool,
    change: &OnlineTypeChange,
    names: &Names,
) -> Result<()> {
    let db = |context| super::step_failed(context, &change.schema);
    let context = "looking up what an earlier online change of the column left";
    let prefix = Dialect::Postgres.string_literal(&names.key_prefix)?;
    // The column's checkpoints: its key prefix followed by a type (no `::` after it, so
    // not those of a column whose name continues with `::`).
    let of_column = format!(
        "left(change, length({prefix})) = {prefix} AND strpos(substr(change, length({prefix}) + 1), '::') = 0"
    );
    let (shadow, resumable, others): (bool, bool, bool) = sqlx::query_as(
        AssertSqlSafe(format!(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2
                            AND attnum > 0 AND NOT attisdropped),
                    EXISTS (SELECT 1 FROM {p} WHERE change = $3),
                    EXISTS (SELECT 1 FROM {p} WHERE {of_column})",
            p = names.progress,
        ))
        .into_sql_str(),
    )
    .bind(&names.table)
    .bind(&names.shadow_raw)
    .bind(&names.key)
    .fetch_one(pool)
    .await
    .map_err(db(context))?;
    if (shadow && resumable) || (!shadow && !others) {
        return Ok(());
    }
    let discard = if shadow {
        tracing::warn!(table = %names.table, column = %change.column, shadow = %names.shadow_raw, "an interrupted online change of this column to another type left its shadow column; dropping it and starting over");
        format!(
            "DROP TRIGGER IF EXISTS {tr} ON {t};
             ALTER TABLE {t} DROP COLUMN IF EXISTS {s};
             DELETE FROM {p} WHERE {of_column}",
            tr = names.trigger,
            t = names.table,
            s = names.shadow,
            p = names.progress,
        )
    } else {
        tracing::warn!(table = %names.table, column = %change.column, "checkpoints of an online change of this column whose shadow column is gone; starting over");
        format!("DELETE FROM {} WHERE {of_column}", names.progress)
    };
    short_tx(
        pool,
        change,
        &discard,
        "dropping what an earlier online change of the column left",
    )
    .await
    .map(drop)
}
