//! One remediation run over a fleet: introspect → detect drift → plan → apply what the
//! policy allows → verify, with a JSON execution log (DESIGN D5, D6).

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use contract_core::plan::{Remediation, TableInput, TenantPlan, plan_tenant};
use contract_core::{
    Dialect, ExecutionLog, FleetReport, LogAction, Severity, TenantError, TenantReport, Verdict,
};
use tracing::Instrument as _;

use crate::apply::{ApplyJob, ApplyOptions};
use crate::audit::AuditRecord;
use crate::backend::Backend;
use crate::contracts::ContractSet;
use crate::epoch::SchemaEpoch;
use crate::error::{Error, Result};
use crate::fleet::{FleetSnapshot, check_fleet, check_tenant, error_chain, snapshot};
use crate::tenants::TenantDirectory;

/// The result of [`remediate`].
#[derive(Debug, Clone)]
pub struct RemediationRun {
    /// The fleet before.
    pub before: FleetReport,
    /// The plans made (tenants with drift), before applying.
    pub plans: Vec<TenantPlan>,
    /// Audit rows written.
    pub audits: Vec<AuditRecord>,
    /// Tenants whose remediation failed (rolled back, unchanged).
    pub failed: Vec<TenantError>,
    /// The fleet after (equal to `before` when nothing was applied).
    pub after: FleetReport,
    /// Tenants still drifted whose remaining plan waits for approval: tenant → plan.
    pub awaiting_approval: BTreeMap<String, TenantPlan>,
    /// The execution log.
    pub log: ExecutionLog,
}

/// Plans one tenant from a snapshot (its drift only).
#[must_use]
pub fn plan_for<DB: Backend>(
    tenant: &TenantReport,
    contracts: &ContractSet<DB>,
    snapshot: &FleetSnapshot<DB>,
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
        .map(|((entry, expected_types), findings)| {
            let table_schema = entry
                .contract
                .schema
                .clone()
                .unwrap_or_else(|| tenant.tenant.clone());
            TableInput {
                contract: &entry.contract,
                live: snapshot
                    .tables
                    .get(&(table_schema, entry.contract.table.clone())),
                findings,
                expected_types,
            }
        })
        .collect();
    plan_tenant(DB::DIALECT, &tenant.tenant, schema, &inputs)
}

fn millis(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Checks the fleet, plans the drifted tenants, applies what `policy` allows (one
/// transaction per tenant, never across tenants), bumps `epoch` if anything changed, and
/// re-checks.
///
/// # Errors
///
/// Only for invalid contracts; database failures are per tenant (`failed`, `unreachable`).
pub async fn remediate<DB: Backend>(
    directory: &TenantDirectory<DB>,
    contracts: &ContractSet<DB>,
    policy: &Remediation,
    options: &ApplyOptions,
    epoch: Option<&SchemaEpoch>,
) -> Result<RemediationRun> {
    let mut log = ExecutionLog::new(
        "remediate",
        humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
    );
    let mut reports = Vec::new();
    let mut plans = Vec::new();
    let mut audits = Vec::new();
    let mut failed = Vec::new();
    let mut applied = Vec::new();
    let mut attempted = false;
    let (mut introspect_ms, mut apply_ms, mut tables) = (0, 0, 0);
    for (pool, names) in directory.groups() {
        let schemas: Vec<String> = names.iter().map(|t| t.as_str().to_owned()).collect();
        let started = Instant::now();
        let snap = match snapshot(pool, &schemas, contracts).await {
            Ok(snap) => snap,
            Err(error) => {
                let error = error_chain(&error);
                reports.extend(schemas.into_iter().map(|tenant| TenantReport {
                    tenant,
                    verdict: Verdict::Unreachable {
                        error: error.clone(),
                    },
                    findings: Vec::new(),
                }));
                continue;
            }
        };
        introspect_ms += millis(started);
        tables += snap.tables.len();
        let group_reports: Vec<TenantReport> = schemas
            .iter()
            .map(|t| check_tenant(t, contracts, &snap))
            .collect();
        let started = Instant::now();
        for (tenant_name, report) in names.iter().zip(&group_reports) {
            if report.verdict != Verdict::Drifted || !policy.plans() {
                continue;
            }
            let plan = plan_for(report, contracts, &snap);
            let selection = policy.select(&plan);
            if !selection.steps.is_empty() {
                attempted = true;
                if let Err(error) =
                    DB::ensure_audit_table(pool, &options.audit, tenant_name.as_str()).await
                {
                    failed.push(TenantError {
                        tenant: tenant_name.to_string(),
                        error: error_chain(&error),
                    });
                    plans.push(plan);
                    continue;
                }
                let planned_on = contracts
                    .entries()
                    .iter()
                    .filter_map(|e| {
                        let schema = e
                            .contract
                            .schema
                            .clone()
                            .unwrap_or_else(|| tenant_name.to_string());
                        snap.tables.get(&(schema, e.contract.table.clone()))
                    })
                    .collect();
                let job = ApplyJob {
                    tenant: tenant_name,
                    plan: &plan,
                    steps: selection.steps.clone(),
                    planned_on,
                    contracts,
                    drift_before: report.findings.iter().collect(),
                    options,
                };
                let span = tracing::info_span!(
                    "contract.apply",
                    tenant = %tenant_name,
                    plan_hash = %plan.short_hash(),
                    steps = job.steps.len(),
                    tables = ?job.steps.iter().map(|s| s.table.as_str()).collect::<Vec<_>>(),
                );
                match DB::apply(pool, &job).instrument(span).await {
                    Ok(record) => {
                        applied.push(tenant_name.to_string());
                        audits.push(record);
                    }
                    // Another replica changed the tenant first: the verify step shows the result.
                    Err(Error::StalePlan { .. }) => {}
                    Err(error) => failed.push(TenantError {
                        tenant: tenant_name.to_string(),
                        error: error_chain(&error),
                    }),
                }
            }
            plans.push(plan);
        }
        apply_ms += millis(started);
        reports.extend(group_reports);
    }
    let before = FleetReport::new(DB::DIALECT, contracts.describe(), reports);
    log.push(LogAction::Introspect {
        tenants: before.tenants.len(),
        tables,
        duration_ms: introspect_ms,
    });
    log.push(LogAction::DetectDrift {
        findings: before
            .findings()
            .filter(|f| f.severity >= Severity::AtRisk)
            .map(ToString::to_string)
            .collect(),
        compliant: before.tenants_with("compliant").count(),
        drifted: before.tenants_with("drifted").count(),
        unreachable: before.tenants_with("unreachable").count(),
    });
    if policy.plans() {
        log.push(plan_entry(&plans));
    }
    if let Some(epoch) = epoch.filter(|_| !audits.is_empty()) {
        epoch.bump();
    }
    let started = Instant::now();
    let (after, awaiting_approval) = if !attempted {
        let awaiting = plans
            .iter()
            .filter(|p| p.needs_approval())
            .map(|p| (p.tenant.clone(), p.clone()))
            .collect();
        (before.clone(), awaiting)
    } else {
        verify(directory, contracts).await?
    };
    if policy.applies() {
        log.push(LogAction::Apply {
            applied,
            awaiting_approval: awaiting_approval.keys().cloned().collect(),
            failed: failed.clone(),
            audit_ids: audits.iter().map(|a| a.audit_id.clone()).collect(),
            duration_ms: apply_ms,
        });
        log.push(LogAction::Verify {
            tenants: after.tenants.len(),
            compliant: after.tenants_with("compliant").count(),
            duration_ms: millis(started),
        });
    }
    log.outcome = outcome(&after, &awaiting_approval, &failed);
    Ok(RemediationRun {
        before,
        plans,
        audits,
        failed,
        after,
        awaiting_approval,
        log,
    })
}

fn plan_entry(plans: &[TenantPlan]) -> LogAction {
    LogAction::Plan {
        migrations: plans
            .iter()
            .flat_map(|p| p.statements().map(str::to_owned))
            .collect(),
        hazards: plans
            .iter()
            .filter(|p| p.needs_approval())
            .map(|p| (p.tenant.clone(), p.hazards()))
            .collect(),
        plan_hashes: plans
            .iter()
            .filter(|p| !p.steps.is_empty())
            .map(|p| (p.tenant.clone(), p.hash.clone()))
            .collect(),
        refused: plans
            .iter()
            .flat_map(|p| {
                p.refusals
                    .iter()
                    .map(move |r| format!("{}.{}: {}", p.tenant, r.table, r.reason))
            })
            .collect(),
    }
}

/// Re-checks the fleet and re-plans what is still drifted (the hashes to approve now).
async fn verify<DB: Backend>(
    directory: &TenantDirectory<DB>,
    contracts: &ContractSet<DB>,
) -> Result<(FleetReport, BTreeMap<String, TenantPlan>)> {
    let after = check_fleet(directory, contracts).await?;
    let mut awaiting = BTreeMap::new();
    for (pool, names) in directory.groups() {
        let drifted: Vec<&TenantReport> = after
            .tenants
            .iter()
            .filter(|t| {
                t.verdict == Verdict::Drifted && names.iter().any(|n| n.as_str() == t.tenant)
            })
            .collect();
        if drifted.is_empty() {
            continue;
        }
        let schemas: Vec<String> = drifted.iter().map(|t| t.tenant.clone()).collect();
        let snap = snapshot(pool, &schemas, contracts).await?;
        for tenant in drifted {
            let plan = plan_for(tenant, contracts, &snap);
            if plan.needs_approval() {
                awaiting.insert(tenant.tenant.clone(), plan);
            }
        }
    }
    Ok((after, awaiting))
}

fn outcome(
    after: &FleetReport,
    awaiting: &BTreeMap<String, TenantPlan>,
    failed: &[TenantError],
) -> String {
    let compliant = after.tenants_with("compliant").count();
    let mut text = format!("{compliant} of {} tenants compliant", after.tenants.len());
    for (tenant, plan) in awaiting {
        text.push_str(&format!(
            "; {tenant} paused awaiting approval of plan {}",
            plan.short_hash()
        ));
    }
    for failure in failed {
        text.push_str(&format!("; {} failed: {}", failure.tenant, failure.error));
    }
    text
}
