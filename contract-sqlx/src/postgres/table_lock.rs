//! The table locks a PostgreSQL remediation takes before its re-check, so that what the
//! re-check saw is what the DDL runs on.
//!
//! The tenant's advisory lock keeps out other replicas of this library, not a hand-run
//! `ALTER TABLE`: without these locks one landing between the re-check and the DDL went
//! unnoticed (the DDL ran on the changed table). Each re-checked table that existed when
//! the plan was made is locked, in the weakest mode that keeps out what the re-check
//! guards against, and neither mode blocks the consumers' reads and writes:
//!
//! - a table a step changes, `SHARE UPDATE EXCLUSIVE`: every form of `ALTER TABLE`
//!   (also adding a foreign key), `DROP`, `CREATE INDEX` and `VACUUM` wait for it. The
//!   mode conflicts with itself, which costs nothing here: the tenant's lock already lets
//!   only one remediation at a time change the tenant's tables.
//! - a table that is only re-checked because a changed table's foreign key references it,
//!   `ACCESS SHARE`: what such a step depends on (the referenced columns, their types, the
//!   key) changes only under `ACCESS EXCLUSIVE`, and this mode does not conflict with
//!   itself, so tenants referencing one shared table still remediate in parallel.
//!
//! A table the plan saw absent (one a step creates) cannot be locked and is left to the
//! re-check; one that was there and is gone makes `LOCK TABLE` fail with
//! `undefined_table`, which is a stale plan too. Views, materialized views and foreign
//! tables are no step's target and are left out (`LOCK TABLE` refuses the last two).

use contract_core::{Dialect, LiveTable};
use sqlx::Postgres;

use crate::error::Result;
use crate::remediation::ApplyJob;

/// SQLSTATE `undefined_table`.
const UNDEFINED_TABLE: &str = "42P01";

/// The `LOCK TABLE` statements (none, one or two) that `job` takes before its re-check (see
/// the module documentation).
pub(super) fn lock_statements(job: &ApplyJob<'_, Postgres>) -> Result<Vec<String>> {
    let changed = job.changed_tables();
    let (mut changing, mut referenced) = (Vec::new(), Vec::new());
    for (schema, table) in job.rechecked_tables() {
        let Some(live) = planned_table(&job.planned_on, &schema, &table) else {
            continue;
        };
        let name = Dialect::Postgres.quote_qualified(Some(&live.schema), &live.name)?;
        if changed.iter().any(|(s, t)| *s == schema && *t == table) {
            changing.push(name);
        } else {
            referenced.push(name);
        }
    }
    let lock = |names: Vec<String>, mode: &str| {
        (!names.is_empty()).then(|| format!("LOCK TABLE {} IN {mode} MODE", names.join(", ")))
    };
    Ok([
        lock(changing, "SHARE UPDATE EXCLUSIVE"),
        lock(referenced, "ACCESS SHARE"),
    ]
    .into_iter()
    .flatten()
    .collect())
}

/// The table `schema.table` as the plan saw it, if it was there and is a table.
fn planned_table<'t>(
    planned: &[&'t LiveTable],
    schema: &str,
    table: &str,
) -> Option<&'t LiveTable> {
    planned
        .iter()
        .copied()
        .find(|t| t.schema == schema && Dialect::Postgres.same_table(&t.name, table))
        .filter(|t| t.kind.is_table())
}

/// `true` when `error` says a table to lock is gone: the plan was made on another schema.
pub(super) fn is_gone(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|c| c == UNDEFINED_TABLE)
}
