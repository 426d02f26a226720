//! The guard at run time: a start-up check of the whole fleet, a batch gate answered from
//! memory, revalidation that re-checks only changed tenants, pauses that survive restarts,
//! and remediation by policy (see `ARCHITECTURE.md`, "The guard").
//!
//! * [`builder`](Guard::builder) / [`GuardBuilder::start`]: contracts, tenants, policy.
//! * [`Guard::gate`]: the batch gate, from memory.
//! * [`Guard::revalidate`] / [`Guard::spawn`]: passes (`pass.rs`).
//! * [`Guard::pause`] / [`Guard::resume`]: operator pauses (`operator.rs`), stored with
//!   the guard's own in the pause table (`pauses.rs`).

mod builder;
mod gate;
#[cfg(feature = "postgres")]
mod listen;
pub mod metrics;
mod operator;
mod pass;
mod pauses;
#[cfg(all(test, feature = "sqlite"))]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use contract_core::plan::Remediation;
use contract_core::{ExecutionLog, FleetReport, TenantReport};
use sqlx::Pool;

pub use builder::GuardBuilder;
pub use gate::{Gate, PauseInfo, PausedBy, Permit};
#[cfg(feature = "postgres")]
pub use listen::{DDL_CHANNEL, install_ddl_trigger};
pub use operator::{OperatorPause, OperatorResume};
pub use pauses::{PauseStore, PauseTable};

use gate::{TenantCell, TenantState};

use crate::check::ContractSet;
use crate::error::error_chain;
use crate::remediation::{ApplyOptions, SchemaEpoch};
use crate::tenants::TenantDirectory;

/// Tenant name → (shared name for permits, gate state).
type Cells = HashMap<String, (Arc<str>, Arc<TenantCell>)>;

/// The runtime guard. Cheap to clone; clones share state.
#[derive(Debug)]
pub struct Guard<DB: PauseStore> {
    inner: Arc<Inner<DB>>,
}

impl<DB: PauseStore> Clone for Guard<DB> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

#[derive(Debug)]
struct Inner<DB: PauseStore> {
    contracts: ContractSet<DB>,
    directory: TenantDirectory<DB>,
    control: Pool<DB>,
    policy: Remediation,
    options: ApplyOptions,
    pauses: Option<PauseTable>,
    interval: Duration,
    /// How long a pass waits for one pool's live schema (then: unreachable).
    check_timeout: Duration,
    epoch: SchemaEpoch,
    expected_fingerprint: String,
    cells: RwLock<Cells>,
    /// Observed fingerprint and last report per tenant; also serialises passes.
    observed: tokio::sync::Mutex<HashMap<String, (String, TenantReport)>>,
    report: RwLock<Option<FleetReport>>,
    log: RwLock<Option<ExecutionLog>>,
    dirty: std::sync::Mutex<BTreeSet<String>>,
    wake: tokio::sync::Notify,
    gate_metrics: GateMetrics,
    /// Tenants whose remediation failed: when to try again, and how many failures so far.
    retry: std::sync::Mutex<HashMap<String, (Instant, u32)>>,
    /// Serialises operator pause/resume with a pass's reload of the operator pauses, so
    /// the reload never undoes a pause or resume made meanwhile. Taken after `observed`,
    /// never before it.
    operator_lock: tokio::sync::Mutex<()>,
    /// Tenants whose guard pause could not be saved or removed: written again next pass.
    unpersisted: std::sync::Mutex<BTreeSet<String>>,
}

/// Metric handles registered once at start (the gate is on every batch's path): install
/// the `metrics` recorder before starting the guard.
#[derive(Debug)]
struct GateMetrics {
    open: ::metrics::Counter,
    paused: ::metrics::Counter,
}

impl GateMetrics {
    fn register() -> Self {
        Self {
            open: ::metrics::counter!(metrics::GATE_TOTAL, "outcome" => "open"),
            paused: ::metrics::counter!(metrics::GATE_TOTAL, "outcome" => "paused"),
        }
    }
}

/// What one revalidation pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revalidation {
    /// Tenants introspected.
    pub introspected: usize,
    /// Tenants whose live schema changed since the last pass (diffed again).
    pub changed: Vec<String>,
    /// Tenants paused by the guard after this pass.
    pub paused: Vec<String>,
    /// Tenants remediated in this pass.
    pub remediated: Vec<String>,
}

impl<DB: PauseStore> Guard<DB> {
    /// The batch gate: open with a permit, or paused with the reason. Answered from
    /// memory (no I/O).
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

    /// The execution log of the last pass that planned or applied a remediation.
    #[must_use]
    pub fn execution_log(&self) -> Option<ExecutionLog> {
        self.inner
            .log
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The schema epoch bumped after each remediation.
    #[must_use]
    pub fn epoch(&self) -> &SchemaEpoch {
        &self.inner.epoch
    }

    /// The tenants the guard knows.
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

    /// Every current pause (guard and operator), sorted by tenant.
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
                state.drift.into_iter().chain(state.operator)
            })
            .collect();
        all.sort_by(|a, b| (&a.tenant, &a.queue).cmp(&(&b.tenant, &b.queue)));
        all
    }

    /// Marks a tenant for a prompt re-check (called by the DDL listener) and wakes the
    /// background task.
    pub fn mark_dirty(&self, tenant: &str) {
        if self
            .inner
            .cells
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(tenant)
        {
            self.inner
                .dirty
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(tenant.to_owned());
            self.inner.wake.notify_one();
        }
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
        #[allow(clippy::cast_precision_loss)]
        ::metrics::gauge!(metrics::PAUSED_TENANTS).set(paused as f64);
    }

    fn cell_state(&self, tenant: &str) -> Option<TenantState> {
        self.inner
            .cells
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .map(|(_, c)| c.snapshot())
    }

    /// Runs revalidation in the background: every interval, and promptly when a tenant
    /// is marked dirty. The task stops when every clone of the guard is dropped.
    #[must_use]
    pub fn spawn(&self) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        let interval = self.inner.interval;
        tokio::spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let wake = async { inner.wake.notified().await };
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = wake => {}
                }
                let guard = Guard { inner };
                if let Err(error) = guard.revalidate().await {
                    ::metrics::counter!(metrics::REVALIDATION_ERRORS_TOTAL).increment(1);
                    tracing::error!(error = %error_chain(&error), "revalidation failed; retrying next interval");
                }
            }
        })
    }
}

fn unknown_tenant(tenant: &str) -> PauseInfo {
    configuration_pause(
        &tenant.escape_debug().to_string(),
        "unknown tenant: it is not in the guard's tenant directory; add it and restart the guard"
            .into(),
    )
}

/// A guard pause that no schema change lifts: the tenant's configuration is wrong.
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
