//! Remediation: plan a drifted tenant, apply what the policy allows in one audited
//! transaction per tenant, verify, and bump the [`SchemaEpoch`] so pooled connections drop
//! their stale statements.

mod apply;
pub(crate) mod audit;
pub(crate) mod backoff;
mod epoch;
mod reconcile;
mod run;

pub use apply::{ApplyJob, ApplyOptions};
pub(crate) use apply::{elapsed_ms, elapsed_ms_of, failed, outcome_unknown};
pub use audit::{AuditConfig, AuditRecord, new_audit_id};
pub use epoch::SchemaEpoch;
#[cfg(feature = "mysql")]
pub(crate) use reconcile::judge;
pub use reconcile::{ReconcileOutcome, ReconciledAudit};
pub(crate) use run::{Checked, CheckedGroup, remediate_checked};
pub use run::{Remediate, RemediationRun, plan_for, remediate};

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use crate::postgres::ddl::tenant_lock_key;
