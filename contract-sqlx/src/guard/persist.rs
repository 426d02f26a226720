//! What a pass writes to the control plane: guard pauses (set or lifted), each tenant's
//! status when it changed, this replica's heartbeat; and what it reads back: operator
//! pauses. Every gate is set in memory before any write that closes it, and a lift opens
//! the gate only once the stored pause is gone, so a failed write never leaves a gate open;
//! a write that failed is made again next pass.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, PoisonError};
use std::time::SystemTime;

use contract_core::{Severity, TenantReport, Verdict};

use super::{Guard, Observed, PassState, PauseInfo, PausedBy};
use crate::control::{ControlStore, TenantStatus};
use crate::error::Result;
use crate::tenants::TenantDirectory;

impl<DB: ControlStore> Guard<DB> {
    /// Sets or lifts the guard pauses of `touched` tenants from what the pass observed,
    /// persists them, reloads operator pauses.
    pub(super) async fn apply_pauses(
        &self,
        state: &PassState,
        touched: &BTreeSet<String>,
        first_pass: bool,
    ) -> Result<()> {
        let inner = &self.inner;
        let pending = if inner.plane.is_some() {
            std::mem::take(
                &mut *inner
                    .unpersisted
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            )
        } else {
            BTreeSet::new()
        };
        // Operator pauses first (the CLI or another replica may have changed them): a newly
        // listed tenant's gate opens below only with the pauses an operator stored for it in
        // place. When they cannot be read, new tenants stay closed.
        let stored = self.reload_operator_pauses().await;
        let may_open_new = stored.is_ok();
        // At start-up only guard pauses an earlier run stored need removing: one read
        // instead of a DELETE per compliant tenant (if the read fails, delete them all).
        let stored_guard: Option<BTreeSet<String>> = match (&stored, first_pass) {
            (Ok(stored), true) => Some(
                stored
                    .iter()
                    .filter(|p| p.paused_by == PausedBy::Guard)
                    .map(|p| p.tenant.clone())
                    .collect(),
            ),
            _ => None,
        };
        let mut writes: Vec<(String, Option<Arc<PauseInfo>>)> = Vec::new();
        for tenant in touched {
            let Some(observed) = state.observed.get(tenant) else {
                continue;
            };
            let previous = self.cell_state(tenant).and_then(|s| s.drift);
            let drift = (observed.report.verdict != Verdict::Compliant).then(|| {
                let mut pause = guard_pause(observed, &inner.replica.version);
                // Still paused by the guard: paused since then (the stored row agrees).
                if let Some(previous) = &previous {
                    pause.since = previous.since;
                }
                Arc::new(pause)
            });
            match (&previous, &drift) {
                (previous, Some(p)) if previous.as_ref().is_none_or(|q| q.reason != p.reason) => {
                    tracing::warn!(tenant = %tenant, reason = %p.reason, "tenant paused by the guard");
                }
                (Some(_), None) => {
                    tracing::info!(tenant = %tenant, "tenant complies again; guard pause lifted");
                }
                _ => {}
            }
            // A stale stored guard pause is removed at start-up, when lifted, or when an
            // earlier removal failed.
            let stale_at_start =
                first_pass && stored_guard.as_ref().is_none_or(|s| s.contains(tenant));
            let write =
                drift.is_some() || previous.is_some() || stale_at_start || pending.contains(tenant);
            // A pause closes the gate at once; a lift opens it only once the stored pause
            // is gone (below), so a failed write never leaves a gate open.
            if drift.is_some() || inner.plane.is_none() || !write {
                self.update_cell(tenant, |s| {
                    s.drift.clone_from(&drift);
                    checked(s, may_open_new);
                });
            }
            if write {
                writes.push((tenant.clone(), drift));
            }
        }
        self.settle_memory_pauses(state, touched, &pending, may_open_new);
        // Writes that failed in an earlier pass, for tenants not touched since: a lift if
        // the tenant complies, otherwise the pause memory holds.
        for tenant in &pending {
            if !touched.contains(tenant) {
                let complies = state
                    .observed
                    .get(tenant)
                    .is_some_and(|o| o.report.verdict == Verdict::Compliant);
                let drift = if complies {
                    None
                } else {
                    self.cell_state(tenant).and_then(|s| s.drift)
                };
                writes.push((tenant.clone(), drift));
            }
        }
        let Some(plane) = &inner.plane else {
            return Ok(());
        };
        let mut first_error = None;
        for (tenant, drift) in writes {
            if first_error.is_none() {
                let written = match &drift {
                    Some(pause) => DB::save_pause(&inner.control, plane, pause).await,
                    None => {
                        DB::delete_pause(&inner.control, plane, &tenant, None, &PausedBy::Guard)
                            .await
                    }
                };
                match written {
                    Ok(()) => {
                        if drift.is_none() {
                            self.update_cell(&tenant, |s| {
                                s.drift = None;
                                checked(s, may_open_new);
                            });
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
        stored.map(drop)
    }

    /// The pauses kept in memory only, for tenants whose guard pause says what holds now:
    /// a newly listed tenant's `checking`, once it has been checked in an earlier pass and
    /// the operator pauses are read (its first pass may have failed to read them), and a
    /// prompt check's pause, once a later pass has introspected the tenant (its verdict
    /// then sets or keeps the guard pause; a lift still waits for its write).
    fn settle_memory_pauses(
        &self,
        state: &PassState,
        touched: &BTreeSet<String>,
        unwritten: &BTreeSet<String>,
        may_open_new: bool,
    ) {
        let cells = self
            .inner
            .cells
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        for (tenant, (_, cell)) in cells.iter() {
            let (checking, prompt) =
                cell.read(|s| (s.checking.is_some(), s.prompt.as_ref().map(|(_, t)| *t)));
            if !checking && prompt.is_none() {
                continue;
            }
            let observed = state.observed.get(tenant.as_str());
            // A tenant whose stored guard pause is still to be removed opens with that write.
            let clear_checking = checking
                && may_open_new
                && observed.is_some()
                && !touched.contains(tenant)
                && !unwritten.contains(tenant);
            let clear_prompt = prompt
                .zip(observed)
                .is_some_and(|(stamp, o)| o.checked_in > stamp);
            if clear_checking || clear_prompt {
                cell.update(|s| {
                    if clear_checking {
                        s.checking = None;
                    }
                    if clear_prompt && s.prompt.as_ref().map(|(_, t)| *t) == prompt {
                        s.prompt = None;
                    }
                });
            }
        }
    }

    /// Operator pauses from the table (the CLI or another replica may have changed them);
    /// every stored pause, as read.
    async fn reload_operator_pauses(&self) -> Result<Vec<PauseInfo>> {
        let inner = &self.inner;
        let Some(plane) = &inner.plane else {
            return Ok(Vec::new());
        };
        // Under the operator lock: a pause or resume cannot land between the read and the
        // update of the cells (the reload would undo it).
        let _serial = inner.operator_lock.lock().await;
        let stored = DB::load_pauses(&inner.control, plane).await?;
        let mut by_tenant: HashMap<&str, Vec<Arc<PauseInfo>>> = HashMap::new();
        for pause in &stored {
            if matches!(pause.paused_by, PausedBy::Operator(_)) {
                by_tenant
                    .entry(pause.tenant.as_str())
                    .or_default()
                    .push(Arc::new(pause.clone()));
            }
        }
        let cells = inner.cells.read().unwrap_or_else(PoisonError::into_inner);
        for (tenant, (_, cell)) in cells.iter() {
            let operator = by_tenant.remove(tenant.as_str()).unwrap_or_default();
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
        Ok(stored)
    }

    /// Writes the status of the `touched` tenants whose status changed since it was written,
    /// marks retired ones, removes pruned ones, and refreshes this replica's heartbeat (unless
    /// the guard deregistered).
    pub(super) async fn persist_status(
        &self,
        state: &mut PassState,
        directory: &TenantDirectory<DB>,
        touched: &BTreeSet<String>,
        retired: &[String],
        pruned: &[String],
    ) -> Result<()> {
        let inner = &self.inner;
        let Some(plane) = &inner.plane else {
            return Ok(());
        };
        let now = SystemTime::now();
        let mut statuses = Vec::new();
        let mut digests = Vec::new();
        for (tenant, observed) in touched
            .iter()
            .filter_map(|t| state.observed.get(t).map(|o| (t, o)))
        {
            let mut status = status_of(
                observed,
                directory.location_of(tenant).unwrap_or_default(),
                &inner.replica.replica_id,
                now,
            );
            status.backlog = state
                .backlog
                .depths
                .get(tenant)
                .map(|d| i64::try_from(*d).unwrap_or(i64::MAX));
            let digest = status_digest(&status);
            if state.persisted.get(tenant) != Some(&digest) {
                digests.push((tenant.clone(), digest));
                statuses.push(status);
            }
        }
        for tenant in retired {
            statuses.push(TenantStatus {
                tenant: tenant.clone(),
                verdict: "retired".into(),
                detail: Some("no tenant source of the guard lists it any more".into()),
                findings: Vec::new(),
                plan: None,
                waiting: None,
                location: String::new(),
                backlog: None,
                checked_at: now,
                changed_at: now,
                replica: inner.replica.replica_id.clone(),
            });
            state.persisted.remove(tenant);
        }
        DB::save_tenants(&inner.control, plane, &statuses).await?;
        for (tenant, digest) in digests {
            state.persisted.insert(tenant, digest);
        }
        if !pruned.is_empty() {
            DB::delete_tenants(&inner.control, plane, pruned).await?;
        }
        // Checked and written under the lock `deregister` holds (see `Inner::deregistered`).
        let deregistered = inner.deregistered.lock().await;
        if *deregistered {
            return Ok(());
        }
        DB::heartbeat(&inner.control, plane, &inner.replica).await
    }
}

/// The stored status of one observed tenant.
fn status_of(
    observed: &Observed,
    location: String,
    replica: &str,
    now: SystemTime,
) -> TenantStatus {
    let report = &observed.report;
    TenantStatus {
        tenant: report.tenant.clone(),
        verdict: report.verdict.as_str().to_owned(),
        detail: match &report.verdict {
            Verdict::Unreachable { error } => Some(error.clone()),
            _ => None,
        },
        findings: report
            .findings
            .iter()
            .filter(|f| f.severity >= Severity::AtRisk)
            .cloned()
            .collect(),
        plan: observed
            .planned
            .as_ref()
            .map(|p| p.plan.clone())
            .filter(|p| !p.is_empty()),
        waiting: observed.waiting.clone(),
        location,
        backlog: None,
        checked_at: now,
        changed_at: now,
        replica: replica.to_owned(),
    }
}

/// What makes a status worth writing again (not the check time).
fn status_digest(status: &TenantStatus) -> String {
    let mut digest = contract_core::FieldDigest::new();
    digest
        .field(&status.verdict)
        .optional(status.detail.as_ref())
        .field(serde_json::to_string(&status.findings).unwrap_or_default())
        .optional(status.plan.as_ref().map(|p| p.hash.as_str()))
        .optional(status.waiting.as_ref())
        .optional(status.backlog.map(|b| b.to_le_bytes()))
        .field(&status.location);
    digest.finish_hex()
}

/// A newly listed tenant has been checked: its gate no longer waits for that, unless the
/// operator pauses stored for it could not be read in this pass.
fn checked(state: &mut super::gate::TenantState, operator_pauses_read: bool) {
    if operator_pauses_read {
        state.checking = None;
    } else if let Some(checking) = &state.checking {
        let mut pause = PauseInfo::clone(checking);
        pause.reason = "checking: a new tenant, closed until the operator pauses stored for it \
                        can be read"
            .into();
        state.checking = Some(Arc::new(pause));
    }
}

/// The guard pause of a tenant that is not compliant: why, and what waits.
pub(super) fn guard_pause(observed: &Observed, expected: &str) -> PauseInfo {
    let report: &TenantReport = &observed.report;
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
    if let Some(waiting) = &observed.waiting {
        reason.push_str("; ");
        reason.push_str(waiting);
    }
    let plan_hash = observed
        .planned
        .as_ref()
        .filter(|p| p.plan.needs_approval())
        .map(|p| p.plan.hash.clone());
    PauseInfo {
        tenant: report.tenant.clone(),
        queue: None,
        paused_by: PausedBy::Guard,
        reason,
        findings,
        plan_hash,
        expected_fingerprint: Some(expected.to_owned()),
        observed_fingerprint: (!observed.fingerprint.is_empty())
            .then(|| observed.fingerprint.clone()),
        since: SystemTime::now(),
    }
}
