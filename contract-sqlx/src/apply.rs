//! Applying one tenant's allowed plan steps: options, retries, and the job description.

use std::time::Duration;

use contract_core::plan::{PlanStep, TenantPlan};
use contract_core::{Finding, LiveTable, TenantName};

use crate::audit::AuditConfig;
use crate::contracts::ContractSet;

/// How remediation runs (DESIGN D6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOptions {
    /// `lock_timeout` for the DDL (PostgreSQL) / `lock_wait_timeout` (MySQL).
    pub lock_timeout: Duration,
    /// `statement_timeout` for each statement.
    pub statement_timeout: Duration,
    /// How long to wait for another replica's remediation of the same tenant.
    pub advisory_lock_wait: Duration,
    /// Attempts on lock timeout (SQLSTATE 55P03), with exponential backoff and jitter.
    pub max_attempts: u32,
    /// First backoff; doubled each attempt, plus up to 50% jitter.
    pub base_backoff: Duration,
    /// Audit table and actor.
    pub audit: AuditConfig,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            lock_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(60),
            advisory_lock_wait: Duration::from_secs(60),
            max_attempts: 5,
            base_backoff: Duration::from_millis(100),
            audit: AuditConfig::default(),
        }
    }
}

impl ApplyOptions {
    /// The backoff before attempt `attempt + 1`: `base * 2^(attempt-1)` plus up to 50% jitter.
    #[must_use]
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base_backoff
            .saturating_mul(1 << attempt.saturating_sub(1).min(16));
        let jitter_permille = u32::try_from(random_u64() % 500).unwrap_or(0);
        exp + exp * jitter_permille / 1000
    }
}

/// Milliseconds since `start`, saturating.
pub(crate) fn elapsed_ms(start: std::time::Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Random bits for jitter: `RandomState` is seeded randomly per instance, the process id
/// only adds to it.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(u64::from(std::process::id()));
    hasher.finish()
}

/// Everything one tenant's apply needs.
#[derive(Debug)]
pub struct ApplyJob<'a, DB: sqlx::Database> {
    /// The tenant.
    pub tenant: &'a TenantName,
    /// The plan the steps come from.
    pub plan: &'a TenantPlan,
    /// The steps the policy allows, in plan order.
    pub steps: Vec<&'a PlanStep>,
    /// The tenant's contracted tables as planned on (re-verified under the lock).
    pub planned_on: Vec<&'a LiveTable>,
    /// The contracts (to re-introspect the same tables).
    pub contracts: &'a ContractSet<DB>,
    /// The drift being fixed, for the audit row.
    pub drift_before: Vec<&'a Finding>,
    /// Timeouts, retries and audit settings.
    pub options: &'a ApplyOptions,
}

impl<DB: sqlx::Database> ApplyJob<'_, DB> {
    /// The statements to run, in order.
    #[must_use]
    pub fn statements(&self) -> Vec<String> {
        self.steps
            .iter()
            .flat_map(|s| s.statements.iter().cloned())
            .collect()
    }

    /// `true` when `live` (re-introspected under the lock) still matches what was planned on.
    #[must_use]
    pub fn still_matches(&self, live: &[LiveTable]) -> bool {
        let key = |t: &LiveTable| (t.schema.clone(), t.name.clone(), t.fingerprint.clone());
        let mut planned: Vec<_> = self.planned_on.iter().map(|t| key(t)).collect();
        let mut now: Vec<_> = live.iter().map(key).collect();
        planned.sort();
        now.sort();
        planned == now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_bounded_jitter() {
        let options = ApplyOptions {
            base_backoff: Duration::from_millis(100),
            ..ApplyOptions::default()
        };
        for attempt in 1..=4 {
            let b = options.backoff(attempt);
            let base = Duration::from_millis(100 * (1 << (attempt - 1)));
            assert!(b >= base && b <= base * 3 / 2, "attempt {attempt}: {b:?}");
        }
    }
}
