//! Online remediation on PostgreSQL: plans whose steps run in several transactions, so no
//! strong lock is held through a full-table scan, and their resumption after a crash.

mod phased;
mod resume;

pub(super) use phased::apply_phased;
pub(super) use resume::resume_pending;
