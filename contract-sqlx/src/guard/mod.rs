//! The guard at run time: a start-up check of the whole fleet, a batch gate answered from
//! memory, passes that re-check what changed, pauses that survive restarts, remediation by
//! policy and by approvals recorded in the control plane (see `ARCHITECTURE.md` D7–D10,
//! D13).
//!
//! * [`Guard::builder`] / [`GuardBuilder::start`] (`builder.rs`): contracts, tenants,
//!   policy; the first pass.
//! * [`Guard::gate`] (`gate.rs`): the batch gate, from memory.
//! * [`Guard::revalidate`] / [`Guard::spawn`] (`pass.rs`): one pass lists the tenants again
//!   (`discovery.rs`), checks the changed ones, decides per tenant what may run
//!   (`decide.rs`: policy, approvals, contract versions still running in `versions.rs`),
//!   applies, and writes pauses and tenant status to the control plane (`persist.rs`).
//! * [`Guard::pause`], [`Guard::approve`], … (`operator.rs`): what an operator changes.

mod backlog;
mod builder;
mod decide;
mod discovery;
mod gate;
#[cfg(feature = "postgres")]
mod listen;
pub mod metrics;
mod observe;
#[cfg(all(test, feature = "sqlite"))]
mod observe_tests;
mod operator;
mod pass;
mod persist;
mod prompt;
mod signals;
#[cfg(all(test, feature = "sqlite"))]
mod tests;
mod versions;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use contract_core::plan::Remediation;
use contract_core::{ExecutionLog, FleetReport, TenantReport};
use sqlx::Pool;

pub use backlog::{BacklogCleared, BacklogSource, FULL_SWEEP};
pub use builder::GuardBuilder;
pub use gate::{Gate, PauseInfo, PausedBy, Permit};
#[cfg(feature = "postgres")]
pub(crate) use listen::schema_versions as pg_schema_versions;
#[cfg(feature = "postgres")]
pub use listen::{DDL_CHANNEL, UNPINNED_CHANGE, install_ddl_trigger};
pub use operator::{OperatorPause, OperatorResume};
pub use signals::ChangeSignal;

use gate::{TenantCell, TenantState};

use crate::check::ContractSet;
use crate::control::{ControlPlane, ControlStore, Replica};
use crate::error::error_chain;
use crate::remediation::{ApplyOptions, Planned, SchemaEpoch};
use crate::tenants::TenantDirectory;

/// Tenant name → (shared name for permits, gate state).
type Cells = HashMap<String, (Arc<str>, Arc<TenantCell>)>;

/// The runtime guard. Cheap to clone; clones share state.
#[derive(Debug)]
pub struct Guard<DB: ControlStore> {
    inner: Arc<Inner<DB>>,
}

impl<DB: ControlStore> Clone for Guard<DB> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

#[derive(Debug)]
struct Inner<DB: ControlStore> {
    contracts: ContractSet<DB>,
    /// The tenant directory as of the last pass (listed again every pass).
    directory: RwLock<Arc<TenantDirectory<DB>>>,
    /// Where the control plane lives (and discovery ran at start).
    control: Pool<DB>,
    /// `None`: pauses and status in memory only.
    plane: Option<ControlPlane>,
    policy: RwLock<Remediation>,
    options: ApplyOptions,
    interval: Duration,
    /// Every this many sweeps, one is a full check.
    full_check_every: u32,
    /// How long a pass waits for one pool's live schema (then: unreachable).
    check_timeout: Duration,
    epoch: SchemaEpoch,
    /// This guard's registration: its id and contract version (a digest of its contracts).
    replica: Replica,
    cells: RwLock<Cells>,
    /// What the passes know; also serialises passes.
    state: tokio::sync::Mutex<PassState>,
    report: RwLock<Option<FleetReport>>,
    /// What the last pass did (the background task's passes included).
    last_pass: RwLock<Option<Revalidation>>,
    log: RwLock<Option<ExecutionLog>>,
    /// Appends each pass's execution log as one JSON line, if set.
    log_file: Option<PathBuf>,
    /// Counts each tenant's waiting messages, if set.
    backlog: Option<Arc<dyn BacklogSource<DB>>>,
    dirty: std::sync::Mutex<Dirty>,
    /// Wakes the background task's passes; its own `Arc`, so the waiting task does not
    /// keep the guard alive.
    wake: Arc<tokio::sync::Notify>,
    /// Wakes the prompt check (`prompt.rs`) when a tenant is marked dirty; its own `Arc`, so
    /// the waiting check does not keep the guard alive.
    dirty_wake: Arc<tokio::sync::Notify>,
    gate_metrics: GateMetrics,
    /// Serialises operator pause/resume with a pass's reload of the operator pauses, so
    /// the reload never undoes a pause or resume made meanwhile. Taken after `state`,
    /// never before it.
    operator_lock: tokio::sync::Mutex<()>,
    /// Tenants whose guard pause could not be saved or removed: written again next pass.
    unpersisted: std::sync::Mutex<BTreeSet<String>>,
    /// Set by [`Guard::deregister`]; a pass then writes no heartbeat. A lock, not a flag:
    /// a pass checks it and writes its heartbeat holding it, so a pass already running
    /// when the guard deregisters cannot register it again.
    deregistered: tokio::sync::Mutex<bool>,
    /// When the sweep a pass deferred for DDL outside the tenants is due (the rate limit
    /// in `pass.rs`): the background task wakes for it then.
    deferred_sweep: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl<DB: ControlStore> Drop for Inner<DB> {
    /// Wakes the background task, which then finds the guard gone and ends at once,
    /// without one more pass.
    fn drop(&mut self) {
        // Every task `spawn` started (`notify_waiters`), and one not waiting yet (`notify_one`
        // keeps a permit for it).
        for wake in [&self.wake, &self.dirty_wake] {
            wake.notify_waiters();
            wake.notify_one();
        }
    }
}

/// What the next pass must look at beyond the periodic check.
#[derive(Debug, Default)]
struct Dirty {
    /// Tenants to re-check even if their fingerprint did not change.
    tenants: BTreeSet<String>,
    /// The next pass must be a sweep (the DDL listener reconnected: changes made meanwhile
    /// were never notified).
    sweep: bool,
    /// How many passes have taken the set so far: a tenant in it is checked by a pass with
    /// a higher count (what lifts a pause the prompt check set, `prompt.rs`).
    taken: u64,
}

impl Dirty {
    /// The set for a pass, which then counts as taken once more.
    fn take_for_pass(&mut self) -> Dirty {
        self.taken += 1;
        Dirty {
            tenants: std::mem::take(&mut self.tenants),
            sweep: std::mem::take(&mut self.sweep),
            taken: self.taken,
        }
    }
}

/// What the guard knows between passes.
#[derive(Debug, Default)]
struct PassState {
    observed: HashMap<String, Observed>,
    /// Tenants whose remediation failed: when to try again, and how many failures so far.
    retry: HashMap<String, (Instant, u32)>,
    /// Tenants with a plan stopped between its transactions that the first pass left for
    /// the next one to resume (`pass.rs`); nothing is applied to them meanwhile.
    resume: BTreeSet<String>,
    /// Tenants whose observation changed (`observe.rs`, a re-check) since a pass last
    /// settled gates and status: a pass whose future is dropped before it does leaves them
    /// to the next, which would otherwise find their fingerprints current and leave their
    /// gates as they were.
    unsettled: BTreeSet<String>,
    /// Tenants no longer listed, and since when (their gate says why until pruned).
    retired: HashMap<String, SystemTime>,
    /// A digest of each tenant's status as last written to the control plane.
    persisted: HashMap<String, String>,
    /// Backlog depths and the resumed tenants being followed.
    backlog: backlog::BacklogState,
    /// Each tenant's catalog signature as of its last introspection.
    signatures: crate::backend::Signatures,
    /// The contracts' fixed schemas' signatures, per pool.
    fixed_signatures: crate::backend::Signatures,
    /// Each tenant's schema version (the DDL trigger's) as of its last introspection, or
    /// of a sweep that found its catalog signature unchanged.
    versions: HashMap<String, String>,
    /// Per pool, what those versions were recorded under: the trigger's token and the
    /// versions of every schema that is not a tenant (`signals.rs`).
    version_bases: HashMap<String, String>,
    /// Per pool, the catalog mark of the last signature read, the signatures read with it
    /// and when to read it again (`signals.rs`).
    catalog_marks: HashMap<String, signals::PoolMark>,
    /// Sweeps since the last full check.
    sweeps: u32,
    /// The running pass's count of taken dirty sets (`Dirty::taken`): what its
    /// observations are stamped with.
    taken: u64,
    /// When the last sweep for DDL outside the tenants started and how long it took.
    last_elsewhere: Option<(tokio::time::Instant, Duration)>,
}

/// One tenant as last checked.
#[derive(Debug, Clone)]
struct Observed {
    /// The digest of its contracted live tables (empty: unknown, check again).
    fingerprint: String,
    report: TenantReport,
    /// Its pending plan while it is drifted, with what it was planned on.
    planned: Option<Planned>,
    /// Why the plan does not run yet, if it does not.
    waiting: Option<String>,
    /// The pass (its `Dirty::taken`) that last introspected the tenant: a pause of the
    /// prompt check stamped lower looked at an older schema (`prompt.rs`).
    checked_in: u64,
}

/// Metric handles registered once at start (the gate is on every batch's path): install
/// the `metrics` recorder before starting the guard.
#[derive(Debug)]
struct GateMetrics {
    open: crate::telemetry::Counter,
    paused: crate::telemetry::Counter,
}

impl GateMetrics {
    fn register() -> Self {
        use crate::telemetry::Counter;
        Self {
            open: Counter::labelled(metrics::GATE_TOTAL, "outcome", "open"),
            paused: Counter::labelled(metrics::GATE_TOTAL, "outcome", "paused"),
        }
    }
}

/// What one revalidation pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Revalidation {
    /// The change signal that chose the tenants introspected.
    pub signal: ChangeSignal,
    /// Tenants introspected.
    pub introspected: usize,
    /// Tenants whose live schema changed since the last pass (diffed again).
    pub changed: Vec<String>,
    /// Tenants paused by the guard after this pass.
    pub paused: Vec<String>,
    /// Tenants remediated in this pass.
    pub remediated: Vec<String>,
    /// Tenants the tenant sources listed for the first time.
    pub discovered: Vec<String>,
    /// Tenants the tenant sources no longer list (their gates are closed).
    pub retired: Vec<String>,
}

impl<DB: ControlStore> Guard<DB> {
    /// The batch gate: open with a permit, or paused with the reason. Answered from
    /// memory (no I/O). The tenant's gate: an operator pause of one of its queues alone
    /// (`contract pause <tenant> --queue <name>`) does not close it; a consumer of a named
    /// queue asks [`Guard::gate_queue`], which a pause of the tenant closes too.
    #[must_use]
    pub fn gate(&self, tenant: &str) -> Gate {
        self.gate_queue_opt(tenant, None)
    }

    /// The gate for one named queue of a tenant (operator pauses may target one queue).
    #[must_use]
    pub fn gate_queue(&self, tenant: &str, queue: &str) -> Gate {
        self.gate_queue_opt(tenant, Some(queue))
    }

    fn gate_queue_opt(&self, tenant: &str, queue: Option<&str>) -> Gate {
        let gate = {
            let cells = self
                .inner
                .cells
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            match cells.get(tenant) {
                None => Gate::Paused(Arc::new(unknown_tenant(tenant))),
                Some((name, cell)) => {
                    let generation = cell.generation();
                    match cell.pause_for(queue) {
                        Some(pause) => Gate::Paused(pause),
                        None => Gate::Open(Permit {
                            tenant: Arc::clone(name),
                            generation,
                            entry: Arc::clone(cell),
                        }),
                    }
                }
            }
        };
        let handles = &self.inner.gate_metrics;
        if gate.is_open() {
            &handles.open
        } else {
            &handles.paused
        }
        .increment(1);
        gate
    }

    /// The latest fleet report.
    #[must_use]
    pub fn report(&self) -> FleetReport {
        self.inner
            .report
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| FleetReport::new(DB::DIALECT, Vec::new(), Vec::new()))
    }

    /// What the last completed pass did: which change signal chose its tenants, how many it
    /// introspected, what changed (the background task's passes included).
    #[must_use]
    pub fn last_pass(&self) -> Option<Revalidation> {
        self.inner
            .last_pass
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The execution log of the last pass that planned or applied a remediation.
    #[must_use]
    pub fn execution_log(&self) -> Option<ExecutionLog> {
        self.inner
            .log
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The schema epoch, bumped after each remediation and whenever a pass sees a known
    /// tenant's schema changed.
    #[must_use]
    pub fn epoch(&self) -> &SchemaEpoch {
        &self.inner.epoch
    }

    /// This guard's registration in the control plane: its replica id and contract
    /// version.
    #[must_use]
    pub fn replica(&self) -> &Replica {
        &self.inner.replica
    }

    /// How the backlogs of recently resumed tenants drained (the last 256), oldest first.
    pub async fn backlog_cleared(&self) -> Vec<BacklogCleared> {
        self.inner
            .state
            .lock()
            .await
            .backlog
            .cleared
            .iter()
            .cloned()
            .collect()
    }

    /// The remediation policy in force.
    #[must_use]
    pub fn policy(&self) -> Remediation {
        self.inner
            .policy
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The tenants the guard knows (retired ones until they are pruned).
    #[must_use]
    pub fn tenants(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .inner
            .cells
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// Every current pause, sorted by tenant: the guard's, the operators', and those held in
    /// memory only (a newly listed tenant not checked yet, a tenant the prompt check closed
    /// while a pass was busy).
    #[must_use]
    pub fn pauses(&self) -> Vec<Arc<PauseInfo>> {
        let cells = self
            .inner
            .cells
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<Arc<PauseInfo>> = cells
            .values()
            .flat_map(|(_, cell)| {
                let state = cell.snapshot();
                // One guard pause per tenant: drift (which outlasts the others), else the
                // wait for its first check or its operator pauses, else the prompt check's.
                let guard_pause = match (state.drift, state.checking) {
                    // The one listed says what else holds the gate, which outlasts it.
                    (Some(drift), Some(checking)) => {
                        let mut both = (*drift).clone();
                        both.reason = format!("{}; then {}", drift.reason, checking.reason);
                        Some(Arc::new(both))
                    }
                    (drift, checking) => {
                        drift.or(checking).or(state.prompt.map(|(pause, _)| pause))
                    }
                };
                guard_pause.into_iter().chain(state.operator)
            })
            .collect();
        all.sort_by(|a, b| (&a.tenant, &a.queue).cmp(&(&b.tenant, &b.queue)));
        all
    }

    /// Marks a tenant (or a schema the DDL listener heard of) for a prompt re-check and
    /// wakes the background task; an unknown name makes the next pass list the tenants.
    pub fn mark_dirty(&self, tenant: &str) {
        self.inner
            .dirty
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .tenants
            .insert(tenant.to_owned());
        self.inner.wake.notify_one();
        self.inner.dirty_wake.notify_one();
    }

    /// Changes one tenant's gate state atomically (one write lock). Callers publish the
    /// pause gauge once they are done (`publish_gauges` scans every tenant).
    fn update_cell(&self, tenant: &str, change: impl FnOnce(&mut TenantState)) {
        let cells = self
            .inner
            .cells
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, cell)) = cells.get(tenant) {
            cell.update(change);
        }
    }

    fn publish_gauges(&self) {
        let cells = self
            .inner
            .cells
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let paused = cells.values().filter(|(_, c)| !c.open()).count();
        crate::telemetry::gauge(metrics::PAUSED_TENANTS, paused as u64);
        crate::telemetry::gauge(metrics::TENANTS, cells.len() as u64);
    }

    fn cell_state(&self, tenant: &str) -> Option<TenantState> {
        self.inner
            .cells
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .map(|(_, c)| c.snapshot())
    }

    /// Runs passes in the background: a sweep every interval, and promptly when a tenant is
    /// marked dirty (a pass over just the marked tenants) or an approval is made. While a
    /// pass is busy (an online change's backfill, say), a tenant marked dirty is checked at
    /// once all the same and its gate closed if it drifted (`prompt.rs`). The task ends, with
    /// no further pass, when every clone of the guard is dropped.
    #[must_use]
    pub fn spawn(&self) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        let interval = self.inner.interval;
        let wake = Arc::clone(&self.inner.dirty_wake);
        let passes_wake = Arc::clone(&self.inner.wake);
        let passes = {
            let weak = weak.clone();
            async move {
                // Wake-ups do not postpone the periodic sweep.
                let mut next_sweep = tokio::time::Instant::now() + interval;
                loop {
                    let deferred = match weak.upgrade() {
                        Some(inner) => *inner
                            .deferred_sweep
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner),
                        None => return,
                    };
                    // Waits holding only the wake-up: a guard dropped meanwhile runs no
                    // further pass (and writes no heartbeat after `deregister`).
                    let (swept, for_deferred) = tokio::select! {
                        () = tokio::time::sleep_until(next_sweep) => (true, false),
                        () = passes_wake.notified() => (false, false),
                        // The deferred sweep: the woken pass finds the names it is for
                        // still marked, and the rate limit now lets it sweep.
                        () = tokio::time::sleep_until(deferred.unwrap_or(next_sweep)),
                            if deferred.is_some() => (false, true),
                    };
                    let Some(inner) = weak.upgrade() else { return };
                    // A pass since (a sweep, say) may have done what it was for.
                    let still_owed = || {
                        inner
                            .deferred_sweep
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .is_some_and(|due| due <= tokio::time::Instant::now())
                    };
                    if for_deferred && !still_owed() {
                        continue;
                    }
                    let guard = Guard { inner };
                    let pass = if swept {
                        next_sweep = tokio::time::Instant::now() + interval;
                        guard.revalidate().await
                    } else {
                        guard.revalidate_woken().await
                    };
                    if let Err(error) = pass {
                        crate::telemetry::count(metrics::REVALIDATION_ERRORS_TOTAL, 1);
                        tracing::error!(error = %error_chain(&error), "revalidation failed; retrying next interval");
                    }
                }
            }
        };
        tokio::spawn(async move {
            tokio::select! {
                () = passes => {}
                () = prompt::while_busy(weak, wake, interval) => {}
            }
        })
    }

    /// Stops registering this guard's contract version: other replicas stop waiting for it
    /// at once instead of after its heartbeat expires. Call it when shutting down: no pass
    /// of this guard writes a heartbeat afterwards, a pass already running included, so
    /// the registration stays removed while the guard (or a task it spawned) winds down.
    /// It is final, also when it fails: the guard writes no heartbeat again (a failed
    /// delete leaves the registration to expire), so deregister only a guard that stops.
    ///
    /// # Errors
    ///
    /// When the control plane cannot be written (the registration then expires by itself).
    pub async fn deregister(&self) -> crate::Result<()> {
        let Some(plane) = &self.inner.plane else {
            return Ok(());
        };
        // Held while deleting: a pass's heartbeat waits for it, then sees the flag.
        let mut deregistered = self.inner.deregistered.lock().await;
        *deregistered = true;
        DB::deregister(&self.inner.control, plane, &self.inner.replica.replica_id).await
    }
}

fn unknown_tenant(tenant: &str) -> PauseInfo {
    configuration_pause(
        &tenant.escape_debug().to_string(),
        "unknown tenant: no tenant source of the guard lists it (yet); a tenant created since \
         is picked up by the next pass"
            .into(),
    )
}

/// A guard pause that no schema change lifts: the tenant's configuration is wrong, or it
/// is no longer listed.
fn configuration_pause(tenant: &str, reason: String) -> PauseInfo {
    PauseInfo {
        tenant: tenant.to_owned(),
        queue: None,
        paused_by: PausedBy::Guard,
        reason,
        findings: Vec::new(),
        plan_hash: None,
        expected_fingerprint: None,
        observed_fingerprint: None,
        since: SystemTime::now(),
    }
}
