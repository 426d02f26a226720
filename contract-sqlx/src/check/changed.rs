//! Re-checking tenants after a remediation changed some of their tables: only those tables
//! are read again; the rest of each tenant comes from the snapshot it was planned on.

use std::collections::BTreeSet;

use contract_core::{TenantName, TenantReport};
use sqlx::Pool;

use super::contracts::ContractSet;
use super::fleet::{FleetSnapshot, check_group, check_tenant, snapshot};
use crate::backend::Backend;
use crate::error::error_chain;

/// The tenants `names` of one pool checked again after their remediation: the contracted
/// tables named in `changed` (as a plan step names them) are re-read for these tenants in
/// one query, and every other table keeps its state from `before`, the snapshot they were
/// planned on (nothing of theirs was applied). Without `before`, or when no contract reads a
/// changed table, the tenants are checked in full.
///
/// Returns the reports (in `names` order) and the merged snapshot, as [`check_group`] does.
pub(crate) async fn recheck_changed<DB: Backend>(
    pool: &Pool<DB>,
    names: &[TenantName],
    contracts: &ContractSet<DB>,
    changed: &BTreeSet<String>,
    before: Option<FleetSnapshot<DB>>,
) -> (Vec<TenantReport>, Option<FleetSnapshot<DB>>) {
    let mut reread = ContractSet::new();
    for entry in contracts.entries() {
        if changed
            .iter()
            .any(|t| DB::DIALECT.same_table(t, &entry.contract.table))
        {
            reread.push_entry(entry.clone());
        }
    }
    let Some(mut merged) = before.filter(|_| !reread.entries().is_empty()) else {
        return check_group(pool, names, contracts).await;
    };
    let schemas: Vec<String> = names.iter().map(|t| t.as_str().to_owned()).collect();
    match snapshot(pool, &schemas, &reread).await {
        Ok(fresh) => {
            // What was re-read replaces what was planned on, absent tables included.
            let mut read_schemas = schemas.clone();
            read_schemas.extend(reread.fixed_schemas());
            for schema in &read_schemas {
                for table in reread.table_names() {
                    merged.tables.remove(&(schema.clone(), table));
                }
            }
            merged.tables.extend(fresh.tables);
            merged.types.extend(fresh.types);
            let reports = schemas
                .iter()
                .map(|t| check_tenant(t, contracts, &merged))
                .collect();
            (reports, Some(merged))
        }
        Err(error) => {
            let error = error_chain(&error);
            let reports = schemas
                .into_iter()
                .map(|t| TenantReport::unreachable(t, error.clone()))
                .collect();
            (reports, None)
        }
    }
}
