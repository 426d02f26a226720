//! Schema contracts for multi-tenant sqlx consumers.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod apply;
mod audit;
mod backend;
mod contracts;
mod epoch;
mod error;
mod fingerprint;
mod fleet;
pub mod guard;
pub mod payload;
pub mod quarantine;
mod remediate;
mod tenants;
pub mod testing;
mod type_check;

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::{sqlite_tenant_files, sqlite_tenant_files_with};

#[doc(hidden)]
pub mod __private;

pub use apply::{ApplyJob, ApplyOptions};
pub use audit::{AuditConfig, AuditRecord, new_audit_id};
pub use backend::{Backend, TypeMap};
pub use contract_core::*;
#[cfg(feature = "derive")]
pub use contract_derive::Contract;
pub use contracts::{ContractEntry, ContractSet};
pub use epoch::SchemaEpoch;
pub use error::{Error, Result};
pub use fingerprint::fingerprint;
pub use fleet::{FleetSnapshot, check_fleet, check_tenant, snapshot};
pub use guard::{Gate, Guard, GuardBuilder, PauseInfo, PausedBy, Permit, Revalidation};
pub use remediate::{RemediationRun, plan_for, remediate};
pub use tenants::{TenantDirectory, Tenants};
pub use type_check::{Decodable, TypeCheck, TypeChecks};
