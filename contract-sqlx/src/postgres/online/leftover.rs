//! What an interrupted shadow-column change of the same column left behind when this run
//! cannot resume it: a change to *another* type (its shadow column, trigger and
//! checkpoint; `ADD COLUMN IF NOT EXISTS` would keep that column, the backfill would cast
//! into its type and the swap would put that type in place), or a checkpoint whose shadow
//! column is gone (the backfill would resume past rows it never filled). Cleared before the
//! change begins, so it starts over. And what such a change left on a column whose type is
//! now changed in place (`cleanup_before_plain`).

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

/// What `job`'s transaction runs around its type changes made in place so that what an
/// interrupted online change of those columns left is dropped first: the shadow column's
/// trigger, function (unless a trigger still uses it), column and checkpoints, and a copy of
/// the table with its trigger and checkpoints. PostgreSQL refuses `ALTER … TYPE` on a column
/// the shadow trigger's `WHEN` names, so such a column failed its remediation on every pass
/// (a table whose size estimate fell below the online threshold, or a threshold raised or
/// turned off, after a run was killed); a copy's trigger would go on copying every write
/// into a stale copy.
///
/// Returns the table online locks ([`super::type_change::table_lock_key`]), taken in the
/// transaction's first message before its table locks (the order a running online change
/// takes them in; it holds its table's, so the transaction waits up to its `lock_timeout`
/// and is retried like any lock conflict), and one `DO` block per column, run before the
/// plan's statements (after the re-check). A block drops only what is there, so there is no
/// lookup round trip (a query measured about 1 ms a tenant in the remediate bench, a quarter
/// of an in-place `int4 → int8`), and each statement it runs is listed first in the audit
/// row's `statements` ([`DROPPED`]); the blocks themselves are not.
pub(in crate::postgres) fn cleanup_before_plain(
    job: &ApplyJob<'_, Postgres>,
) -> Result<(Vec<String>, Vec<String>)> {
    let tenant = job.tenant.as_str();
    let lit = |s: &str| Dialect::Postgres.string_literal(s);
    let (mut locks, mut blocks) = (Vec::new(), Vec::new());
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
        let lock = format!(
            "SELECT pg_advisory_xact_lock('{}'::int8)",
            super::type_change::table_lock_key(&names.table)
        );
        if !locks.contains(&lock) {
            locks.push(lock);
        }
        let (copy_trigger, copy_drops, copy_delete) =
            super::copy::leftover(&change, &names.progress)?;
        // Each statement run is added to the transaction's list, which the audit row's
        // `statements` start with (`DROPPED`).
        let execute = |statement: &str| -> Result<String> {
            let statement = lit(statement)?;
            Ok(format!(
                "EXECUTE {statement}; PERFORM set_config('{GUC}', ({DROPPED} || to_jsonb({statement}::text))::text, true);"
            ))
        };
        let copy_drops = copy_drops
            .iter()
            .map(|d| execute(d))
            .collect::<Result<Vec<_>>>()?
            .join(" ");
        let function = format!("{}()", names.function);
        let block = format!(
            "DO $\0$ BEGIN
  IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass({t}) AND tgname = {g}) THEN
    {drop_trigger}
    IF to_regprocedure({f}) IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgfoid = to_regprocedure({f})) THEN {drop_function} END IF;
    {drop_column}
    IF to_regclass({p}) IS NOT NULL THEN {delete} END IF;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass({t}) AND tgname = {c}) THEN
    {copy_drops}
    IF to_regclass({p}) IS NOT NULL THEN {copy_delete} END IF;
  END IF;
END $\0$",
            t = lit(&names.table)?,
            g = lit(&names.trigger_raw)?,
            c = lit(&copy_trigger)?,
            f = lit(&function)?,
            p = lit(&names.progress)?,
            drop_trigger = execute(&format!("DROP TRIGGER IF EXISTS {} ON {}", names.trigger, names.table))?,
            drop_function = execute(&format!("DROP FUNCTION IF EXISTS {function}"))?,
            drop_column = execute(&format!("ALTER TABLE {} DROP COLUMN IF EXISTS {}", names.table, names.shadow))?,
            delete = execute(&format!("DELETE FROM {} WHERE {}", names.progress, checkpoints_of_column(&names)?))?,
            copy_delete = execute(&copy_delete)?,
        );
        blocks.push(super::type_change::dollar_quoted(&block));
    }
    Ok((locks, blocks))
}

/// The transaction-local setting that lists, as a JSON array, what the `DO` blocks of
/// [`cleanup_before_plain`] dropped.
macro_rules! guc {
    () => {
        "contract.leftovers_dropped"
    };
}
const GUC: &str = guc!();

/// What the `DO` blocks of [`cleanup_before_plain`] dropped in this transaction, as a
/// `jsonb` array (empty when nothing): the audit row's `statements` start with it.
// language=SQL
pub(in crate::postgres) const DROPPED: &str = concat!(
    "coalesce(nullif(current_setting('",
    guc!(),
    "', true), ''), '[]')::jsonb"
);

/// The statements [`DROPPED`] (selected as `text`, the first column of `row`) lists.
pub(in crate::postgres) fn dropped_statements(
    row: &sqlx::postgres::PgRow,
) -> std::result::Result<Vec<String>, sqlx::Error> {
    use sqlx::Row as _;
    let listed: String = row.try_get(0)?;
    serde_json::from_str(&listed).map_err(|e| sqlx::Error::Decode(Box::new(e)))
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
