//! The schema epoch (`ARCHITECTURE.md` D7): after remediation DDL, pooled connections hold prepared
//! statements (and, on PostgreSQL, custom-type OIDs) of the old schema, and PostgreSQL
//! answers `cached plan must not change result type` on every retry. The guard bumps the
//! epoch after each committed remediation; the pool hook recycles connections opened
//! before the last bump, once each, the next time they are acquired.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::Database;
use sqlx::pool::{PoolConnectionMetadata, PoolOptions};

/// A shared schema epoch. Cheap to clone; all clones see the same bumps.
///
/// ```
/// # #[cfg(feature = "postgres")] {
/// use contract_sqlx::SchemaEpoch;
/// let epoch = SchemaEpoch::new();
/// // The consumer's pool: connections older than the last remediation are recycled.
/// let options = epoch.install(sqlx::postgres::PgPoolOptions::new().max_connections(8));
/// # let _ = options;
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct SchemaEpoch {
    inner: Arc<Mutex<EpochState>>,
}

#[derive(Debug, Default)]
struct EpochState {
    counter: u64,
    last_bump: Option<Instant>,
}

impl SchemaEpoch {
    /// A fresh epoch (0, never bumped).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks that the schema changed now; returns the new epoch number.
    pub fn bump(&self) -> u64 {
        let mut state = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        state.counter += 1;
        state.last_bump = Some(Instant::now());
        state.counter
    }

    /// The number of bumps so far.
    #[must_use]
    pub fn current(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .counter
    }

    /// `true` when a connection of this age was opened after the last bump (keep it).
    #[must_use]
    pub fn is_current(&self, connection_age: Duration) -> bool {
        let last = self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last_bump;
        match (last, Instant::now().checked_sub(connection_age)) {
            (None, _) => true,
            (Some(bump), Some(opened)) => opened > bump,
            (Some(_), None) => false,
        }
    }

    /// Installs the `before_acquire` hook that recycles stale connections.
    ///
    /// This sets the pool's `before_acquire` callback; if you need your own, call
    /// [`SchemaEpoch::is_current`] from it instead.
    #[must_use]
    pub fn install<DB: Database>(&self, options: PoolOptions<DB>) -> PoolOptions<DB> {
        let epoch = self.clone();
        options.before_acquire(move |_conn, meta: PoolConnectionMetadata| {
            let keep = epoch.is_current(meta.age);
            Box::pin(async move { Ok(keep) })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_opened_before_a_bump_are_stale() {
        let epoch = SchemaEpoch::new();
        assert!(epoch.is_current(Duration::from_secs(3600)));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(epoch.bump(), 1);
        assert!(!epoch.is_current(Duration::from_secs(3600)));
        assert!(epoch.is_current(Duration::ZERO));
    }
}
