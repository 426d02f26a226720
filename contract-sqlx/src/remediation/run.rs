//! One remediation run over a fleet: introspect → detect drift → plan → apply what the
//! policy allows → verify, with a JSON execution log (DESIGN D5, D6).

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use contract_core::plan::{
    PlanStep, Remediation, TableInput, TenantPlan, TypeCatalog, plan_tenant,
};
use contract_core::{
    Dialect, ExecutionLog, Finding, FleetReport, LogAction, Severity, TenantError, TenantName,
    TenantReport, Verdict,
};
use sqlx::Pool;
use tracing::Instrument as _;

use crate::backend::Backend;
use crate::check::{ContractSet, FleetSnapshot, check_group, rejected_reports};
use crate::error::{Error, Result, error_chain};
use crate::remediation::{
    ApplyJob, ApplyOptions, AuditRecord, ReconciledAudit, SchemaEpoch, elapsed_ms,
};
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
    /// Tenants whose remediation failed; each error says whether the tenant is unchanged.
    pub failed: Vec<TenantError>,
    /// Audit rows an earlier, interrupted apply had left `pending`, settled by this run.
    pub reconciled: Vec<ReconciledAudit>,
    /// The fleet after (equal to `before` when nothing was applied).
    pub after: FleetReport,
    /// Tenants still drifted whose remaining plan waits for approval: tenant → plan.
    pub awaiting_approval: BTreeMap<String, TenantPlan>,
    /// The execution log.
    pub log: ExecutionLog,
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

/// The type catalog for planning `reports`' drifted tenants of `pool`: one lookup, and
/// none when no tenant drifted.
async fn types_for<DB: Backend>(
    pool: &Pool<DB>,
    reports: &[TenantReport],
    contracts: &ContractSet<DB>,
) -> Result<TypeCatalog> {
    let drifted: Vec<String> = reports
        .iter()
        .filter(|r| r.verdict == Verdict::Drifted)
        .map(|r| r.tenant.clone())
        .collect();
    if drifted.is_empty() {
        return Ok(TypeCatalog::new());
    }
    DB::type_catalog(pool, &drifted, contracts).await
}

/// Starts a remediation run over `directory`: check every tenant, plan the drifted ones,
/// apply what `policy` allows (one transaction per tenant, never across tenants), bump the
/// [`SchemaEpoch`] if anything changed, and re-check. Finish with [`Remediate::run`].
///
/// ```no_run
/// # use contract_sqlx::Contract;
/// # #[derive(sqlx::FromRow, Contract)] #[contract(table = "events")] struct Event { id: i64 }
/// # async fn demo(tenants: contract_sqlx::TenantDirectory<sqlx::Postgres>) -> contract_sqlx::Result<()> {
/// use contract_sqlx::check::ContractSet;
/// use contract_sqlx::plan::Remediation;
/// use contract_sqlx::remediate;
///
/// let contracts = ContractSet::<sqlx::Postgres>::new().with::<Event>();
/// let run = remediate(&tenants, &contracts, Remediation::SafeOnly).run().await?;
/// println!("{}", run.after.summary());
/// # Ok(()) }
/// ```
pub fn remediate<'a, DB: Backend>(
    directory: &'a TenantDirectory<DB>,
    contracts: &'a ContractSet<DB>,
    policy: Remediation,
) -> Remediate<'a, DB> {
    Remediate {
        directory,
        contracts,
        policy,
        options: ApplyOptions::default(),
        epoch: None,
    }
}

/// A remediation run being set up: see [`remediate`].
#[derive(Debug)]
#[must_use = "a remediation does nothing until `.run().await`"]
pub struct Remediate<'a, DB: Backend> {
    directory: &'a TenantDirectory<DB>,
    contracts: &'a ContractSet<DB>,
    policy: Remediation,
    options: ApplyOptions,
    epoch: Option<&'a SchemaEpoch>,
}

impl<'a, DB: Backend> Remediate<'a, DB> {
    /// Timeouts, retries and the audit table (default: [`ApplyOptions::default`]).
    pub fn options(mut self, options: ApplyOptions) -> Self {
        self.options = options;
        self
    }

    /// The schema epoch to bump when anything was applied (the consumer pool's hook).
    pub fn epoch(mut self, epoch: &'a SchemaEpoch) -> Self {
        self.epoch = Some(epoch);
        self
    }

    /// Runs it.
    ///
    /// # Errors
    ///
    /// Only for invalid contracts; database failures are per tenant (`failed`,
    /// `unreachable`).
    pub async fn run(self) -> Result<RemediationRun> {
        let started = Instant::now();
        let mut groups = Vec::new();
        for (pool, names) in self.directory.groups() {
            let (reports, snapshot) = check_group(pool, names, self.contracts).await;
            groups.push(CheckedGroup {
                pool: pool.clone(),
                names: names.to_vec(),
                reports,
                snapshot,
            });
        }
        let checks = Checked {
            groups,
            introspect_ms: elapsed_ms(started),
        };
        remediate_checked(
            self.directory,
            checks,
            self.contracts,
            &self.policy,
            &self.options,
            self.epoch,
        )
        .await
    }
}

/// One pool's tenants as checked: their reports (in `names` order) and the snapshot they
/// came from (`None` when the pool could not be read: the reports say unreachable).
pub(crate) struct CheckedGroup<DB: Backend> {
    pub pool: Pool<DB>,
    pub names: Vec<TenantName>,
    pub reports: Vec<TenantReport>,
    pub snapshot: Option<FleetSnapshot<DB>>,
}

/// The fleet as checked, and how long that took.
pub(crate) struct Checked<DB: Backend> {
    pub groups: Vec<CheckedGroup<DB>>,
    pub introspect_ms: u64,
}

/// [`remediate`] from a check already made (the guard's pass has just snapshotted these
/// tenants: they are not introspected again before planning; the re-check under each
/// tenant's lock still catches a change since). `directory` holds the same tenants, for
/// the verify step.
pub(crate) async fn remediate_checked<DB: Backend>(
    directory: &TenantDirectory<DB>,
    checked: Checked<DB>,
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
    let mut reconciled = Vec::new();
    let mut applied = Vec::new();
    let mut attempted = false;
    let (introspect_ms, mut apply_ms, mut tables) = (checked.introspect_ms, 0, 0);
    for group in checked.groups {
        let CheckedGroup {
            pool,
            names,
            reports: group_reports,
            snapshot,
        } = group;
        let Some(snap) = snapshot else {
            reports.extend(group_reports);
            continue;
        };
        let pool = &pool;
        if policy.applies() {
            reconciled.extend(DB::reconcile_audits(pool, &names, contracts, &options.audit).await);
        }
        let types = if policy.plans() {
            types_for(pool, &group_reports, contracts).await
        } else {
            Ok(TypeCatalog::new())
        };
        let types = match types {
            Ok(types) => types,
            Err(error) => {
                let error = error_chain(&error);
                failed.extend(
                    group_reports
                        .iter()
                        .filter(|r| r.verdict == Verdict::Drifted)
                        .map(|r| TenantError {
                            tenant: r.tenant.clone(),
                            error: error.clone(),
                        }),
                );
                reports.extend(group_reports);
                continue;
            }
        };
        // A pool-wide audit table (PostgreSQL) is ensured once, before the first apply.
        let mut audit_ready = false;
        tables += snap.tables.len();
        let started = Instant::now();
        for (tenant_name, report) in names.iter().zip(&group_reports) {
            if report.verdict != Verdict::Drifted || !policy.plans() {
                continue;
            }
            let plan = plan_for(report, contracts, &snap, &types);
            let selection = policy.select(&plan);
            if !selection.steps.is_empty() {
                attempted = true;
                let ensured = if audit_ready {
                    Ok(())
                } else {
                    DB::ensure_audit_table(pool, &options.audit).await
                };
                audit_ready = ensured.is_ok();
                if let Err(error) = ensured {
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
                    .filter_map(|e| snap.table_for(tenant_name.as_str(), &e.contract))
                    .collect();
                let job = ApplyJob {
                    tenant: tenant_name,
                    plan: &plan,
                    steps: selection.steps.clone(),
                    planned_on,
                    contracts,
                    drift_before: fixed_by(&selection.steps, &report.findings),
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
                    Err(error @ Error::StalePlan { .. }) => {
                        tracing::info!(tenant = %tenant_name, %error, "plan skipped: the tenant changed since it was planned");
                    }
                    Err(error) => failed.push(TenantError {
                        tenant: tenant_name.to_string(),
                        error: error_chain(&error),
                    }),
                }
            }
            plans.push(plan);
        }
        apply_ms += elapsed_ms(started);
        reports.extend(group_reports);
    }
    // Like `check_fleet`: rejected tenant names are reported, so before and after agree.
    reports.extend(rejected_reports(directory));
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
    if !reconciled.is_empty() {
        log.push(LogAction::Reconcile {
            settled: reconciled.iter().map(ToString::to_string).collect(),
        });
    }
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
            duration_ms: elapsed_ms(started),
        });
    }
    log.outcome = outcome(&after, &awaiting_approval, &failed);
    Ok(RemediationRun {
        before,
        plans,
        audits,
        failed,
        reconciled,
        after,
        awaiting_approval,
        log,
    })
}

/// The findings `steps` fix (what the audit row records as the drift before): a reconciled
/// audit row is judged by whether exactly these are gone.
fn fixed_by<'f>(steps: &[&PlanStep], findings: &'f [Finding]) -> Vec<&'f Finding> {
    findings
        .iter()
        .filter(|f| {
            steps.iter().any(|s| {
                s.table == f.table
                    && s.fixes == f.kind
                    && (s.column.is_none() || s.column == f.column)
            })
        })
        .collect()
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
    // One snapshot per pool serves both the re-check and the re-plan of what is still drifted.
    let mut reports = Vec::new();
    let mut awaiting = BTreeMap::new();
    for (pool, names) in directory.groups() {
        let (group_reports, snap) = check_group(pool, names, contracts).await;
        if let Some(snap) = snap {
            let types = match types_for(pool, &group_reports, contracts).await {
                Ok(types) => types,
                Err(error) => {
                    // A plan made without it could carry another hash than the real one.
                    tracing::warn!(error = %error_chain(&error), "plans awaiting approval not re-made for this pool");
                    reports.extend(group_reports);
                    continue;
                }
            };
            for report in group_reports
                .iter()
                .filter(|r| r.verdict == Verdict::Drifted)
            {
                let plan = plan_for(report, contracts, &snap, &types);
                if plan.needs_approval() {
                    awaiting.insert(report.tenant.clone(), plan);
                }
            }
        }
        reports.extend(group_reports);
    }
    reports.extend(rejected_reports(directory));
    Ok((
        FleetReport::new(DB::DIALECT, contracts.describe(), reports),
        awaiting,
    ))
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
