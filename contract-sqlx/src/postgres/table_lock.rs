//! The table locks a PostgreSQL remediation takes before its re-check, so that what the
//! re-check saw is what the DDL runs on.
//!
//! The tenant's advisory lock keeps out other replicas of this library, not a hand-run
//! `ALTER TABLE`: without these locks one landing between the re-check and the DDL went
//! unnoticed (the DDL ran on the changed table). Each re-checked table that existed when
//! the plan was made is locked (`ONLY` the table: its partitions and children are not what
//! the re-check reads, and their own `VACUUM`, indexes and constraints go on; attaching,
//! detaching or dropping one still waits), in the weakest mode that keeps
//! out what the re-check guards against, and neither mode blocks the consumers' reads and
//! writes:
//!
//! - a table a step changes, `SHARE UPDATE EXCLUSIVE`: every form of `ALTER TABLE`
//!   (also adding a foreign key), `DROP`, `CREATE INDEX` and `VACUUM` wait for it. The
//!   mode conflicts with itself: a table in a contract's fixed schema that every tenant's
//!   plan changes is changed by one tenant at a time, and the next one's re-check finds it
//!   done (a stale plan, not a failed `ALTER`), provided its wait fits in `lock_timeout`
//!   over its attempts (else it fails at `table lock`, and the next pass finds it done).
//! - a table that is only re-checked because a changed table's foreign key references it,
//!   `ACCESS SHARE`: what such a step depends on (the referenced columns, their types, the
//!   key) changes only under `ACCESS EXCLUSIVE`, and this mode does not conflict with
//!   itself, so tenants referencing one shared table still remediate in parallel.
//!
//! A table the plan saw absent (one a step creates) cannot be locked and is left to the
//! re-check; one that was there and is gone (its table or its schema dropped or renamed,
//! or it was replaced by something that cannot be locked) makes `LOCK TABLE` fail, and the
//! plan is stale. Views, materialized views and foreign tables are no step's target and are
//! left out (`LOCK TABLE` refuses the last two).
//!
//! What the locks do not keep out: objects the re-check reads beside the tables, changed
//! under their own locks (an enum type's labels or name, a sequence a default names, the
//! name of a referenced table's schema). A change to one of them that lands after the
//! re-check is found by the next check, as drift.

use contract_core::{Dialect, LiveTable};
use sqlx::Postgres;

use super::apply::has_code;
use crate::error::{Error, Result};
use crate::remediation::ApplyJob;

/// SQLSTATEs of a `LOCK TABLE` whose table is not what the plan saw: `undefined_table`,
/// `invalid_schema_name` (its schema is gone), `wrong_object_type` (the name is now a
/// materialized view, a foreign table or a sequence).
const GONE: [&str; 3] = ["42P01", "3F000", "42809"];

/// The `LOCK TABLE` statements (none, one or two) that `job` takes before its re-check of
/// `rechecked` ([`ApplyJob::rechecked_tables`]; see the module documentation).
pub(super) fn lock_statements(
    job: &ApplyJob<'_, Postgres>,
    rechecked: &[(String, String)],
) -> Result<Vec<String>> {
    let (mut changing, mut referenced) = (Vec::new(), Vec::new());
    for (schema, table) in rechecked {
        let Some(live) = planned_table(&job.planned_on, schema, table) else {
            continue;
        };
        // `ONLY` binds to one name of the list, not to the list.
        let name = format!(
            "ONLY {}",
            Dialect::Postgres.quote_qualified(Some(&live.schema), &live.name)?
        );
        // Re-checked as a step's target (as `rechecked_tables` finds it: by name), or as
        // what a target's foreign key references.
        if job
            .steps
            .iter()
            .any(|s| Dialect::Postgres.same_table(&s.table, table))
        {
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

/// What a failed `LOCK TABLE` means: a stale plan when a table is gone (the plan was made
/// on another schema), else what `failure` makes of the error.
pub(super) fn lock_failed(
    tenant: &str,
    source: sqlx::Error,
    failure: impl FnOnce(sqlx::Error) -> Error,
) -> Error {
    if has_code(&source, &GONE) {
        Error::StalePlan {
            tenant: tenant.to_owned(),
        }
    } else {
        failure(source)
    }
}
