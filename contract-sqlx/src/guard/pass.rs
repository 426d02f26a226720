//! One pass: list the tenants again, check what changed, plan the drifted ones, decide per
//! tenant what may run (policy, approvals, versions still running), apply, re-check what
//! was applied, then set or lift pauses and write status to the control plane.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use contract_core::{
    ExecutionLog, FleetReport, LogAction, Severity, TenantLog, TenantName, TenantOutcome,
    TenantReport, Verdict,
};
use tracing::Instrument as _;

use super::decide::{Decision, decide};
use super::observe::{Forced, Observation, Scope};
use super::{Guard, Observed, PassState, Revalidation, metrics};
use crate::check::{ContractSet, FleetSnapshot};
use crate::control::{Approval, ControlStore, Replica, heartbeat_expiry};
use crate::error::{Error, Result, error_chain};
use crate::remediation::backoff::Backoff;
use crate::remediation::{
    ApprovalRef, Planned, Task, apply_all, elapsed_ms, elapsed_ms_of, plan_group,
};
use crate::telemetry;

impl<DB: ControlStore> Guard<DB> {
    /// One pass over every tenant: the tenant sources listed again, a bulk introspection,
    /// a diff only where the live fingerprint changed (or the tenant was marked dirty),
    /// remediation by policy and approvals, pauses set or lifted, status written to the
    /// control plane, operator pauses reloaded.
    ///
    /// # Errors
    ///
    /// Only when the control plane cannot be read or written; database failures of a pool
    /// mark its tenants paused as unreachable.
    pub async fn revalidate(&self) -> Result<Revalidation> {
        self.revalidate_with(false).await
    }

    /// The background task's pass after a wake-up: only the tenants the DDL listener named
    /// when that is all that happened (discovery only for names not known yet), a sweep
    /// otherwise (an approval, a listener that reconnected).
    pub(super) async fn revalidate_woken(&self) -> Result<Revalidation> {
        self.revalidate_with(true).await
    }

    async fn revalidate_with(&self, woken: bool) -> Result<Revalidation> {
        let span = tracing::info_span!(
            "contract.guard.pass",
            dirty = tracing::field::Empty,
            signal = tracing::field::Empty,
            introspected = tracing::field::Empty,
            changed = tracing::field::Empty,
            paused = tracing::field::Empty,
        );
        let pass = self.pass(woken).instrument(span.clone()).await;
        if let Ok(summary) = &pass {
            *self
                .inner
                .last_pass
                .write()
                .unwrap_or_else(PoisonError::into_inner) = Some(summary.clone());
            span.record("signal", tracing::field::display(summary.signal));
            span.record("introspected", summary.introspected);
            span.record("changed", summary.changed.len());
            span.record("paused", summary.paused.len());
        }
        pass
    }

    async fn pass(&self, woken: bool) -> Result<Revalidation> {
        let inner = &self.inner;
        let started = Instant::now();
        let mut locked = inner.state.lock().await;
        let state: &mut PassState = &mut locked;
        // Taken once the pass holds the lock: while another pass runs, the marked tenants
        // stay in the set, where the prompt check finds them (`prompt.rs`).
        let dirty = inner
            .dirty
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take_for_pass();
        state.taken = dirty.taken;
        tracing::Span::current().record("dirty", dirty.tenants.len());
        let scope = if woken && !dirty.sweep && !dirty.tenants.is_empty() {
            Scope::Targeted(dirty.tenants.clone())
        } else {
            Scope::Sweep
        };
        let first = inner
            .report
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none();
        let scope = match scope {
            _ if first => Scope::Full,
            Scope::Sweep if state.sweeps + 1 >= inner.full_check_every => Scope::Full,
            other => other,
        };
        match &scope {
            Scope::Full => state.sweeps = 0,
            Scope::Sweep => state.sweeps += 1,
            Scope::Targeted(_) => {}
        }
        // A targeted pass lists the tenants only when it was told of a name it does not know.
        let list = match &scope {
            Scope::Targeted(names) => names.iter().any(|n| !self.knows(state, n)),
            Scope::Full | Scope::Sweep => true,
        };
        let policy = self.policy();
        let mut log = ExecutionLog::new("guard", crate::remediation::now_text());
        log.policy = policy.to_string();

        let found = self.discover(state, first, list).await;
        let directory = Arc::clone(&found.directory);
        // A name still unknown once the tenants are listed is no tenant's schema: DDL there
        // (a contract's fixed schema, a type or table tenants' columns use) touches tenants
        // only a sweep finds (their signatures, or the fixed schema's, moved). Such DDL may
        // be frequent (a materialized view refreshed every few seconds): such sweeps take
        // at most a tenth of the time (one per ten times the last one's check took). One
        // that comes sooner is deferred: its names stay marked, and the background task
        // wakes for them when the sweep is due (`Guard::spawn`).
        let mut elsewhere = false;
        // Set by this pass: the sweep it defers, or none owed.
        let mut deferred = None;
        let scope = match scope {
            Scope::Targeted(names) if names.iter().any(|n| !self.knows(state, n)) => {
                let due = state
                    .last_elsewhere
                    .map(|(at, took)| at + took.saturating_mul(10));
                // Tokio's clock throughout, as the background task sleeps on it: with std's
                // next to it, a paused clock (a user's test) would wake the task for a sweep
                // that is never due, over and over.
                elsewhere = due.is_none_or(|due| due <= tokio::time::Instant::now());
                if elsewhere {
                    Scope::Sweep
                } else {
                    tracing::debug!(
                        "DDL outside the tenants soon after a sweep for such DDL; the sweep for it is deferred"
                    );
                    let unknown = names.iter().filter(|n| !self.knows(state, n)).cloned();
                    inner
                        .dirty
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .tenants
                        .extend(unknown);
                    deferred = due;
                    Scope::Targeted(names)
                }
            }
            other => other,
        };
        // Any other pass took every marked name: no sweep is owed for them (a sweep looks
        // at every tenant; a targeted pass saw no name that is no tenant's).
        *inner
            .deferred_sweep
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = deferred;
        let mut summary = Revalidation {
            discovered: if first {
                Vec::new()
            } else {
                found.added.clone()
            },
            retired: found.retired.clone(),
            ..Revalidation::default()
        };
        let mut retry_due: BTreeSet<String> = state
            .retry
            .iter()
            .filter(|(_, (at, _))| *at <= started)
            .map(|(t, _)| t.clone())
            .collect();
        // Kept until their reconcile ran: a pass dropped meanwhile leaves them to the next.
        let resuming = !first && policy.applies() && !state.resume.is_empty();
        if resuming {
            retry_due.extend(state.resume.iter().cloned());
        }
        // Audit rows an interrupted apply left pending (a killed process, a cut connection,
        // a later transaction of a multi-transaction plan that failed) are settled against
        // the live schema, or resumed where they stopped, before anything is applied: at
        // start-up for every tenant, then for each tenant whose failed remediation is due
        // for its retry (planning it afresh would run its first transaction again). A
        // resume runs DDL that may scan a table or wait for a lock for as long as the
        // options allow: the first pass, which `start` awaits with every gate closed,
        // leaves those to the next pass and applies nothing to their tenants.
        if policy.applies() && (first || !retry_due.is_empty()) {
            for (pool, names) in directory.groups() {
                if first {
                    let later =
                        DB::reconcile_at_start(pool, names, &inner.contracts, &inner.options).await;
                    for tenant in &later {
                        tracing::info!(tenant = %tenant, "a remediation stopped between its transactions is resumed by the next pass, not at start-up");
                    }
                    state.resume.extend(later.iter().map(ToString::to_string));
                    continue;
                }
                let due: Vec<TenantName> = names
                    .iter()
                    .filter(|n| retry_due.contains(n.as_str()))
                    .cloned()
                    .collect();
                if !due.is_empty() {
                    DB::reconcile_audits(pool, &due, &inner.contracts, &inner.options).await;
                }
            }
            if resuming {
                state.resume.clear();
            }
        }

        // Check: the tenants the scope asks for (on a sweep, those whose catalog signature
        // moved), in chunks; diff the tenants whose fingerprint changed.
        // Tokio's clock: the rate limit below keeps it (`last_elsewhere`).
        let check_started = tokio::time::Instant::now();
        let forced = Forced {
            dirty: &dirty.tenants,
            retry_due: &retry_due,
        };
        let Observation {
            to_plan,
            schema_changed,
            introspected,
            signal,
        } = self.observe(state, &directory, &scope, &forced).await;
        // Those this pass re-diffed, and those an earlier pass did and was dropped before it
        // settled them.
        let mut touched = state.unsettled.clone();
        summary.introspected = introspected;
        summary.signal = signal;
        let introspect_took = check_started.elapsed();
        let introspect_ms = crate::remediation::elapsed_ms_of(introspect_took);
        // Before any gate reopens below: connections opened before now are recycled.
        if schema_changed {
            let epoch = inner.epoch.bump();
            tracing::info!(
                epoch,
                "live schema changed since the last pass; schema epoch bumped"
            );
        }
        summary.changed = touched.iter().cloned().collect();

        // Plan the changed tenants that drifted (one type lookup per pool).
        if policy.plans() {
            for group in &to_plan {
                match plan_group(
                    &group.pool,
                    &group.names,
                    &group.reports,
                    &group.snapshot,
                    &inner.contracts,
                    inner.options.online_threshold_rows,
                )
                .await
                {
                    Ok(planned) => {
                        for planned in planned {
                            if let Some(observed) = state.observed.get_mut(planned.tenant.as_str())
                            {
                                observed.planned = Some(planned);
                            }
                        }
                    }
                    Err(error) => {
                        let error = format!("cannot plan: {}", error_chain(&error));
                        for name in &group.names {
                            if let Some(observed) = state.observed.get_mut(name.as_str()) {
                                observed.waiting = Some(error.clone());
                            }
                        }
                    }
                }
            }
        }
        drop(to_plan);

        // Decide every tenant with a pending plan (changed ones, and those waiting for an
        // approval or for a version to go away).
        let pending: Vec<String> = state
            .observed
            .iter()
            .filter(|(_, o)| o.planned.is_some())
            .map(|(t, _)| t.clone())
            .collect();
        let (approvals, others) = self.approvals_and_versions(state, &pending, &policy).await;
        let ours: Vec<_> = inner
            .contracts
            .entries()
            .iter()
            .map(|e| e.contract.clone())
            .collect();
        let mut tasks: Vec<Task<DB>> = Vec::new();
        for tenant in &pending {
            let Some(observed) = state.observed.get_mut(tenant) else {
                continue;
            };
            let Some(planned) = &observed.planned else {
                continue;
            };
            let backing_off = state.retry.get(tenant).is_some_and(|(at, _)| *at > started)
                || state.resume.contains(tenant);
            let decision = decide(&planned.plan, &policy, &approvals, &ours, &others);
            if decision.waiting != observed.waiting {
                touched.insert(tenant.clone());
                state.unsettled.insert(tenant.clone());
                observed.waiting.clone_from(&decision.waiting);
            }
            if touched.contains(tenant) || !decision.steps.is_empty() {
                log.tenants.push(log_entry(planned, &decision, &policy));
            }
            if decision.steps.is_empty() || backing_off {
                continue;
            }
            let Some(pool) = directory.pool_of(tenant) else {
                continue;
            };
            tasks.push(Task::new(
                pool.clone(),
                planned.clone(),
                decision.steps.clone(),
                approval_ref(&decision),
            ));
        }
        let tasks = self.reserve(tasks, &mut log).await;

        // Apply: their gates close first (drift found, no new claims; applying may wait
        // for locks or for another replica), in memory; the pauses below settle them.
        let mut remediated = Vec::new();
        if !tasks.is_empty() {
            // Drift this pass found closes those gates now too, not only once the apply is
            // over: an online change's backfill may take minutes, and a drifted tenant
            // without a task would claim batches against a schema it cannot read meanwhile.
            for tenant in &touched {
                let Some(observed) = state.observed.get(tenant.as_str()) else {
                    continue;
                };
                if observed.report.verdict == Verdict::Compliant {
                    continue;
                }
                let pause = super::persist::guard_pause(observed, &inner.replica.version);
                self.update_cell(tenant, |cell| {
                    if cell.drift.is_none() {
                        cell.drift = Some(Arc::new(pause));
                    }
                });
            }
            for task in &tasks {
                if let Some(observed) = state.observed.get(task.tenant.as_str()) {
                    let mut pause = super::persist::guard_pause(observed, &inner.replica.version);
                    pause.reason = format!("remediating {}", pause.reason);
                    self.update_cell(task.tenant.as_str(), |cell| {
                        if let Some(previous) = &cell.drift {
                            pause.since = previous.since;
                        }
                        cell.drift = Some(Arc::new(pause));
                    });
                }
            }
            let done = apply_all(&tasks, &inner.contracts, &inner.options).await;
            // A plan stopped after some of its transactions committed used its approval all
            // the same (it is resumed, not approved again).
            let used: BTreeSet<String> = done
                .iter()
                .filter(|d| d.result.as_ref().is_err_and(Error::keeps_its_approval))
                .map(|d| d.tenant.clone())
                .collect();
            let mut failed = Vec::new();
            let audits = crate::remediation::record(done, &mut log, &mut failed);
            telemetry::count(metrics::REMEDIATIONS_TOTAL, audits.len() as u64);
            telemetry::count(metrics::REMEDIATION_FAILURES_TOTAL, failed.len() as u64);
            self.release_unused(&tasks, &audits, &used).await;
            self.schedule_retries(state, &audits, &failed);
            if !audits.is_empty() {
                inner.epoch.bump();
            }
            for failure in &failed {
                if let Some(observed) = state.observed.get_mut(&failure.tenant) {
                    observed.waiting = Some(format!(
                        "remediation failed and will be retried: {}",
                        failure.error
                    ));
                }
            }
            remediated = audits.iter().map(|a| a.tenant.clone()).collect::<Vec<_>>();
            // Re-check what ran (stale and failed ones too: another replica may have fixed
            // them), so gates reopen in this pass.
            let applied: BTreeSet<String> = tasks.iter().map(|t| t.tenant.to_string()).collect();
            self.recheck(state, &directory, &applied, &policy).await;
            touched.extend(applied);
        }
        summary.remediated = remediated;

        // Pauses, backlog, status, heartbeat.
        // Which gates reopen is only needed to follow backlogs: no fleet scan without one.
        let closed_before = inner.backlog.is_some().then(|| self.closed_tenants());
        let persisted = self.apply_pauses(state, &touched, first).await;
        if let Some(closed_before) = &closed_before {
            self.measure_backlog(state, &directory, closed_before, &mut touched, &mut log)
                .await;
        }
        let stored = self
            .persist_status(state, &directory, &touched, &found.retired, &found.pruned)
            .await;
        state.unsettled.clear();
        let observed = &state.observed;
        state.retry.retain(|tenant, _| {
            observed
                .get(tenant)
                .is_some_and(|o| o.report.verdict != Verdict::Compliant)
        });
        summary.paused = state
            .observed
            .iter()
            .filter(|(_, o)| o.report.verdict != Verdict::Compliant)
            .map(|(t, _)| t.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let depths = &state.backlog.depths;
        let mut tenants: Vec<TenantReport> = state
            .observed
            .values()
            .map(|o| {
                let mut report = o.report.clone();
                report.backlog = depths.get(&report.tenant).copied();
                report
            })
            .collect();
        // Like `check_fleet`: rejected and duplicate tenant names are reported too.
        tenants.extend(crate::check::rejected_reports(&directory));
        let report = FleetReport::new(DB::DIALECT, inner.contracts.describe(), tenants);
        telemetry::gauge(
            metrics::DRIFT_FINDINGS,
            report
                .findings()
                .filter(|f| f.severity >= Severity::AtRisk)
                .count() as u64,
        );
        if !log.tenants.is_empty() || !log.steps.is_empty() {
            self.finish_log(log, &report, introspect_ms, signal, started);
        }
        *inner.report.write().unwrap_or_else(PoisonError::into_inner) = Some(report);
        telemetry::seconds(metrics::REVALIDATION_DURATION, started.elapsed());
        if elsewhere {
            // The check's duration, not the pass's: a remediation's backfill in this pass
            // would otherwise hold off the next such sweep ten times as long.
            state.last_elsewhere = Some((check_started, introspect_took));
        }
        self.publish_gauges();
        persisted?;
        stored?;
        Ok(summary)
    }

    /// The active approvals and the other live replicas, read only when some pending plan
    /// could use them (the policy applies and a plan has hazardous steps).
    async fn approvals_and_versions(
        &self,
        state: &PassState,
        pending: &[String],
        policy: &contract_core::plan::Remediation,
    ) -> (Vec<Approval>, Vec<Replica>) {
        let inner = &self.inner;
        let Some(plane) = &inner.plane else {
            return (Vec::new(), Vec::new());
        };
        let hazardous = pending.iter().any(|t| {
            state
                .observed
                .get(t)
                .and_then(|o| o.planned.as_ref())
                .is_some_and(|p| p.plan.needs_approval())
        });
        if !policy.applies() || !hazardous {
            return (Vec::new(), Vec::new());
        }
        let approvals = DB::load_approvals(&inner.control, plane).await.unwrap_or_else(|error| {
            tracing::warn!(error = %error_chain(&error), "approvals could not be read; hazardous steps wait");
            Vec::new()
        });
        let expiry = heartbeat_expiry(inner.interval);
        let now = std::time::SystemTime::now();
        let others = match DB::load_replicas(&inner.control, plane).await {
            Ok(replicas) => replicas
                .into_iter()
                .filter(|r| {
                    r.replica_id != inner.replica.replica_id && r.version != inner.replica.version
                })
                .filter(|r| {
                    now.duration_since(r.heartbeat_at)
                        .map_or(true, |age| age <= expiry)
                })
                .collect(),
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "replicas could not be read; hazardous steps wait");
                // Unknown versions in flight: hold every approved hazardous step back.
                return (Vec::new(), Vec::new());
            }
        };
        (approvals, others)
    }

    /// Counts each task's approval against its tenant cap before applying; a task whose
    /// approval is used up (or revoked meanwhile) runs its safe steps only.
    async fn reserve(&self, tasks: Vec<Task<DB>>, log: &mut ExecutionLog) -> Vec<Task<DB>> {
        let inner = &self.inner;
        let Some(plane) = &inner.plane else {
            return tasks;
        };
        let mut kept = Vec::with_capacity(tasks.len());
        for mut task in tasks {
            let Some(id) = task.approval.as_ref().and_then(|a| a.id.clone()) else {
                kept.push(task);
                continue;
            };
            match DB::reserve_approval(&inner.control, plane, &id).await {
                Ok(true) => kept.push(task),
                outcome => {
                    if let Err(error) = outcome {
                        tracing::warn!(error = %error_chain(&error), "approval could not be counted; its steps wait");
                    }
                    task.steps.retain(|&i| task.plan.steps[i].is_safe());
                    task.approval = None;
                    if let Some(entry) = log
                        .tenants
                        .iter_mut()
                        .find(|t| t.tenant == task.tenant.as_str())
                    {
                        entry.detail = Some(format!(
                            "approval {id} is used up, expired or revoked; hazardous steps wait"
                        ));
                        entry.approval_id = None;
                        entry.approver = None;
                        if task.steps.is_empty() {
                            entry.outcome = TenantOutcome::AwaitingApproval;
                        }
                    }
                    if !task.steps.is_empty() {
                        kept.push(task);
                    }
                }
            }
        }
        kept
    }

    /// Gives back the tenant-cap count of approvals whose apply did not happen (failed
    /// before any DDL took effect, or another replica was first); `used`: tenants whose
    /// failed apply may have changed their schema, which keep the count.
    async fn release_unused(
        &self,
        tasks: &[Task<DB>],
        audits: &[crate::remediation::AuditRecord],
        used: &BTreeSet<String>,
    ) {
        let inner = &self.inner;
        let Some(plane) = &inner.plane else {
            return;
        };
        for task in tasks {
            let Some(id) = task.approval.as_ref().and_then(|a| a.id.as_deref()) else {
                continue;
            };
            if used.contains(task.tenant.as_str())
                || audits.iter().any(|a| a.tenant == task.tenant.as_str())
            {
                continue;
            }
            if let Err(error) = DB::release_approval(&inner.control, plane, id).await {
                tracing::warn!(error = %error_chain(&error), approval = id, "approval count not given back");
            }
        }
    }

    /// Re-checks (and re-plans) the tenants whose remediation just ran, by pool.
    async fn recheck(
        &self,
        state: &mut PassState,
        directory: &crate::tenants::TenantDirectory<DB>,
        tenants: &BTreeSet<String>,
        policy: &contract_core::plan::Remediation,
    ) {
        let inner = &self.inner;
        for (pool, names) in directory.groups() {
            let names: Vec<TenantName> = names
                .iter()
                .filter(|t| tenants.contains(t.as_str()))
                .cloned()
                .collect();
            if names.is_empty() {
                continue;
            }
            let (reports, snap) = crate::check::check_group(pool, &names, &inner.contracts).await;
            let planned: HashMap<String, Planned> = match (&snap, policy.plans()) {
                (Some(snap), true) => plan_group(
                    pool,
                    &names,
                    &reports,
                    snap,
                    &inner.contracts,
                    inner.options.online_threshold_rows,
                )
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|p| (p.tenant.to_string(), p))
                .collect(),
                _ => HashMap::new(),
            };
            let mut planned = planned;
            for (tenant, report) in names.iter().zip(reports) {
                let fingerprint = snap
                    .as_ref()
                    .map(|s| tenant_fingerprint(tenant.as_str(), &inner.contracts, s))
                    .unwrap_or_default();
                let previous_waiting = state
                    .observed
                    .get(tenant.as_str())
                    .and_then(|o| o.waiting.clone());
                let planned = planned.remove(tenant.as_str());
                let waiting = planned
                    .as_ref()
                    .and_then(|p| decide(&p.plan, policy, &[], &[], &[]).waiting);
                state.unsettled.insert(tenant.to_string());
                state.observed.insert(
                    tenant.to_string(),
                    Observed {
                        fingerprint,
                        report,
                        waiting: waiting
                            .or(previous_waiting.filter(|w| w.starts_with("remediation failed"))),
                        planned,
                        checked_in: state.taken,
                    },
                );
            }
        }
    }

    /// Failed tenants are retried after the revalidation interval, doubling per failure up
    /// to ten minutes, with jitter (retrying every pass would keep queueing exclusive
    /// locks); remediated tenants are forgotten.
    fn schedule_retries(
        &self,
        state: &mut PassState,
        audits: &[crate::remediation::AuditRecord],
        failed: &[contract_core::TenantError],
    ) {
        for audit in audits {
            state.retry.remove(&audit.tenant);
        }
        let now = Instant::now();
        for failure in failed {
            let failures = state.retry.get(&failure.tenant).map_or(0, |(_, n)| *n) + 1;
            let delay = Backoff {
                base: self.inner.interval,
                max: Duration::from_secs(600),
            }
            .delay(failures);
            tracing::warn!(tenant = %failure.tenant, error = %failure.error, failures, retry_in_ms = elapsed_ms_of(delay), "remediation failed; retried later");
            state
                .retry
                .insert(failure.tenant.clone(), (now + delay, failures));
        }
    }

    /// Completes the pass's execution log, keeps it, and appends it to the log file.
    fn finish_log(
        &self,
        mut log: ExecutionLog,
        report: &FleetReport,
        introspect_ms: u64,
        signal: super::ChangeSignal,
        started: Instant,
    ) {
        log.push(LogAction::Introspect {
            tenants: report.tenants.len(),
            tables: 0,
            duration_ms: introspect_ms,
        });
        log.push(LogAction::DetectDrift {
            findings: report
                .findings()
                .filter(|f| f.severity >= Severity::AtRisk)
                .map(ToString::to_string)
                .collect(),
            compliant: report.tenants_with("compliant").count(),
            drifted: report.tenants_with("drifted").count(),
            unreachable: report.tenants_with("unreachable").count(),
        });
        log.tenants.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        log.outcome = format!(
            "{}; {} tenant(s) applied, {} waiting, {} failed, in {} ms; change signal: {signal}",
            report.summary(),
            log.tenants
                .iter()
                .filter(|t| t.outcome == TenantOutcome::Applied && t.audit_id.is_some())
                .count(),
            log.tenants
                .iter()
                .filter(|t| matches!(
                    t.outcome,
                    TenantOutcome::AwaitingApproval | TenantOutcome::WaitingForVersion
                ))
                .count(),
            log.tenants
                .iter()
                .filter(|t| t.outcome == TenantOutcome::Failed)
                .count(),
            elapsed_ms(started),
        );
        log.finished_at = crate::remediation::now_text();
        if let Some(path) = &self.inner.log_file {
            append_line(path, &log.to_json_line());
        }
        *self
            .inner
            .log
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(log);
    }
}

/// The approval a decision's hazardous steps run under, for the audit row.
fn approval_ref(decision: &Decision) -> Option<ApprovalRef> {
    match (&decision.approval, decision.approved_by_policy) {
        (Some(approval), _) => Some(ApprovalRef {
            id: Some(approval.id.clone()),
            approver: approval.approver.clone(),
        }),
        (None, true) => Some(ApprovalRef {
            id: None,
            approver: "Remediation::Approved".into(),
        }),
        (None, false) => None,
    }
}

fn log_entry(
    planned: &Planned,
    decision: &Decision,
    policy: &contract_core::plan::Remediation,
) -> TenantLog {
    let policy = match &decision.approval {
        Some(approval) => format!("{policy}, {approval}"),
        None => policy.to_string(),
    };
    let mut entry = TenantLog::new(
        &planned.plan,
        planned.findings.clone(),
        policy,
        decision.outcome,
    );
    entry.approval_id = decision.approval.as_ref().map(|a| a.id.clone());
    entry.approver = decision.approval.as_ref().map(|a| a.approver.clone());
    entry.detail.clone_from(&decision.waiting);
    entry
}

/// Appends one line to the JSON Lines file (a failure is logged, never fails the pass).
fn append_line(path: &std::path::Path, line: &str) {
    use std::io::Write as _;
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut file| writeln!(file, "{line}"));
    if let Err(error) = written {
        tracing::warn!(path = %path.display(), %error, "cannot append the execution log");
    }
}

/// A digest of a tenant's contracted live tables (absent tables included).
pub(super) fn tenant_fingerprint<DB: crate::backend::Backend>(
    tenant: &str,
    contracts: &ContractSet<DB>,
    snap: &FleetSnapshot<DB>,
) -> String {
    let mut digest = contract_core::FieldDigest::new();
    for entry in contracts.entries() {
        let table = snap.table_for(tenant, &entry.contract);
        digest
            .field(&entry.contract.table)
            .field(table.map_or("absent", |t| t.fingerprint.as_str()));
    }
    digest.finish_hex()
}
