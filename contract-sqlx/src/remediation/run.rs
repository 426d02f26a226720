//! One remediation run over a fleet: introspect → detect drift → plan → apply what the
//! policy allows → verify, with a JSON execution log (`ARCHITECTURE.md` D5, D6).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Instant, SystemTime};

use contract_core::plan::{Remediation, TenantPlan};
use contract_core::{
    ExecutionLog, FleetReport, LogAction, Severity, TenantError, TenantLog, TenantName,
    TenantOutcome, TenantReport, Verdict,
};

use super::execute::{Done, Task, apply_all};
use super::plan::{Planned, plan_group};
use super::{ApplyOptions, ApprovalRef, AuditRecord, ReconciledAudit, SchemaEpoch, elapsed_ms};
use crate::backend::Backend;
use crate::check::{ContractSet, check_group, rejected_reports};
use crate::error::{Error, Result, error_chain};
use crate::tenants::TenantDirectory;

/// The result of [`remediate`].
#[derive(Debug, Clone)]
#[non_exhaustive]
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
    /// The fleet after: the tenants a plan was applied to (or attempted on) re-checked, the
    /// others as in `before` (equal to `before` when nothing was applied).
    pub after: FleetReport,
    /// Tenants still drifted whose remaining plan waits for approval: tenant → plan.
    pub awaiting_approval: BTreeMap<String, TenantPlan>,
    /// The execution log.
    pub log: ExecutionLog,
}

/// Starts a remediation run over `directory`: check every tenant, plan the drifted ones,
/// apply what `policy` allows (one transaction per tenant, never across tenants, a few
/// tenants at a time), bump the [`SchemaEpoch`] if anything changed, and re-check the
/// tenants it applied to. Finish with [`Remediate::run`].
///
/// [`Remediation::ApprovedShape`] approves every tenant plan of one change shape in the
/// same run: a fleet drifted the same way is remediated by one call.
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
    /// Timeouts, retries, parallelism and the audit table (default:
    /// [`ApplyOptions::default`]).
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
        let Self {
            directory,
            contracts,
            policy,
            options,
            epoch,
        } = self;
        let mut log = ExecutionLog::new("remediate", now_text());
        log.policy = policy.to_string();
        let started = Instant::now();
        let (mut reports, mut plans, mut tasks, mut failed) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut reconciled = Vec::new();
        let mut tables = 0;
        // Per pool (directory group), the tenants a task will touch: only they are verified.
        let mut touched: Vec<HashSet<String>> = Vec::new();
        for (pool, names) in directory.groups() {
            let mut group_touched = HashSet::new();
            let (group_reports, snapshot) = check_group(pool, names, contracts).await;
            let Some(snap) = snapshot else {
                reports.extend(group_reports);
                touched.push(group_touched);
                continue;
            };
            tables += snap.tables.len();
            if policy.applies() {
                reconciled.extend(DB::reconcile_audits(pool, names, contracts, &options).await);
            }
            if policy.plans() {
                match plan_group(
                    pool,
                    names,
                    &group_reports,
                    &snap,
                    contracts,
                    options.online_threshold_rows,
                )
                .await
                {
                    Ok(planned) => {
                        for planned in planned {
                            plans.push(planned.plan.clone());
                            let tasks_before = tasks.len();
                            let tenant = planned.tenant.to_string();
                            decide(pool, planned, &policy, &mut tasks, &mut log);
                            if tasks.len() > tasks_before {
                                group_touched.insert(tenant);
                            }
                        }
                    }
                    Err(error) => {
                        let error = error_chain(&error);
                        failed.extend(
                            group_reports
                                .iter()
                                .filter(|r| r.verdict == Verdict::Drifted)
                                .map(|r| TenantError::new(&r.tenant, &error)),
                        );
                    }
                }
            }
            reports.extend(group_reports);
            touched.push(group_touched);
        }
        let introspect_ms = elapsed_ms(started);
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
        let done = apply_all(&tasks, contracts, &options).await;
        let audits = record(done, &mut log, &mut failed);
        if let Some(epoch) = epoch.filter(|_| !audits.is_empty()) {
            epoch.bump();
        }
        let verify_started = Instant::now();
        let (after, awaiting_approval) = if tasks.is_empty() {
            let awaiting = plans
                .iter()
                .filter(|p| p.needs_approval())
                .map(|p| (p.tenant.clone(), p.clone()))
                .collect();
            (before.clone(), awaiting)
        } else {
            let verified = verify(
                directory,
                contracts,
                &touched,
                &before,
                &plans,
                options.online_threshold_rows,
            )
            .await;
            log.push(LogAction::Verify {
                tenants: touched.iter().map(HashSet::len).sum(),
                compliant: verified.0.tenants_with("compliant").count(),
                duration_ms: elapsed_ms(verify_started),
            });
            verified
        };
        log.outcome = outcome(&after, &awaiting_approval, &failed);
        log.finished_at = now_text();
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
}

/// RFC 3339 UTC now, with milliseconds.
pub(crate) fn now_text() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Decides one planned tenant by `policy` alone: a task for the steps it lets run, and
/// the tenant's log entry.
fn decide<DB: Backend>(
    pool: &sqlx::Pool<DB>,
    planned: Planned,
    policy: &Remediation,
    tasks: &mut Vec<Task<DB>>,
    log: &mut ExecutionLog,
) {
    let selection = policy.select(&planned.plan);
    let steps: Vec<usize> = planned
        .plan
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| selection.steps.iter().any(|t| std::ptr::eq(*t, *s)))
        .map(|(i, _)| i)
        .collect();
    let outcome = if !steps.is_empty() && policy.applies() {
        TenantOutcome::Applied
    } else if selection.awaiting_approval {
        TenantOutcome::AwaitingApproval
    } else if planned.plan.steps.is_empty() {
        TenantOutcome::Refused
    } else {
        TenantOutcome::Planned
    };
    let mut entry = TenantLog::new(
        &planned.plan,
        planned.findings.clone(),
        policy.to_string(),
        outcome,
    );
    if selection.awaiting_approval {
        entry.detail = Some(format!(
            "hazardous steps wait for an approval of plan {} or of shape {}",
            planned.plan.hash, planned.plan.shape
        ));
    }
    log.tenants.push(entry);
    if !steps.is_empty() && policy.applies() {
        let approval = policy.approves(&planned.plan).then(|| ApprovalRef {
            id: None,
            approver: match policy {
                Remediation::ApprovedShape(_) => "Remediation::ApprovedShape",
                _ => "Remediation::Approved",
            }
            .into(),
        });
        tasks.push(Task::new(pool.clone(), planned, steps, approval));
    }
}

/// Folds the applies' results into the log entries (audit id, duration, failure) and the
/// run's audits and failures.
pub(crate) fn record(
    done: Vec<Done>,
    log: &mut ExecutionLog,
    failed: &mut Vec<TenantError>,
) -> Vec<AuditRecord> {
    let mut audits = Vec::new();
    for Done {
        tenant,
        result,
        duration_ms,
    } in done
    {
        let entry = log.tenants.iter_mut().find(|t| t.tenant == tenant);
        match result {
            Ok(audit) => {
                if let Some(entry) = entry {
                    entry.audit_id = Some(audit.audit_id.clone());
                    entry.duration_ms = duration_ms;
                    entry.statements.clone_from(&audit.statements);
                    entry.progress.clone_from(&audit.progress);
                }
                audits.push(audit);
            }
            Err(error @ Error::StalePlan { .. }) => {
                if let Some(entry) = entry {
                    entry.outcome = TenantOutcome::Stale;
                    entry.detail = Some(error.to_string());
                }
            }
            Err(error) => {
                let error = error_chain(&error);
                if let Some(entry) = entry {
                    entry.outcome = TenantOutcome::Failed;
                    entry.detail = Some(error.clone());
                    entry.duration_ms = duration_ms;
                }
                failed.push(TenantError::new(tenant, error));
            }
        }
    }
    audits
}

/// Re-checks the tenants a task touched (`touched`, per directory group) and re-plans what
/// is still drifted among them (the hashes to approve now). The other tenants keep their
/// report and plan from `before`: nothing of theirs was applied.
async fn verify<DB: Backend>(
    directory: &TenantDirectory<DB>,
    contracts: &ContractSet<DB>,
    touched: &[HashSet<String>],
    before: &FleetReport,
    plans: &[TenantPlan],
    online_threshold: Option<u64>,
) -> (FleetReport, BTreeMap<String, TenantPlan>) {
    let mut rechecked: HashMap<String, TenantReport> = HashMap::new();
    let mut awaiting = BTreeMap::new();
    for ((pool, names), touched) in directory.groups().iter().zip(touched) {
        let names: Vec<TenantName> = names
            .iter()
            .filter(|t| touched.contains(t.as_str()))
            .cloned()
            .collect();
        if names.is_empty() {
            continue;
        }
        // One snapshot of these tenants serves both the re-check and the re-plan.
        let (group_reports, snap) = check_group(pool, &names, contracts).await;
        if let Some(snap) = snap {
            match plan_group(
                pool,
                &names,
                &group_reports,
                &snap,
                contracts,
                online_threshold,
            )
            .await
            {
                Ok(planned) => awaiting.extend(
                    planned
                        .into_iter()
                        .filter(|p| p.plan.needs_approval())
                        .map(|p| (p.tenant.to_string(), p.plan)),
                ),
                // A plan made without the type catalog could carry another hash.
                Err(error) => {
                    tracing::warn!(error = %error_chain(&error), "plans awaiting approval not re-made for this pool");
                }
            }
        }
        rechecked.extend(group_reports.into_iter().map(|r| (r.tenant.clone(), r)));
    }
    awaiting.extend(
        plans
            .iter()
            .filter(|p| p.needs_approval() && !rechecked.contains_key(&p.tenant))
            .map(|p| (p.tenant.clone(), p.clone())),
    );
    let reports = before
        .tenants
        .iter()
        .map(|r| rechecked.remove(&r.tenant).unwrap_or_else(|| r.clone()))
        .collect();
    (
        FleetReport::new(DB::DIALECT, contracts.describe(), reports),
        awaiting,
    )
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
            "; {tenant} paused awaiting approval of plan {} (shape {})",
            plan.hash, plan.shape
        ));
    }
    for failure in failed {
        text.push_str(&format!("; {} failed: {}", failure.tenant, failure.error));
    }
    text
}
