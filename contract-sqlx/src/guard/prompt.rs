//! The prompt check. Passes run one at a time, and a pass that applies an online change
//! lasts as long as its backfill: a tenant marked dirty meanwhile (the DDL listener,
//! [`Guard::mark_dirty`]) would wait that long with its gate open. While a pass is busy,
//! such a tenant is introspected at once and its gate closed if it drifted.
//!
//! It only closes, in memory. The pause it sets
//! carries the count of passes that had taken the dirty set when it looked
//! (`Dirty::taken`), and is set only while no pass has taken the set since (passes take it
//! once they hold the pass lock). The busy pass, which may have looked at the tenant before
//! the change, leaves it; any later pass that introspects the tenant (the next one does, as
//! it takes the tenant from the set) supersedes it: its verdict sets or keeps the guard
//! pause, whose lift opens the gate once written (`persist.rs`, `Observed::checked_in`).

use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use contract_core::Verdict;

use super::{Guard, Inner, Observed};
use crate::check::check_tenant;
use crate::control::ControlStore;
use crate::error::error_chain;

/// Runs the prompt check whenever a tenant is marked dirty while a pass is busy. It holds
/// the guard only while it checks, never while it waits (the wake-up is its own `Arc`), so
/// the task ends once every clone of the guard is dropped (looked at every `interval`).
pub(super) async fn while_busy<DB: ControlStore>(
    weak: Weak<Inner<DB>>,
    wake: Arc<Notify>,
    interval: Duration,
) {
    loop {
        let woken = tokio::time::timeout(interval, wake.notified())
            .await
            .is_ok();
        let Some(inner) = weak.upgrade() else { return };
        // No pass running: the pass the same wake-up starts checks the tenant.
        if !woken || inner.state.try_lock().is_ok() {
            continue;
        }
        Guard { inner }.close_drifted_now().await;
    }
}

impl<DB: ControlStore> Guard<DB> {
    /// Introspects the dirty tenants and closes the gates of those that drifted.
    async fn close_drifted_now(&self) {
        let inner = &self.inner;
        let (dirty, taken) = {
            let dirty = inner.dirty.lock().unwrap_or_else(PoisonError::into_inner);
            (dirty.tenants.clone(), dirty.taken)
        };
        if dirty.is_empty() {
            return;
        }
        let directory = Arc::clone(
            &inner
                .directory
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for (pool, names) in directory.groups() {
            let schemas: Vec<String> = names
                .iter()
                .filter(|n| dirty.contains(n.as_str()))
                .map(ToString::to_string)
                .collect();
            if schemas.is_empty() {
                continue;
            }
            let snap = match self.snapshot_within_timeout(pool, &schemas).await {
                Ok(snap) => snap,
                Err(error) => {
                    tracing::warn!(pool = %DB::describe_pool(pool), error = %error_chain(&error), "the prompt check could not read the pool; the next pass checks its dirty tenants");
                    continue;
                }
            };
            for tenant in &schemas {
                let report = check_tenant(tenant, &inner.contracts, &snap);
                if report.verdict != Verdict::Drifted {
                    continue;
                }
                let observed = Observed {
                    fingerprint: String::new(),
                    report,
                    planned: None,
                    waiting: None,
                    checked_in: taken,
                };
                let mut pause = super::persist::guard_pause(&observed, &inner.replica.version);
                pause.reason = format!(
                    "{} (found while another pass was busy; the next pass checks it again)",
                    pause.reason
                );
                let pause = Arc::new(pause);
                // Set also under a guard pause: the busy pass may lift that one at its end,
                // from a look taken before the change (the busy pass's own remediated tenant
                // then stays closed until the next pass, which its DDL marked dirty).
                let mut closed = None;
                self.update_cell(tenant, |state| {
                    // A pass that took the dirty set since has checked the tenant itself.
                    let current = inner
                        .dirty
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .taken
                        == taken;
                    if current {
                        closed = Some(state.drift.is_none());
                        state.prompt = Some((Arc::clone(&pause), taken));
                    }
                });
                if closed == Some(true) {
                    tracing::warn!(tenant = %tenant, reason = %pause.reason, "tenant paused at once: drift found while another pass was busy");
                }
            }
        }
        self.publish_gauges();
    }
}
