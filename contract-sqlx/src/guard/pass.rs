//! One revalidation pass: introspect, diff what changed, remediate by policy, set or lift
//! guard pauses, persist them, reload operator pauses.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tracing::Instrument as _;

use contract_core::{FleetReport, Severity, TenantName, TenantReport, Verdict};

use super::{Guard, PauseInfo, PauseStore, PausedBy, Revalidation, metrics};
use crate::check::{ContractSet, FleetSnapshot, check_tenant, snapshot};
use crate::error::{Result, error_chain};
use crate::remediation::backoff::Backoff;
use crate::remediation::{Checked, CheckedGroup, RemediationRun, remediate_checked};
use crate::tenants::TenantDirectory;

impl<DB: PauseStore> Guard<DB> {
    /// One revalidation pass over every tenant: bulk introspection, a diff only where the
    /// live fingerprint changed (or the tenant was marked dirty), remediation by policy,
    /// pauses set or lifted, operator pauses reloaded from the table.
    ///
    /// # Errors
    ///
    /// Only when the pause table cannot be read or written; database failures of a pool
    /// mark its tenants paused as unreachable.
    pub async fn revalidate(&self) -> Result<Revalidation> {
        let dirty: BTreeSet<String> = std::mem::take(
            &mut *self
                .inner
                .dirty
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let span = tracing::info_span!(
            "contract.guard.pass",
            dirty = dirty.len(),
            changed = tracing::field::Empty,
            paused = tracing::field::Empty,
        );
        let pass = self.pass(&dirty).instrument(span.clone()).await;
        if let Ok(summary) = &pass {
            span.record("changed", summary.changed.len());
            span.record("paused", summary.paused.len());
        }
        pass
    }

    async fn pass(&self, dirty: &BTreeSet<String>) -> Result<Revalidation> {
        let inner = &self.inner;
        let started = Instant::now();
        // Failed remediations are retried with a growing delay (re-checked as if dirty).
        let mut dirty = dirty.clone();
        dirty.extend(
            inner
                .retry
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .filter(|(_, (at, _))| *at <= started)
                .map(|(tenant, _)| tenant.clone()),
        );
        let dirty = &dirty;
        let mut observed = inner.observed.lock().await;
        // At start-up, audit rows an interrupted apply left pending (a killed process, a cut
        // connection) are settled against the live schema before anything is applied.
        let first_pass = inner
            .report
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none();
        if first_pass && inner.policy.applies() {
            for (pool, names) in inner.directory.groups() {
                DB::reconcile_audits(pool, names, &inner.contracts, &inner.options.audit).await;
            }
        }
        let mut summary = Revalidation::default();
        // Per pool, the changed tenants that drifted, with the snapshot they were found in:
        // remediation plans from it rather than introspecting them again.
        let mut drifted_groups: Vec<CheckedGroup<DB>> = Vec::new();
        // A known tenant whose live schema changed, whoever changed it (another replica,
        // an operator, a migration): pooled connections may hold statements prepared on the
        // old schema.
        let mut schema_changed = false;
        let introspect_started = Instant::now();
        for (pool, names) in inner.directory.groups() {
            let schemas: Vec<String> = names.iter().map(|t| t.as_str().to_owned()).collect();
            summary.introspected += schemas.len();
            let read = tokio::time::timeout(
                inner.check_timeout,
                snapshot(pool, &schemas, &inner.contracts),
            )
            .await
            .unwrap_or(Err(crate::error::Error::CheckTimeout {
                pool: DB::describe_pool(pool),
                after: inner.check_timeout,
            }));
            match read {
                Ok(snap) => {
                    let (mut drifted, mut reports) = (Vec::new(), Vec::new());
                    for tenant in names {
                        let fingerprint =
                            tenant_fingerprint(tenant.as_str(), &inner.contracts, &snap);
                        let known = observed.get(tenant.as_str()).map(|(fp, _)| fp.as_str());
                        // An empty fingerprint is unknown (unreachable, or just remediated
                        // by this guard, which bumped the epoch itself).
                        schema_changed |=
                            known.is_some_and(|k| !k.is_empty() && k != fingerprint.as_str());
                        if known != Some(fingerprint.as_str()) || dirty.contains(tenant.as_str()) {
                            let report = check_tenant(tenant.as_str(), &inner.contracts, &snap);
                            if report.verdict == Verdict::Drifted {
                                drifted.push(tenant.clone());
                                reports.push(report.clone());
                            }
                            observed.insert(tenant.to_string(), (fingerprint, report));
                            summary.changed.push(tenant.to_string());
                        }
                    }
                    if !drifted.is_empty() {
                        drifted_groups.push(CheckedGroup {
                            pool: pool.clone(),
                            names: drifted,
                            reports,
                            snapshot: Some(snap),
                        });
                    }
                }
                Err(error) => {
                    ::metrics::counter!(metrics::REVALIDATION_ERRORS_TOTAL).increment(1);
                    let error = error_chain(&error);
                    tracing::warn!(pool = %DB::describe_pool(pool), tenants = names.len(), %error, "revalidation could not read a pool; its tenants are paused as unreachable");
                    for tenant in names {
                        let report = TenantReport::unreachable(tenant.to_string(), error.clone());
                        observed.insert(tenant.to_string(), (String::new(), report));
                        summary.changed.push(tenant.to_string());
                    }
                }
            }
        }
        // Before any gate reopens below: connections opened before now are recycled.
        if schema_changed {
            let epoch = inner.epoch.bump();
            tracing::info!(
                epoch,
                "live schema changed since the last pass; schema epoch bumped"
            );
        }
        // Remediate (or plan) the changed tenants that drifted, per policy.
        let mut plan_hashes: BTreeMap<String, String> = BTreeMap::new();
        let mut failures: BTreeMap<String, String> = BTreeMap::new();
        let introspect_ms = crate::remediation::elapsed_ms(introspect_started);
        let drifted: Vec<TenantName> = drifted_groups
            .iter()
            .flat_map(|g| g.names.iter().cloned())
            .collect();
        if inner.policy.plans() && !drifted.is_empty() {
            // Close the drifted tenants' gates before remediating (DESIGN D8: drift found,
            // no new claims): applying may wait for locks or for another replica, and
            // meanwhile consumers would claim batches that fail on the drifted schema. In
            // memory only: `apply_pauses` below lifts it, or replaces it with the stored pause.
            if inner.policy.applies() {
                for tenant in &drifted {
                    if let Some((fingerprint, report)) = observed.get(tenant.as_str()) {
                        let mut pause =
                            guard_pause(report, fingerprint, &inner.expected_fingerprint, None);
                        pause.reason = format!("remediating {}", pause.reason);
                        tracing::warn!(tenant = %tenant, reason = %pause.reason, "tenant paused by the guard");
                        self.update_cell(tenant.as_str(), |state| {
                            // Already paused by the guard: paused since then.
                            if let Some(previous) = &state.drift {
                                pause.since = previous.since;
                            }
                            state.drift = Some(Arc::new(pause));
                        });
                    }
                }
            }
            let mut sub = TenantDirectory::new();
            for group in &drifted_groups {
                sub = sub.add(group.pool.clone(), group.names.clone());
            }
            let checked = Checked {
                groups: drifted_groups,
                introspect_ms,
            };
            let run = match remediate_checked(
                &sub,
                checked,
                &inner.contracts,
                &inner.policy,
                &inner.options,
                Some(&inner.epoch),
            )
            .await
            {
                Ok(run) => run,
                Err(error) => {
                    // Keep them paused and diff them again next pass.
                    for tenant in &drifted {
                        if let Some(entry) = observed.get_mut(tenant.as_str()) {
                            entry.0.clear();
                        }
                    }
                    self.publish_gauges();
                    return Err(error);
                }
            };
            ::metrics::counter!(metrics::REMEDIATIONS_TOTAL).increment(run.audits.len() as u64);
            ::metrics::counter!(metrics::REMEDIATION_FAILURES_TOTAL)
                .increment(run.failed.len() as u64);
            self.schedule_retries(&run);
            failures = run
                .failed
                .iter()
                .map(|f| (f.tenant.clone(), f.error.clone()))
                .collect();
            summary.remediated = run.audits.iter().map(|a| a.tenant.clone()).collect();
            for report in &run.after.tenants {
                if let Some(entry) = observed.get_mut(&report.tenant) {
                    entry.1 = report.clone();
                }
            }
            if !run.audits.is_empty() {
                // The schema changed under us: next pass must see the new fingerprints.
                for audit in &run.audits {
                    if let Some(entry) = observed.get_mut(&audit.tenant) {
                        entry.0.clear();
                    }
                }
            }
            plan_hashes = run
                .awaiting_approval
                .iter()
                .map(|(t, p)| (t.clone(), p.hash.clone()))
                .collect();
            *inner.log.write().unwrap_or_else(PoisonError::into_inner) = Some(run.log);
        }
        // On error the gates are still set (in memory); finish the pass, then report it.
        let persisted = self
            .apply_pauses(&observed, &summary.changed, &plan_hashes, &failures)
            .await;
        inner
            .retry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|tenant, _| {
                observed
                    .get(tenant)
                    .is_some_and(|(_, r)| r.verdict != Verdict::Compliant)
            });
        summary.paused = observed
            .iter()
            .filter(|(_, (_, r))| r.verdict != Verdict::Compliant)
            .map(|(t, _)| t.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut tenants: Vec<TenantReport> = observed.values().map(|(_, r)| r.clone()).collect();
        // Like `check_fleet` and `remediate`: rejected tenant names are reported too.
        tenants.extend(crate::check::rejected_reports(&inner.directory));
        tenants.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        let report = FleetReport::new(DB::DIALECT, inner.contracts.describe(), tenants);
        #[allow(clippy::cast_precision_loss)]
        ::metrics::gauge!(metrics::DRIFT_FINDINGS).set(
            report
                .findings()
                .filter(|f| f.severity >= Severity::AtRisk)
                .count() as f64,
        );
        *inner.report.write().unwrap_or_else(PoisonError::into_inner) = Some(report);
        ::metrics::histogram!(metrics::REVALIDATION_DURATION)
            .record(started.elapsed().as_secs_f64());
        self.publish_gauges();
        persisted?;
        Ok(summary)
    }

    /// Sets or lifts guard pauses for changed tenants, persists them, reloads operator
    /// pauses. Every gate is set in memory before any write, so a failed write cannot
    /// leave a gate open; a pause that could not be written is written again next pass.
    /// After the first failed write the remaining ones are deferred too (the table is
    /// likely unreachable: no timeout per tenant), and that error is returned.
    async fn apply_pauses(
        &self,
        observed: &HashMap<String, (String, TenantReport)>,
        changed: &[String],
        plan_hashes: &BTreeMap<String, String>,
        failures: &BTreeMap<String, String>,
    ) -> Result<()> {
        let inner = &self.inner;
        let first_pass = inner
            .report
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none();
        let pending = if inner.pauses.is_some() {
            std::mem::take(
                &mut *inner
                    .unpersisted
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            )
        } else {
            BTreeSet::new()
        };
        // At start-up only guard pauses an earlier run stored need removing: one read
        // instead of a DELETE per compliant tenant (if the read fails, delete them all).
        let stored_guard: Option<BTreeSet<String>> = match &inner.pauses {
            Some(table) if first_pass => {
                DB::load_pauses(&inner.control, table)
                    .await
                    .ok()
                    .map(|stored| {
                        stored
                            .into_iter()
                            .filter(|p| p.paused_by == PausedBy::Guard)
                            .map(|p| p.tenant)
                            .collect()
                    })
            }
            _ => None,
        };
        let mut writes: Vec<(String, Option<Arc<PauseInfo>>)> = Vec::new();
        for tenant in changed {
            let Some((fingerprint, report)) = observed.get(tenant) else {
                continue;
            };
            let previous = self.cell_state(tenant).and_then(|s| s.drift);
            let drift = (report.verdict != Verdict::Compliant).then(|| {
                let mut pause = guard_pause(
                    report,
                    fingerprint,
                    &inner.expected_fingerprint,
                    plan_hashes.get(tenant),
                );
                if let Some(error) = failures.get(tenant) {
                    pause.reason.push_str(&format!(
                        "; remediation failed and will be retried: {error}"
                    ));
                }
                // Still paused by the guard: paused since then (the stored row agrees).
                if let Some(previous) = &previous {
                    pause.since = previous.since;
                }
                Arc::new(pause)
            });
            match (&previous, &drift) {
                (previous, Some(p)) if previous.as_ref().is_none_or(|q| q.reason != p.reason) => {
                    tracing::warn!(tenant = %tenant, reason = %p.reason, plan_hash = ?p.plan_hash, "tenant paused by the guard")
                }
                (Some(_), None) => {
                    tracing::info!(tenant = %tenant, "tenant complies again; guard pause lifted")
                }
                _ => {}
            }
            // A pause closes the gate at once; a lift opens it only once the stored pause
            // is gone (below), so a failed write never leaves a gate open.
            if drift.is_some() || inner.pauses.is_none() {
                self.update_cell(tenant, |state| state.drift.clone_from(&drift));
            }
            // A stale stored guard pause is removed at start-up, when lifted, or when an
            // earlier removal failed.
            let stale_at_start =
                first_pass && stored_guard.as_ref().is_none_or(|s| s.contains(tenant));
            if drift.is_some() || previous.is_some() || stale_at_start || pending.contains(tenant) {
                writes.push((tenant.clone(), drift));
            }
        }
        // Writes that failed in an earlier pass, for tenants unchanged since: a lift if the
        // tenant complies, otherwise the pause memory holds.
        for tenant in &pending {
            if !changed.contains(tenant) {
                let complies = observed
                    .get(tenant)
                    .is_some_and(|(_, r)| r.verdict == Verdict::Compliant);
                let drift = if complies {
                    None
                } else {
                    self.cell_state(tenant).and_then(|s| s.drift)
                };
                writes.push((tenant.clone(), drift));
            }
        }
        let Some(table) = &inner.pauses else {
            return Ok(());
        };
        let mut first_error = None;
        for (tenant, drift) in writes {
            if first_error.is_none() {
                let written = match &drift {
                    Some(pause) => DB::save_pause(&inner.control, table, pause).await,
                    None => {
                        DB::delete_pause(&inner.control, table, &tenant, None, &PausedBy::Guard)
                            .await
                    }
                };
                match written {
                    Ok(()) => {
                        if drift.is_none() {
                            self.update_cell(&tenant, |state| state.drift = None);
                        }
                        continue;
                    }
                    Err(error) => first_error = Some(error),
                }
            }
            inner
                .unpersisted
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(tenant);
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        // Under the operator lock: a pause or resume cannot land between the read and
        // the update of the cells (the reload would undo it).
        let _serial = inner.operator_lock.lock().await;
        let stored = DB::load_pauses(&inner.control, table).await?;
        let cells = inner.cells.read().unwrap_or_else(PoisonError::into_inner);
        for (tenant, (_, cell)) in cells.iter() {
            let operator: Vec<Arc<PauseInfo>> = stored
                .iter()
                .filter(|p| &p.tenant == tenant && matches!(p.paused_by, PausedBy::Operator(_)))
                .cloned()
                .map(Arc::new)
                .collect();
            cell.update(|state| {
                if state
                    .operator
                    .iter()
                    .map(|p| (&p.queue, &p.paused_by))
                    .ne(operator.iter().map(|p| (&p.queue, &p.paused_by)))
                {
                    state.operator = operator;
                }
            });
        }
        Ok(())
    }

    /// Failed tenants are retried after the revalidation interval, doubling per failure
    /// up to ten minutes, with jitter (retrying every pass would keep queueing exclusive
    /// locks); remediated tenants are forgotten.
    fn schedule_retries(&self, run: &RemediationRun) {
        let mut retry = self
            .inner
            .retry
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for audit in &run.audits {
            retry.remove(&audit.tenant);
        }
        let now = Instant::now();
        for failure in &run.failed {
            let failures = retry.get(&failure.tenant).map_or(0, |(_, n)| *n) + 1;
            let delay = Backoff {
                base: self.inner.interval,
                max: Duration::from_secs(600),
            }
            .delay(failures);
            tracing::warn!(tenant = %failure.tenant, error = %failure.error, failures, retry_in_ms = crate::remediation::elapsed_ms_of(delay), "remediation failed; retried later");
            retry.insert(failure.tenant.clone(), (now + delay, failures));
        }
    }
}

fn guard_pause(
    report: &TenantReport,
    observed: &str,
    expected: &str,
    plan_hash: Option<&String>,
) -> PauseInfo {
    let findings: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.severity >= Severity::AtRisk)
        .cloned()
        .collect();
    let mut reason = match &report.verdict {
        Verdict::Unreachable { error } => format!("unreachable: {error}"),
        _ => format!(
            "drift: {}",
            findings
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ),
    };
    if let Some(hash) = plan_hash {
        reason.push_str(&format!(
            "; plan {} awaits approval",
            contract_core::plan::short_hash(hash)
        ));
    }
    PauseInfo {
        tenant: report.tenant.clone(),
        queue: None,
        paused_by: PausedBy::Guard,
        reason,
        findings,
        plan_hash: plan_hash.cloned(),
        expected_fingerprint: Some(expected.to_owned()),
        observed_fingerprint: (!observed.is_empty()).then(|| observed.to_owned()),
        since: SystemTime::now(),
    }
}

/// A digest of a tenant's contracted live tables (absent tables included).
fn tenant_fingerprint<DB: crate::backend::Backend>(
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
