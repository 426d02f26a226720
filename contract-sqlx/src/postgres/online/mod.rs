//! Online remediation on PostgreSQL: plans whose steps run in several transactions, so no
//! strong lock is held through a full-table scan, their resumption after a crash, and the
//! online column type change (a shadow column or a copy of the table, trigger, batched
//! backfill, short swap).

mod backfill;
mod copy;
mod index;
mod inspect;
mod leftover;
mod phased;
mod planned;
mod resume;
mod swap;
mod type_change;

pub(super) use inspect::refusals;
pub(super) use leftover::{DROPPED as LEFTOVERS_DROPPED, cleanup_before_plain, dropped_statements};
pub(super) use phased::apply_phased;
pub(super) use planned::{apply_online, row_estimates};
pub(super) use resume::{resume_pending, tenants_to_resume};
pub use type_change::{OnlineProcedure, OnlineReport, OnlineTypeChange, change_type_online};

use crate::error::{Error, hint};
use crate::postgres::apply::is_lock_conflict;

/// A failed statement of an online change, in schema `schema`: the hint names the lock
/// that held it up when one did (`lock_timeout` or a deadlock), what else to check
/// otherwise.
fn step_failed(context: &'static str, schema: &str) -> impl FnOnce(sqlx::Error) -> Error + use<> {
    let schema = schema.to_owned();
    move |source| {
        let hint = if is_lock_conflict(&source) {
            hint::LOCK_HELD
        } else {
            hint::ONLINE_DDL
        };
        Error::db_hint(context, hint, Some(&schema))(source)
    }
}
