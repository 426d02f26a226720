//! Pure core of the `contract` workspace: the contract model, the live-schema model,
//! identifier quoting per dialect, the drift `diff`, remediation planning and reports.
//!
//! Nothing here does I/O or depends on a database driver, so every rule is unit-tested
//! without a server and a plan is a function of (contract, live schema, policy) alone.
#![forbid(unsafe_code)]

mod contract;
mod diff;
mod digest;
mod drift;
mod error;
mod ident;
mod live;
mod log;
mod model;
pub mod plan;
mod report;
pub mod rules;
mod tenant;

pub use contract::{Columns, Contract};
pub use diff::{
    DiffScope, MISSING_LABELS, TypeFit, TypeOracle, UNKNOWN_LABELS, diff, enum_label_drift,
};
pub use digest::{FieldDigest, digest_hex};
pub use drift::{DriftKind, Finding, Severity};
pub use error::IdentError;
pub use ident::Dialect;
pub use live::{LiveColumn, LiveForeignKey, LiveTable, RelationKind};
pub use log::{
    BackfillProgress, ExecutionLog, LogAction, LogEntry, TenantError, TenantLog, TenantOutcome,
};
pub use model::{ColumnContract, Reference, TableContract};
pub use report::{FleetReport, TenantReport, Verdict};
pub use tenant::{MAX_TENANT_NAME_LEN, TenantName};
