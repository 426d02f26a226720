//! The fleet check: every tenant against every contract, in bulk.

use std::collections::HashMap;

use contract_core::Dialect;
use contract_core::plan::types::pg_typmod_change;
use contract_core::{
    ColumnContract, DiffScope, FleetReport, LiveColumn, LiveTable, TableContract, TenantReport,
    TypeFit, TypeOracle, Verdict, diff,
};
use sqlx::Pool;
use tracing::Instrument as _;

use crate::backend::{Backend, TypeMap};
use crate::contracts::{ContractEntry, ContractSet};
use crate::error::Result;
use crate::tenants::TenantDirectory;

/// The live schema of a fleet as introspected, with its resolved types.
#[derive(Debug)]
pub struct FleetSnapshot<DB: Backend> {
    /// Live tables keyed by (schema, table).
    pub tables: HashMap<(String, String), LiveTable>,
    /// Resolved live types.
    pub types: TypeMap<DB>,
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
        let schemas: Vec<String> = names.iter().map(|t| t.as_str().to_owned()).collect();
        let span = tracing::info_span!("contract.check", dialect = %DB::DIALECT, tenants = schemas.len(), tables = ?contracts.table_names());
        match snapshot(pool, &schemas, contracts).instrument(span).await {
            Ok(snapshot) => {
                for tenant in &schemas {
                    tenants.push(check_tenant(tenant, contracts, &snapshot));
                }
            }
            Err(error) => {
                let error = error_chain(&error);
                for tenant in schemas {
                    tenants.push(TenantReport {
                        tenant,
                        verdict: Verdict::Unreachable {
                            error: error.clone(),
                        },
                        findings: Vec::new(),
                    });
                }
            }
        }
    }
    for (name, error) in directory.rejected() {
        tenants.push(TenantReport {
            tenant: name.clone(),
            verdict: Verdict::Unreachable {
                error: error.to_string(),
            },
            findings: Vec::new(),
        });
    }
    Ok(FleetReport::new(DB::DIALECT, contracts.describe(), tenants))
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
    let live = DB::introspect(pool, &all_schemas, contracts).await?;
    let types = DB::resolve_types(pool, &live).await?;
    let tables = live
        .into_iter()
        .map(|t| ((t.schema.clone(), t.name.clone()), t))
        .collect();
    Ok(FleetSnapshot { tables, types })
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
        let live = snapshot
            .tables
            .get(&(schema.to_owned(), entry.contract.table.clone()));
        let oracle = Oracle {
            entry,
            types: &snapshot.types,
        };
        findings.extend(diff(
            DiffScope { tenant, schema },
            &entry.contract,
            live,
            &oracle,
        ));
    }
    for f in &findings {
        tracing::debug!(tenant, table = %f.table, column = ?f.column, kind = %f.kind, severity = %f.severity, "drift finding");
    }
    TenantReport {
        tenant: tenant.to_owned(),
        verdict: Verdict::of(&findings),
        findings,
    }
}

struct Oracle<'a, DB: Backend> {
    entry: &'a ContractEntry<DB>,
    types: &'a TypeMap<DB>,
}

impl<DB: Backend> TypeOracle for Oracle<'_, DB> {
    fn fit(&self, _: &TableContract, column: &ColumnContract, live: &LiveColumn) -> TypeFit {
        match self.entry.check(&column.name) {
            Some(check) => {
                let mut fit = DB::fit(check, live, self.types);
                // PostgreSQL: a column narrower than the contract's declared SQL type
                // (`varchar(50)` where `sql_type = "varchar(100)"`) rejects longer writes.
                if let Some(declared) = column
                    .sql_type
                    .as_deref()
                    .filter(|_| DB::DIALECT == Dialect::Postgres)
                    && fit.compatible
                    && fit.risk.is_none()
                    && pg_typmod_change(&live.data_type, declared).is_some()
                {
                    fit.risk = Some(format!(
                        "{} (the contract declares {declared})",
                        live.data_type
                    ));
                }
                fit
            }
            // A contract without a type check for this column cannot be judged: say so.
            None => TypeFit {
                compatible: false,
                expected_sql_type: format!("no type check for {}", column.rust_type),
                risk: None,
            },
        }
    }
}

/// An error and its sources on one line.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
