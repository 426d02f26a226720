//! The live tenant set: each pass lists the tenants again with the directory's own sources
//! (one query per pool). A new tenant's gate is closed ("checking") until the pass has
//! checked it; a tenant no longer listed is retired: its gate closed with that reason, its
//! state dropped, and after [`RETIRED_KEPT`] its cell pruned too.

use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime};

use super::gate::TenantCell;
use super::{Guard, PassState, configuration_pause};
use crate::control::ControlStore;
use crate::tenants::TenantDirectory;

/// How long a retired tenant's gate keeps saying why before it is forgotten.
pub(super) const RETIRED_KEPT: Duration = Duration::from_secs(3600);

/// What a pass's discovery found.
pub(super) struct Discovered<DB: ControlStore> {
    pub directory: Arc<TenantDirectory<DB>>,
    pub added: Vec<String>,
    pub retired: Vec<String>,
    /// Retired long enough ago to forget (their stored status is removed too).
    pub pruned: Vec<String>,
}

impl<DB: ControlStore> Guard<DB> {
    /// Whether `name` is a tenant the guard checks (listed, not retired).
    pub(super) fn knows(&self, state: &PassState, name: &str) -> bool {
        !state.retired.contains_key(name)
            && self
                .inner
                .cells
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .contains_key(name)
    }

    /// Lists the tenants again (on the first pass, or when `list` is false, takes the
    /// directory as it is) and brings the gates in line: new tenants closed until checked,
    /// removed ones retired.
    pub(super) async fn discover(
        &self,
        state: &mut PassState,
        first: bool,
        list: bool,
    ) -> Discovered<DB> {
        let inner = &self.inner;
        let current = Arc::clone(
            &inner
                .directory
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let (directory, removed) = if first || !list {
            (current, Vec::new())
        } else {
            // Bounded like the check: a server that refuses connections must not hold the
            // pass (and every gate with it) for the pool's acquire timeout.
            match tokio::time::timeout(inner.check_timeout, current.refresh()).await {
                Ok((next, change)) => {
                    let next = Arc::new(next);
                    *inner
                        .directory
                        .write()
                        .unwrap_or_else(PoisonError::into_inner) = Arc::clone(&next);
                    (next, change.removed)
                }
                Err(_) => {
                    tracing::warn!(
                        after_ms = crate::remediation::elapsed_ms_of(inner.check_timeout),
                        "the tenant sources could not be listed in time; the tenants stay as they were"
                    );
                    (current, Vec::new())
                }
            }
        };
        let mut added = Vec::new();
        {
            let mut cells = inner.cells.write().unwrap_or_else(PoisonError::into_inner);
            for tenant in directory.tenants() {
                let name = tenant.as_str();
                if cells.contains_key(name) && !state.retired.contains_key(name) {
                    continue;
                }
                state.retired.remove(name);
                let cell = TenantCell::default();
                let pause = configuration_pause(
                    name,
                    "checking: a new tenant, closed until the guard has checked it".into(),
                );
                cell.update(|s| s.checking = Some(Arc::new(pause)));
                cells.insert(name.to_owned(), (Arc::from(name), Arc::new(cell)));
                added.push(name.to_owned());
            }
            // A name reached twice is a configuration error: closed, never last-wins.
            for duplicate in directory.duplicates() {
                let name = duplicate.tenant.as_str();
                let pause = Arc::new(configuration_pause(name, duplicate.to_string()));
                let (_, cell) = cells
                    .entry(name.to_owned())
                    .or_insert_with(|| (Arc::from(name), Arc::new(TenantCell::default())));
                cell.update(|s| s.drift = Some(Arc::clone(&pause)));
                state.observed.remove(name);
            }
        }
        let mut retired = Vec::new();
        let now = SystemTime::now();
        for tenant in removed {
            let name = tenant.as_str();
            if directory.duplicates().iter().any(|d| d.tenant == tenant) {
                continue;
            }
            let reason = "retired: no tenant source of the guard lists it any more (dropped, or \
                          moved); its gate stays closed"
                .to_owned();
            tracing::warn!(tenant = name, "tenant retired: no longer listed");
            self.update_cell(name, |s| {
                s.drift = Some(Arc::new(configuration_pause(name, reason)))
            });
            state.observed.remove(name);
            state.retry.remove(name);
            state.signatures.remove(name);
            state.versions.remove(name);
            state.retired.insert(name.to_owned(), now);
            retired.push(name.to_owned());
        }
        let pruned: Vec<String> = state
            .retired
            .iter()
            .filter(|(_, at)| now.duration_since(**at).is_ok_and(|d| d >= RETIRED_KEPT))
            .map(|(t, _)| t.clone())
            .collect();
        if !pruned.is_empty() {
            let mut cells = inner.cells.write().unwrap_or_else(PoisonError::into_inner);
            for tenant in &pruned {
                cells.remove(tenant);
                state.retired.remove(tenant);
                state.persisted.remove(tenant);
            }
        }
        if !added.is_empty() && !first {
            tracing::info!(tenants = added.len(), "new tenants found; checking them");
        }
        Discovered {
            directory,
            added,
            retired,
            pruned,
        }
    }
}
