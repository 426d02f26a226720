//! Remediation: plan a drifted tenant, apply what the policy allows in one audited
//! transaction per tenant, verify, and bump the [`SchemaEpoch`] so pooled connections drop
//! their stale statements.

mod apply;
pub(crate) mod audit;
mod audit_log;
pub(crate) mod backoff;
mod epoch;
mod execute;
mod options;
// Multi-transaction applies are PostgreSQL's (transactional DDL with NOT VALID/VALIDATE).
#[cfg(feature = "postgres")]
pub(crate) mod phases;
mod plan;
mod reconcile;
mod run;

#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) use apply::outcome_unknown;
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) use apply::timeout_ms;
pub use apply::{ApplyJob, ApplyOptions};
pub(crate) use apply::{elapsed_ms, elapsed_ms_of, failed};
pub use audit::{AuditConfig, AuditRecord, new_audit_id};
pub use audit_log::{AuditEntry, AuditQuery};
pub use epoch::SchemaEpoch;
pub use execute::ApprovalRef;
pub(crate) use execute::{Task, apply_all};
pub use plan::plan_for;
pub(crate) use plan::{Planned, plan_group};
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) use reconcile::judge_live;
pub use reconcile::{ReconcileOutcome, ReconciledAudit};
pub use run::{Remediate, RemediationRun, remediate};
pub(crate) use run::{now_text, record};

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use crate::postgres::ddl::tenant_lock_key;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use crate::postgres::online::{
    OnlineProcedure, OnlineReport, OnlineTypeChange, change_type_online,
};
