//! The fleet check: every tenant against every contract, in bulk.

use std::collections::HashMap;

use contract_core::{
    Dialect, DiffScope, FleetReport, LiveTable, TableContract, TenantName, TenantReport, diff,
};
use sqlx::Pool;
use tracing::Instrument as _;

use super::contracts::ContractSet;
use super::oracle::Oracle;
use super::table_key::TableKey;
use crate::backend::{Backend, TypeMap};
use crate::error::{Result, error_chain};
use crate::tenants::TenantDirectory;

/// The live schema of a fleet as introspected, with its resolved types.
#[derive(Debug)]
pub struct FleetSnapshot<DB: Backend> {
    /// Live tables keyed by (schema, table as the contracts spell it): on SQLite, whose
    /// table names are ASCII-case-insensitive, a table created as `Events` is keyed
    /// `events` when that is what a contract reads (its [`LiveTable::name`] stays `Events`).
    pub tables: HashMap<(String, String), LiveTable>,
    /// Resolved live types.
    pub types: TypeMap<DB>,
}

impl<DB: Backend> FleetSnapshot<DB> {
    /// The live table `contract` reads for `tenant` (its fixed schema, or the tenant's).
    #[must_use]
    pub fn table_for(&self, tenant: &str, contract: &TableContract) -> Option<&LiveTable> {
        let schema = contract.schema.as_deref().unwrap_or(tenant);
        self.tables
            .get(&(schema, contract.table.as_str()) as &dyn TableKey)
    }
}

/// Checks every tenant of `directory` against every contract of `contracts`.
///
/// One bulk introspection and one type resolution per pool; a pool that fails marks its
/// tenants unreachable (with the reason) and the other pools are still checked.
///
/// # Errors
///
/// Never for database failures (those become `unreachable` verdicts); reserved for
/// invalid identifiers in contracts.
pub async fn check_fleet<DB: Backend>(
    directory: &TenantDirectory<DB>,
    contracts: &ContractSet<DB>,
) -> Result<FleetReport> {
    let mut tenants = Vec::new();
    for (pool, names) in directory.groups() {
        let (reports, snapshot) = check_group(pool, names, contracts).await;
        tenants.extend(reports);
        if let Some(snapshot) = snapshot {
            drop_in_background(snapshot);
        }
    }
    tenants.extend(rejected_reports(directory));
    Ok(FleetReport::new(DB::DIALECT, contracts.describe(), tenants))
}

/// Checks the tenants of one pool from one snapshot: their reports, and the snapshot for
/// planning (`None` when the pool failed; its tenants are then unreachable, with the reason).
pub(crate) async fn check_group<DB: Backend>(
    pool: &Pool<DB>,
    names: &[TenantName],
    contracts: &ContractSet<DB>,
) -> (Vec<TenantReport>, Option<FleetSnapshot<DB>>) {
    let schemas: Vec<String> = names.iter().map(|t| t.as_str().to_owned()).collect();
    let span = tracing::info_span!("contract.check", dialect = %DB::DIALECT, tenants = schemas.len(), tables = ?contracts.table_names());
    match snapshot(pool, &schemas, contracts).instrument(span).await {
        Ok(snap) => (
            schemas
                .iter()
                .map(|t| check_tenant(t, contracts, &snap))
                .collect(),
            Some(snap),
        ),
        Err(error) => {
            let error = error_chain(&error);
            (
                schemas
                    .into_iter()
                    .map(|t| TenantReport::unreachable(t, error.clone()))
                    .collect(),
                None,
            )
        }
    }
}

/// Frees a large snapshot on a short-lived thread: freeing a fleet's worth of live tables
/// (hundreds of thousands of small allocations at 10,000 tenants) would otherwise delay the
/// report by a sixth of the check. Small snapshots, or a failed spawn, are dropped here.
fn drop_in_background<DB: Backend>(snapshot: FleetSnapshot<DB>) {
    const LARGE: usize = 1_000;
    if snapshot.tables.len() < LARGE {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("contract-snapshot-drop".into())
        .spawn(move || drop(snapshot));
    // A failed spawn drops the closure, and the snapshot with it, right here.
    drop(spawned);
}

/// Discovered names that were rejected and names reached twice, as unreachable tenants
/// with the reason (they are never checked).
pub(crate) fn rejected_reports<DB: Backend>(
    directory: &TenantDirectory<DB>,
) -> impl Iterator<Item = TenantReport> + '_ {
    let rejected = directory
        .rejected()
        .iter()
        .map(|(name, error)| TenantReport::unreachable(name.clone(), error.to_string()));
    let duplicates = directory
        .duplicates()
        .iter()
        .map(|d| TenantReport::unreachable(d.tenant.to_string(), d.to_string()));
    rejected.chain(duplicates)
}

/// Introspects `schemas` (plus the contracts' fixed schemas) on `pool` and resolves types.
///
/// # Errors
///
/// The backend's introspection or type-resolution error.
pub async fn snapshot<DB: Backend>(
    pool: &Pool<DB>,
    schemas: &[String],
    contracts: &ContractSet<DB>,
) -> Result<FleetSnapshot<DB>> {
    let mut all_schemas = schemas.to_vec();
    all_schemas.extend(contracts.fixed_schemas());
    let (live, types) = DB::introspect_resolved(pool, &all_schemas, contracts).await?;
    let tables = match DB::DIALECT {
        // Table names are case-insensitive there: key by the contracts' spelling.
        Dialect::Sqlite => keyed_as_contracted(live, &contracts.table_names(), DB::DIALECT),
        Dialect::Postgres | Dialect::MySql => live
            .into_iter()
            .map(|t| ((t.schema.clone(), t.name.clone()), t))
            .collect(),
    };
    Ok(FleetSnapshot { tables, types })
}

/// Keys each live table by the contracted name(s) that name it (`Events` under `events`),
/// so lookups stay exact: a table two contracts spell differently is keyed under both.
fn keyed_as_contracted(
    live: Vec<LiveTable>,
    contracted: &[String],
    dialect: Dialect,
) -> HashMap<(String, String), LiveTable> {
    let mut tables = HashMap::with_capacity(live.len());
    for table in live {
        let mut names = contracted
            .iter()
            .filter(|name| dialect.same_table(name, &table.name));
        let first = names.next().unwrap_or(&table.name).clone();
        for other in names {
            tables.insert((table.schema.clone(), other.clone()), table.clone());
        }
        tables.insert((table.schema.clone(), first), table);
    }
    tables
}

/// Diffs one tenant against every contract using an introspected snapshot.
#[must_use]
pub fn check_tenant<DB: Backend>(
    tenant: &str,
    contracts: &ContractSet<DB>,
    snapshot: &FleetSnapshot<DB>,
) -> TenantReport {
    let mut findings = Vec::new();
    for entry in contracts.entries() {
        let schema = entry.contract.schema.as_deref().unwrap_or(tenant);
        let live = snapshot.table_for(tenant, &entry.contract);
        let oracle = Oracle {
            entry,
            types: &snapshot.types,
        };
        findings.extend(diff(
            DiffScope {
                tenant,
                schema,
                dialect: DB::DIALECT,
            },
            &entry.contract,
            live,
            &oracle,
        ));
    }
    for f in &findings {
        tracing::debug!(tenant, table = %f.table, column = ?f.column, kind = %f.kind, severity = %f.severity, "drift finding");
    }
    TenantReport::checked(tenant.to_owned(), findings)
}
