//! What an interrupted shadow-column change of the same column left behind when this run
//! cannot resume it: a change to *another* type (its shadow column, trigger and
//! checkpoint; `ADD COLUMN IF NOT EXISTS` would keep that column, the backfill would cast
//! into its type and the swap would put that type in place), or a checkpoint whose shadow
//! column is gone (the backfill would resume past rows it never filled). Cleared before the
//! change begins, so it starts over. And what such a change left on a column whose type is
//! now changed in place (`discard_before_plain`).

use contract_core::plan::Action;
use sqlx::{AssertSqlSafe, PgPool, Postgres, SqlSafeStr};

use super::type_change::{Names, OnlineTypeChange, short_tx};
use crate::error::Result;
use crate::remediation::ApplyJob;
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
    let db = |context| super::step_failed(context, change.tenant());
    let context = "looking up what an earlier online change of the column left";
    let of_column = checkpoints_of_column(names)?;
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

/// Before `job` changes a column's type in place: drops what an interrupted online change
/// of that column left (its trigger and function, its shadow column with the check and
/// indexes on it, its checkpoints). PostgreSQL refuses `ALTER … TYPE` on a column the
/// trigger's `WHEN` names, so such a column failed its remediation on every pass (a table
/// whose size estimate fell below the online threshold, or a threshold raised or turned
/// off, after a run was killed). One catalog lookup when the job changes a type, nothing
/// more unless a trigger is there. The drop waits, up to the job's `lock_timeout`, for the
/// tenant's online lock: a replica still running that change keeps it.
pub(in crate::postgres) async fn discard_before_plain(
    pool: &PgPool,
    job: &ApplyJob<'_, Postgres>,
) -> Result<()> {
    let tenant = job.tenant.as_str();
    let mut changes = Vec::new();
    for step in job
        .steps
        .iter()
        .filter(|s| s.action == Action::ChangeType && s.online.is_none())
    {
        let Some(column) = &step.column else { continue };
        let schema = job
            .planned_on
            .iter()
            .find(|t| t.name == step.table)
            .map_or(tenant, |t| t.schema.as_str());
        let mut change = OnlineTypeChange::new(schema, &step.table, column, "");
        change.tenant = Some(tenant.to_owned());
        let names = Names::new(&change)?;
        changes.push((change, names));
    }
    if changes.is_empty() {
        return Ok(());
    }
    let (tables, triggers): (Vec<&str>, Vec<&str>) = changes
        .iter()
        .map(|(_, n)| (n.table.as_str(), n.trigger_raw.as_str()))
        .unzip();
    let stage = "looking up what an interrupted online change left";
    // language=SQL
    let left: Vec<bool> = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass(t.r) AND tgname = t.g)
         FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(r, g, i) ORDER BY t.i",
    )
    .bind(tables)
    .bind(triggers)
    .fetch_all(pool)
    .await
    .map_err(crate::remediation::failed(tenant, 1, stage))?;
    let online_lock = crate::postgres::ddl::lock_key(&format!("contract:online:{tenant}"));
    for ((mut change, names), _) in changes.into_iter().zip(left).filter(|(_, left)| *left) {
        tracing::warn!(%tenant, table = %names.table, column = %change.column, "an interrupted online change of this column left its trigger, which blocks changing its type in place; dropping what it left");
        change.lock_timeout = job.options.lock_timeout;
        change.max_attempts = job.options.max_attempts;
        super::type_change::ensure_progress(pool, &names).await?;
        let of_column = checkpoints_of_column(&names)?;
        let discard = format!(
            "SELECT pg_advisory_xact_lock('{online_lock}'::int8);
             DROP TRIGGER IF EXISTS {tr} ON {t};
             DROP FUNCTION IF EXISTS {f}();
             ALTER TABLE {t} DROP COLUMN IF EXISTS {s};
             DELETE FROM {p} WHERE {of_column}",
            tr = names.trigger,
            t = names.table,
            f = names.function,
            s = names.shadow,
            p = names.progress,
        );
        short_tx(
            pool,
            &change,
            &discard,
            "dropping what an interrupted online change left",
        )
        .await?;
    }
    Ok(())
}

/// The condition on the progress table's `change` that holds for the checkpoints of every
/// shadow-column change of `names`' column: its key prefix (quoted names, so no other
/// column's key starts with it) followed by a type.
fn checkpoints_of_column(names: &Names) -> Result<String> {
    let prefix = Dialect::Postgres.string_literal(&names.key_prefix)?;
    Ok(format!("left(change, length({prefix})) = {prefix}"))
}
