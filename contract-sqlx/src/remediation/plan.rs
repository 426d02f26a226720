//! Planning drifted tenants from the snapshot they were checked in.

use std::collections::BTreeMap;

use contract_core::plan::{TableInput, TenantPlan, TypeCatalog, plan_tenant};
use contract_core::{Dialect, Finding, LiveTable, Severity, TenantName, TenantReport, Verdict};
use sqlx::Pool;

use crate::backend::Backend;
use crate::check::{ContractSet, FleetSnapshot};
use crate::error::Result;

/// A drifted tenant's plan, with what it was planned on (for the re-check under the
/// tenant's lock) and the findings it fixes.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    pub tenant: TenantName,
    pub plan: TenantPlan,
    /// The tenant's contracted live tables as planned on.
    pub planned_on: Vec<LiveTable>,
    /// The findings at `at_risk` or worse.
    pub findings: Vec<Finding>,
}

/// Plans one tenant from a snapshot (its drift only), with custom column types written
/// where `types` (from [`Backend::type_catalog`], once per run) found them.
#[must_use]
pub fn plan_for<DB: Backend>(
    tenant: &TenantReport,
    contracts: &ContractSet<DB>,
    snapshot: &FleetSnapshot<DB>,
    types: &TypeCatalog,
) -> TenantPlan {
    let schema = (DB::DIALECT != Dialect::Sqlite).then_some(tenant.tenant.as_str());
    let expected: Vec<BTreeMap<String, String>> = contracts
        .entries()
        .iter()
        .map(|e| {
            e.checks
                .iter()
                .map(|c| (c.column().to_owned(), c.expected_sql_type()))
                .collect()
        })
        .collect();
    let findings: Vec<Vec<_>> = contracts
        .entries()
        .iter()
        .map(|e| {
            tenant
                .findings
                .iter()
                .filter(|f| {
                    f.severity >= Severity::AtRisk
                        && f.contract == e.contract.struct_name
                        && f.table == e.contract.table
                })
                .cloned()
                .collect()
        })
        .collect();
    let inputs: Vec<TableInput<'_>> = contracts
        .entries()
        .iter()
        .zip(&expected)
        .zip(&findings)
        .map(|((entry, expected_types), findings)| TableInput {
            contract: &entry.contract,
            live: snapshot.table_for(&tenant.tenant, &entry.contract),
            findings,
            expected_types,
        })
        .collect();
    plan_tenant(DB::DIALECT, &tenant.tenant, schema, &inputs, types)
}

/// Plans every drifted tenant of one pool's check (`reports` in `names` order): one type
/// catalog lookup for the pool, then one plan per drifted tenant; rewrites of tables of
/// at least `online_threshold` rows are turned online (one size lookup for the pool).
///
/// # Errors
///
/// The type catalog or size lookup's (then no tenant of the pool can be planned safely: a
/// plan made without them could name a type that does not resolve, or carry another hash).
pub(crate) async fn plan_group<DB: Backend>(
    pool: &Pool<DB>,
    names: &[TenantName],
    reports: &[TenantReport],
    snapshot: &FleetSnapshot<DB>,
    contracts: &ContractSet<DB>,
    online_threshold: Option<u64>,
) -> Result<Vec<Planned>> {
    let drifted: Vec<(&TenantName, &TenantReport)> = names
        .iter()
        .zip(reports)
        .filter(|(_, r)| r.verdict == Verdict::Drifted)
        .collect();
    if drifted.is_empty() {
        return Ok(Vec::new());
    }
    let schemas: Vec<String> = drifted.iter().map(|(t, _)| t.to_string()).collect();
    let types = DB::type_catalog(pool, &schemas, contracts).await?;
    let mut planned: Vec<Planned> = drifted
        .into_iter()
        .map(|(tenant, report)| Planned {
            tenant: tenant.clone(),
            plan: plan_for(report, contracts, snapshot, &types),
            planned_on: contracts
                .entries()
                .iter()
                .filter_map(|e| snapshot.table_for(tenant.as_str(), &e.contract))
                .cloned()
                .collect(),
            findings: report
                .findings
                .iter()
                .filter(|f| f.severity >= Severity::AtRisk)
                .cloned()
                .collect(),
        })
        .collect();
    if let Some(threshold) = online_threshold {
        go_online(pool, &mut planned, threshold).await?;
    }
    Ok(planned)
}

/// Turns the rewrites of tables with at least `threshold` rows online (where the backend
/// knows table sizes: PostgreSQL).
async fn go_online<DB: Backend>(
    pool: &Pool<DB>,
    planned: &mut [Planned],
    threshold: u64,
) -> Result<()> {
    // (plan, step, schema, table) of every step the online procedure could run.
    let mut candidates = Vec::new();
    for (p, planned) in planned.iter().enumerate() {
        for (i, step) in planned.plan.steps.iter().enumerate() {
            if step.online_candidate().is_none() {
                continue;
            }
            let schema = planned
                .planned_on
                .iter()
                .find(|t| t.name == step.table)
                .map_or_else(|| planned.tenant.to_string(), |t| t.schema.clone());
            candidates.push((p, i, (schema, step.table.clone())));
        }
    }
    if candidates.is_empty() {
        return Ok(());
    }
    let tables: Vec<(String, String)> = candidates.iter().map(|c| c.2.clone()).collect();
    let estimates = DB::row_estimates(pool, &tables).await?;
    let big: Vec<_> = candidates
        .into_iter()
        .zip(estimates)
        .filter_map(|(c, rows)| rows.filter(|&rows| rows >= threshold).map(|rows| (c, rows)))
        .collect();
    if big.is_empty() {
        return Ok(());
    }
    // A column the procedure refuses is refused here too, with its reason: planned online,
    // its apply would fail on every pass; planned plain, it would block the table's
    // writers for the whole rewrite.
    let columns: Vec<(String, String, String)> = big
        .iter()
        .map(|((p, i, (schema, table)), _)| {
            let column = planned[*p].plan.steps[*i]
                .online_candidate()
                .map(|(column, _)| column)
                .unwrap_or_default();
            (schema.clone(), table.clone(), column)
        })
        .collect();
    let refusals = DB::online_refusals(pool, &columns).await?;
    // Last step first: a refusal removes its step, which moves the later ones.
    for (((p, i, (schema, _)), rows), refused) in big.into_iter().zip(refusals).rev() {
        let plan = planned[p].plan.clone();
        planned[p].plan = match refused {
            Some(reason) => plan.refuse_online(i, threshold, reason),
            None => plan.with_online(i, &schema, rows, threshold),
        };
    }
    Ok(())
}
