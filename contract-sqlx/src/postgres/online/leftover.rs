//! What an interrupted shadow-column change of the same column left behind when this run
//! cannot resume it: a change to *another* type (its shadow column, trigger and
//! checkpoint; `ADD COLUMN IF NOT EXISTS` would keep that column, the backfill would cast
//! into its type and the swap would put that type in place), or a checkpoint whose shadow
//! column is gone (the backfill would resume past rows it never filled). Cleared before the
//! change begins, so it starts over. And what such a change left on a column whose type is
//! now changed in place (`cleanup_before_plain`).

use contract_core::plan::Action;
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Postgres, SqlSafeStr};

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

/// The statements that, in `job`'s transaction before its type changes made in place, drop
/// what an interrupted online change of those columns left: the shadow column's trigger,
/// function (unless another trigger uses it), column and checkpoints, and a copy of the
/// table with its trigger and checkpoints. PostgreSQL refuses `ALTER … TYPE` on a column
/// the shadow trigger's `WHEN` names, so such a column failed its remediation on every pass
/// (a table whose size estimate fell below the online threshold, or a threshold raised or
/// turned off, after a run was killed); a copy's trigger would go on copying every write
/// into a stale copy. Each table's drops start with its online lock
/// ([`super::type_change::table_lock_key`]), which a running online change of the table
/// holds: the transaction then waits for it up to its `lock_timeout`, and is retried like
/// any lock conflict. Read on `conn`, inside the transaction, after the re-check; one
/// catalog query when the job changes a type, none otherwise. The statements run in the
/// transaction's message and are in the audit row.
pub(in crate::postgres) async fn cleanup_before_plain(
    conn: &mut PgConnection,
    job: &ApplyJob<'_, Postgres>,
) -> std::result::Result<Vec<String>, CleanupError> {
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
        let change = OnlineTypeChange::new(schema, &step.table, column, "");
        let names = Names::new(&change)?;
        let (copy_trigger, copy_drops) = super::copy::leftover(&change, &names.progress)?;
        changes.push((names, copy_trigger, copy_drops));
    }
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    let column = |f: fn(&(Names, String, Vec<String>)) -> String| -> Vec<String> {
        changes.iter().map(f).collect()
    };
    let tables = column(|c| c.0.table.clone());
    let shadow_triggers = column(|c| c.0.trigger_raw.clone());
    let copy_triggers = column(|c| c.1.clone());
    let functions = column(|c| format!("{}()", c.0.function));
    let progress = changes.first().map(|c| c.0.progress.clone());
    // Per change: the shadow trigger there, a trigger on another table using its function,
    // the copy's trigger there; and whether the checkpoint table exists.
    // language=SQL
    let found: Vec<(bool, bool, bool, bool)> = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass(t.r) AND tgname = t.g),
                EXISTS (SELECT 1 FROM pg_trigger WHERE tgfoid = to_regprocedure(t.f)
                          AND NOT (tgrelid = to_regclass(t.r) AND tgname = t.g)),
                EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass(t.r) AND tgname = t.c),
                to_regclass($5) IS NOT NULL
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS t(r, g, c, f, i)
         ORDER BY t.i",
    )
    .bind(&tables)
    .bind(&shadow_triggers)
    .bind(&copy_triggers)
    .bind(&functions)
    .bind(&progress)
    .fetch_all(&mut *conn)
    .await
    .map_err(CleanupError::Lookup)?;
    let mut statements = Vec::new();
    let mut locked = std::collections::BTreeSet::new();
    let mut progress_created = false;
    for ((names, _, copy_drops), (shadow, shared_function, copy, progress_exists)) in
        changes.iter().zip(found)
    {
        if !shadow && !copy {
            continue;
        }
        tracing::warn!(%tenant, table = %names.table, column = %names.column, "an interrupted online change of this column left its trigger; dropping what it left before changing the type in place");
        if locked.insert(names.table.clone()) {
            let key = super::type_change::table_lock_key(&names.table);
            statements.push(format!("SELECT pg_advisory_xact_lock('{key}'::int8)"));
        }
        if !progress_exists && !progress_created {
            statements.push(super::type_change::progress_ddl(names));
            progress_created = true;
        }
        if shadow {
            statements.push(format!(
                "DROP TRIGGER IF EXISTS {} ON {}",
                names.trigger, names.table
            ));
            if !shared_function {
                statements.push(format!("DROP FUNCTION IF EXISTS {}()", names.function));
            }
            statements.push(format!(
                "ALTER TABLE {} DROP COLUMN IF EXISTS {}",
                names.table, names.shadow
            ));
            statements.push(format!(
                "DELETE FROM {} WHERE {}",
                names.progress,
                checkpoints_of_column(names)?
            ));
        }
        if copy {
            statements.extend(copy_drops.iter().cloned());
        }
    }
    Ok(statements)
}

/// The stage a failed lookup of [`cleanup_before_plain`] is reported at.
pub(in crate::postgres) const LOOKUP: &str = "looking up what an interrupted online change left";

/// Why [`cleanup_before_plain`] failed.
#[derive(Debug)]
pub(in crate::postgres) enum CleanupError {
    /// A name the statements cannot quote.
    Names(crate::Error),
    /// The catalog lookup.
    Lookup(sqlx::Error),
}

impl From<crate::Error> for CleanupError {
    fn from(error: crate::Error) -> Self {
        Self::Names(error)
    }
}

/// The condition on the progress table's `change` that holds for the checkpoints of every
/// shadow-column change of `names`' column: its key prefix (quoted names, so no other
/// column's key starts with it) followed by a type; or the unquoted prefix of versions
/// before, followed by a type with no `::` in it (so not a column whose name continues with
/// `::`): such checkpoints are never resumed, and would stay for good.
fn checkpoints_of_column(names: &Names) -> Result<String> {
    let prefix = Dialect::Postgres.string_literal(&names.key_prefix)?;
    let legacy = Dialect::Postgres.string_literal(&names.legacy_key_prefix)?;
    Ok(format!(
        "(left(change, length({prefix})) = {prefix} OR (left(change, length({legacy})) = {legacy} \
         AND strpos(substr(change, length({legacy}) + 1), '::') = 0))"
    ))
}
