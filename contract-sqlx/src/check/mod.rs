//! The check: every tenant's live schema against the contracts, in bulk.
//!
//! A [`ContractSet`] holds the contracts with sqlx's type checks for one backend;
//! [`snapshot`] introspects a pool's tenants in one catalog query and resolves each
//! distinct live type once; [`check_tenant`] diffs one tenant from the snapshot, and
//! [`check_fleet`] does it all for a tenant directory.

mod contracts;
mod fingerprint;
mod fleet;
mod oracle;
pub(crate) mod table_key;
mod type_check;

pub use contracts::{ContractEntry, ContractSet};
pub use fingerprint::fingerprint;
pub use fleet::{FleetSnapshot, check_fleet, check_tenant, snapshot};
pub(crate) use fleet::{check_group, rejected_reports};
pub use type_check::{Decodable, TypeCheck, TypeChecks};
