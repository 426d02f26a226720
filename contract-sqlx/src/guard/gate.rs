//! What the batch gate answers from: per-tenant state held in memory.

use std::sync::Arc;
use std::time::SystemTime;

use contract_core::Finding;
use serde::{Deserialize, Serialize};

/// Who paused a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
#[non_exhaustive]
pub enum PausedBy {
    /// The guard, because of drift; lifts itself when the tenant complies again.
    Guard,
    /// An operator; only an explicit resume lifts it.
    Operator(String),
}

impl std::fmt::Display for PausedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PausedBy::Guard => f.write_str("the guard"),
            PausedBy::Operator(name) => write!(f, "operator {name}"),
        }
    }
}

/// Why a tenant (or one of its queues) is paused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PauseInfo {
    /// The tenant.
    pub tenant: String,
    /// The queue, when only one queue is paused.
    pub queue: Option<String>,
    /// Who paused.
    pub paused_by: PausedBy,
    /// Why, in one sentence.
    pub reason: String,
    /// The drift findings behind a guard pause.
    pub findings: Vec<Finding>,
    /// The plan waiting for approval, if one.
    pub plan_hash: Option<String>,
    /// What the contracts expect (a digest of the contracts).
    pub expected_fingerprint: Option<String>,
    /// What the tenant has (a digest of its live contracted tables).
    pub observed_fingerprint: Option<String>,
    /// When the pause started.
    pub since: SystemTime,
}

/// The gate's answer for one batch.
#[derive(Debug, Clone)]
pub enum Gate {
    /// Claim and process a batch under this permit.
    Open(Permit),
    /// Do not claim: the tenant (or queue) is paused, for this reason.
    Paused(Arc<PauseInfo>),
}

impl Gate {
    /// `true` when open.
    #[must_use]
    pub fn is_open(&self) -> bool {
        matches!(self, Gate::Open(_))
    }
}

/// Permission to process one batch of a tenant; check [`Permit::is_current`] before
/// acknowledging to find out whether the tenant was paused while the batch ran (then
/// release the claimed messages instead: roll back the claim, no attempt counted).
#[derive(Debug, Clone)]
pub struct Permit {
    pub(super) tenant: Arc<str>,
    pub(super) generation: u64,
    pub(super) entry: Arc<TenantCell>,
}

impl Permit {
    /// The tenant.
    #[must_use]
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// `true` while the tenant's state is the one the permit was issued under.
    #[must_use]
    pub fn is_current(&self) -> bool {
        self.entry.generation() == self.generation && self.entry.open()
    }
}

/// One tenant's live gate state: an uncontended read lock and an atomic generation.
#[derive(Debug, Default)]
pub(super) struct TenantCell {
    state: std::sync::RwLock<TenantState>,
    generation: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Clone, Default)]
pub(super) struct TenantState {
    /// Guard pause (drift), if any.
    pub drift: Option<Arc<PauseInfo>>,
    /// Operator pauses: `None` queue = every queue.
    pub operator: Vec<Arc<PauseInfo>>,
    /// Set while a newly listed tenant waits for its first check (memory only).
    pub checking: Option<Arc<PauseInfo>>,
    /// Drift the prompt check found while a pass was busy (memory only), with the count of
    /// passes that had taken the dirty set then: only a later pass lifts it.
    pub prompt: Option<(Arc<PauseInfo>, u64)>,
}

impl TenantCell {
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn open(&self) -> bool {
        let state = self
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.drift.is_none()
            && state.checking.is_none()
            && state.prompt.is_none()
            && state.operator.iter().all(|p| p.queue.is_some())
    }

    /// The pause that applies to `queue` (`None`: the tenant as a whole).
    pub fn pause_for(&self, queue: Option<&str>) -> Option<Arc<PauseInfo>> {
        let state = self
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let prompt = state.prompt.as_ref().map(|(pause, _)| pause);
        if let Some(pause) = state.drift.as_ref().or(state.checking.as_ref()).or(prompt) {
            return Some(Arc::clone(pause));
        }
        state
            .operator
            .iter()
            .find(|p| p.queue.is_none() || (queue.is_some() && p.queue.as_deref() == queue))
            .cloned()
    }

    /// Reads the state under the read lock.
    pub fn read<R>(&self, read: impl FnOnce(&TenantState) -> R) -> R {
        read(
            &self
                .state
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    pub fn snapshot(&self) -> TenantState {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Changes the state under one write lock (read-modify-write: a concurrent change
    /// of another field is never lost); bumps the generation only when the pauses
    /// changed, so permits stay valid through no-op revalidations.
    pub fn update<R>(&self, change: impl FnOnce(&mut TenantState) -> R) -> R {
        let mut state = self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = state.clone();
        let result = change(&mut state);
        if !same_pauses(&before, &state) {
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        result
    }
}

/// `true` when `a` and `b` pause the same things for the same reasons (what permits
/// depend on).
fn same_pauses(a: &TenantState, b: &TenantState) -> bool {
    a.drift
        .as_ref()
        .map(|p| (&p.reason, &p.observed_fingerprint))
        == b.drift
            .as_ref()
            .map(|p| (&p.reason, &p.observed_fingerprint))
        && a.checking.is_some() == b.checking.is_some()
        && a.prompt.is_some() == b.prompt.is_some()
        && a.operator.len() == b.operator.len()
        && a.operator
            .iter()
            .zip(&b.operator)
            .all(|(x, y)| x.queue == y.queue && x.paused_by == y.paused_by)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operator_pause(queue: usize) -> Arc<PauseInfo> {
        Arc::new(PauseInfo {
            tenant: "tenant_1".into(),
            queue: Some(format!("q{queue}")),
            paused_by: PausedBy::Operator("ops".into()),
            reason: "maintenance".into(),
            findings: Vec::new(),
            plan_hash: None,
            expected_fingerprint: None,
            observed_fingerprint: None,
            since: SystemTime::now(),
        })
    }

    /// Concurrent read-modify-writes of one cell: none is lost, each bumps the generation.
    #[test]
    fn concurrent_updates_are_never_lost() {
        const THREADS: usize = 8;
        const EACH: usize = 500;
        let cell = Arc::new(TenantCell::default());
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let cell = Arc::clone(&cell);
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        cell.update(|s| s.operator.push(operator_pause(t * EACH + i)));
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("worker");
        }
        assert_eq!(cell.snapshot().operator.len(), THREADS * EACH);
        assert_eq!(cell.generation(), (THREADS * EACH) as u64);
        // A change that leaves the pauses as they were keeps permits valid.
        cell.update(|s| s.operator.rotate_left(0));
        assert_eq!(cell.generation(), (THREADS * EACH) as u64);
    }
}
