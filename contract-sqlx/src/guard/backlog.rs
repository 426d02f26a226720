//! The backlog monitor: how many messages wait for each tenant, from a [`BacklogSource`]
//! (a queue table, a RabbitMQ queue, a JetStream consumer). The guard measures paused and
//! just-resumed tenants every pass and the whole fleet every [`FULL_SWEEP`]; it publishes the
//! total and the largest backlog as gauges (never a tenant label), keeps each tenant's
//! depth in its status, and after a tenant resumes reports how much of its backlog was
//! cleared and how fast ([`BacklogCleared`]).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use contract_core::{ExecutionLog, LogAction};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::{Guard, PassState, metrics};
use crate::backend::Backend;
use crate::control::ControlStore;
use crate::error::{Result, error_chain};
use crate::telemetry;
use crate::tenants::TenantDirectory;

/// How often every tenant's depth is measured (paused and resumed ones: every pass).
pub const FULL_SWEEP: Duration = Duration::from_secs(60);
/// How long a resumed tenant's backlog is followed before it is reported as it stands.
const FOLLOW_FOR: Duration = Duration::from_secs(3600);
/// How many [`BacklogCleared`] reports the guard keeps.
const KEPT: usize = 256;

/// Where a tenant's waiting messages are counted.
pub trait BacklogSource<DB: Backend>: Send + Sync + fmt::Debug + 'static {
    /// The number of messages waiting for each of `tenants` (reached through `directory`);
    /// a tenant left out is unknown.
    fn depths<'a>(
        &'a self,
        directory: &'a TenantDirectory<DB>,
        tenants: &'a [String],
    ) -> BoxFuture<'a, Result<HashMap<String, u64>>>;

    /// The source, as a person reads it (`queue table jobs`, `RabbitMQ queues tenant.*`).
    fn describe(&self) -> String;
}

/// How a resumed tenant's backlog drained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BacklogCleared {
    /// The tenant.
    pub tenant: String,
    /// Messages waiting when its gate reopened.
    pub backlog_at_resume: u64,
    /// Of those, how many are gone (all of them unless followed too long).
    pub cleared: u64,
    /// Time from the reopening to the measurement that found it cleared.
    pub duration_ms: u64,
    /// `cleared` per second over that time.
    pub messages_per_second: u64,
    /// `true` when the backlog reached zero; `false` when it was still not empty after an
    /// hour and is reported as it stood.
    pub complete: bool,
}

impl fmt::Display for BacklogCleared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} of {} waiting messages cleared in {} ms ({} messages/s){}",
            self.tenant,
            self.cleared,
            self.backlog_at_resume,
            self.duration_ms,
            self.messages_per_second,
            if self.complete {
                ""
            } else {
                ", still draining"
            }
        )
    }
}

impl<DB: ControlStore> Guard<DB> {
    /// The tenants whose gate is closed now.
    pub(super) fn closed_tenants(&self) -> BTreeSet<String> {
        self.inner
            .cells
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, (_, cell))| !cell.open())
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Counts the backlog of the tenants due (paused, resumed, or all on a full sweep) with
    /// the guard's [`BacklogSource`], notes which reopened this pass (closed before it, in
    /// `closed_before`), and adds the resumed backlogs now cleared to `log`. Paused tenants
    /// whose depth changed are `touched` (their status shows it).
    pub(super) async fn measure_backlog(
        &self,
        state: &mut PassState,
        directory: &TenantDirectory<DB>,
        closed_before: &BTreeSet<String>,
        touched: &mut BTreeSet<String>,
        log: &mut ExecutionLog,
    ) {
        let inner = &self.inner;
        let Some(source) = &inner.backlog else {
            return;
        };
        let closed_now = self.closed_tenants();
        let reopened: Vec<String> = closed_before.difference(&closed_now).cloned().collect();
        let mut wanted = state.backlog.due(
            || {
                directory
                    .tenants()
                    .iter()
                    .map(ToString::to_string)
                    .collect()
            },
            &closed_now,
        );
        wanted.extend(reopened.iter().cloned());
        wanted.sort();
        wanted.dedup();
        let measured =
            tokio::time::timeout(inner.check_timeout, source.depths(directory, &wanted)).await;
        let depths = match measured {
            Ok(Ok(depths)) => depths,
            Ok(Err(error)) => {
                tracing::warn!(source = %source.describe(), error = %error_chain(&error), "backlog not counted this pass");
                return;
            }
            Err(_) => {
                tracing::warn!(source = %source.describe(), "backlog not counted in time this pass");
                return;
            }
        };
        for (tenant, depth) in &depths {
            if closed_now.contains(tenant) && state.backlog.depths.get(tenant) != Some(depth) {
                touched.insert(tenant.clone());
            }
        }
        let cleared = state.backlog.record(depths, &reopened);
        let (total, max) = state.backlog.totals();
        telemetry::gauge(metrics::BACKLOG_MESSAGES, total);
        telemetry::gauge(metrics::BACKLOG_MAX_MESSAGES, max);
        // A log is kept when it has any.
        if !cleared.is_empty() {
            log.push(LogAction::BacklogCleared {
                tenants: cleared.iter().map(ToString::to_string).collect(),
            });
        }
    }
}

/// What the monitor remembers between passes.
#[derive(Debug, Default)]
pub(super) struct BacklogState {
    pub depths: HashMap<String, u64>,
    /// Tenants whose gate reopened, with when and their depth then.
    resumed: HashMap<String, (Instant, u64)>,
    last_sweep: Option<Instant>,
    pub cleared: VecDeque<BacklogCleared>,
}

impl BacklogState {
    /// The tenants to measure this pass: the paused and the followed ones, and every
    /// tenant (listed by `all`, only then) when a full sweep is due.
    pub fn due(
        &mut self,
        all: impl FnOnce() -> Vec<String>,
        paused: &BTreeSet<String>,
    ) -> Vec<String> {
        let now = Instant::now();
        if self
            .last_sweep
            .is_none_or(|at| now.duration_since(at) >= FULL_SWEEP)
        {
            self.last_sweep = Some(now);
            return all();
        }
        let mut tenants: Vec<String> = paused.iter().cloned().collect();
        tenants.extend(self.resumed.keys().cloned());
        tenants.sort();
        tenants.dedup();
        tenants
    }

    /// Records measured depths; `reopened` are the tenants whose gate opened this pass.
    /// Returns the tenants whose backlog is now cleared.
    pub fn record(
        &mut self,
        depths: HashMap<String, u64>,
        reopened: &[String],
    ) -> Vec<BacklogCleared> {
        let now = Instant::now();
        self.depths.extend(depths);
        for tenant in reopened {
            if let Some(&depth) = self.depths.get(tenant).filter(|d| **d > 0) {
                self.resumed.insert(tenant.clone(), (now, depth));
            }
        }
        let mut done = Vec::new();
        self.resumed.retain(|tenant, (since, at_resume)| {
            let depth = self.depths.get(tenant).copied().unwrap_or(*at_resume);
            let elapsed = now.duration_since(*since);
            let complete = depth == 0;
            if !complete && elapsed < FOLLOW_FOR {
                return true;
            }
            let cleared = at_resume.saturating_sub(depth);
            let duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
            done.push(BacklogCleared {
                tenant: tenant.clone(),
                backlog_at_resume: *at_resume,
                cleared,
                duration_ms,
                messages_per_second: (cleared.saturating_mul(1000)) / duration_ms.max(1),
                complete,
            });
            false
        });
        for event in &done {
            tracing::info!(tenant = %event.tenant, backlog_at_resume = event.backlog_at_resume, cleared = event.cleared, duration_ms = event.duration_ms, messages_per_second = event.messages_per_second, "backlog cleared after resume");
            if self.cleared.len() == KEPT {
                self.cleared.pop_front();
            }
            self.cleared.push_back(event.clone());
        }
        done
    }

    /// The total and the largest depth, for the gauges.
    pub fn totals(&self) -> (u64, u64) {
        let total = self.depths.values().sum();
        let max = self.depths.values().copied().max().unwrap_or(0);
        (total, max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_backlog_is_reported_once_when_it_reaches_zero() {
        let mut state = BacklogState::default();
        let t = |n: u64| HashMap::from([("t1".to_owned(), n)]);
        assert!(state.record(t(500), &[]).is_empty());
        assert!(state.record(t(500), &["t1".to_owned()]).is_empty());
        assert!(state.record(t(120), &[]).is_empty());
        let done = state.record(t(0), &[]);
        assert_eq!(done.len(), 1);
        assert_eq!(
            (done[0].backlog_at_resume, done[0].cleared, done[0].complete),
            (500, 500, true)
        );
        assert!(state.record(t(0), &[]).is_empty(), "reported once");
        assert_eq!(state.totals(), (0, 0));
    }
}
