//! The connection budget of a directory of SQLite tenant files.
//!
//! Every sqlx SQLite connection is a worker thread and an open file. One pool per tenant
//! file, each keeping its idle connections, holds `tenants × max_connections` of them once
//! the guard's passes have touched every file. The budget bounds the connections the
//! directory's pools keep open *together*: when a connection is released, the open
//! connections of the fleet are counted (sqlx's own per-pool count, `Pool::size`); over
//! the budget, idle connections of the pools released least recently are closed to make
//! room, and when none is idle the released connection itself is closed instead of pooled.
//!
//! Only the pools' `after_release` hook is used: connections in use are never touched
//! (a consumer's batch is never cut, an `acquire` never waits on the budget, so no
//! consumer can dead-lock against another tenant's), and the `after_connect` and
//! `before_acquire` hooks stay the consumer's (`SchemaEpoch::install` uses the latter).
//! Closing by any other path (sqlx's idle timeout, a failed ping, `Pool::close`) shows in
//! `Pool::size` at once, so the count never drifts.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use sqlx::SqlitePool;
use sqlx::sqlite::SqlitePoolOptions;

/// How many connections a directory of SQLite tenant files keeps open across all its
/// files (each one is a thread and an open file). Set it with
/// [`sqlite_tenant_files_with`](crate::tenants::sqlite_tenant_files_with); the default is
/// [`ConnectionBudget::DEFAULT_CONNECTIONS`].
///
/// Connections in use are not limited (a pool's own `max_connections` still is): a
/// connection released while the fleet is over budget is closed rather than kept idle,
/// after idle connections of the least recently used files. So at rest the fleet holds at
/// most this many, and under load this many plus those in use at the moment.
///
/// ```
/// use contract_sqlx::tenants::ConnectionBudget;
/// assert_eq!(ConnectionBudget::default().connections(), 16);
/// assert_eq!(ConnectionBudget::new(64).connections(), 64);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionBudget {
    connections: u32,
}

impl ConnectionBudget {
    /// The default budget: enough for a guard and a pool of batch workers to keep their
    /// recently used files open.
    pub const DEFAULT_CONNECTIONS: u32 = 16;

    /// At most `connections` open connections across the directory when none is in use
    /// (`0`: every connection is closed when released).
    #[must_use]
    pub const fn new(connections: u32) -> Self {
        Self { connections }
    }

    /// The number of connections.
    #[must_use]
    pub const fn connections(self) -> u32 {
        self.connections
    }
}

impl Default for ConnectionBudget {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CONNECTIONS)
    }
}

/// The pools of one directory and the order they last released a connection in, shared
/// by their `after_release` hooks (which hold it weakly: the directory keeps it alive).
#[derive(Debug)]
pub(super) struct Fleet {
    /// The pools by index; replaced (copy on write) when a new file joins the directory.
    pools: RwLock<Arc<Vec<SqlitePool>>>,
    /// Indexes of the pools that may hold connections, least recently released first.
    recent: Mutex<VecDeque<usize>>,
    connections: u64,
}

impl Fleet {
    pub(super) fn new(budget: ConnectionBudget) -> Arc<Self> {
        Arc::new(Self {
            pools: RwLock::new(Arc::new(Vec::new())),
            recent: Mutex::new(VecDeque::new()),
            connections: u64::from(budget.connections),
        })
    }

    /// A lazily connecting pool for one more file of the directory: `min_connections` 0
    /// (a minimum per file would keep connections open in every file) and the budget's
    /// `after_release` hook.
    pub(super) fn add_pool(
        self: &Arc<Self>,
        options: SqlitePoolOptions,
        connect: sqlx::sqlite::SqliteConnectOptions,
    ) -> SqlitePool {
        let mut pools = self.pools.write().unwrap_or_else(PoisonError::into_inner);
        let index = pools.len();
        let fleet = Arc::downgrade(self);
        let pool = options
            .min_connections(0)
            .after_release(move |_conn, _meta| {
                let fleet = fleet.upgrade();
                Box::pin(async move {
                    // The directory is gone: nothing bounds the pool any more, so keep nothing.
                    Ok(match fleet {
                        Some(fleet) => fleet.make_room(index).await,
                        None => false,
                    })
                })
            })
            .connect_lazy_with(connect);
        let mut next = Vec::with_capacity(pools.len() + 1);
        next.extend(pools.iter().cloned());
        next.push(pool.clone());
        *pools = Arc::new(next);
        pool
    }

    /// A connection of pool `index` is being released: whether it may stay open (idle).
    /// Over the budget, idle connections of the least recently released pools are closed
    /// first; if that is not enough, the released one is closed.
    async fn make_room(&self, index: usize) -> bool {
        let pools = Arc::clone(&self.pools.read().unwrap_or_else(PoisonError::into_inner));
        let (mut over, candidates) = {
            let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            recent.retain(|&i| i != index);
            recent.push_back(index);
            // The released connection is still counted in its pool's size.
            let mut open = 0_u64;
            recent.retain(|&i| {
                let size = u64::from(pools[i].size());
                open += size;
                size > 0 || i == index
            });
            let candidates: Vec<usize> = recent
                .iter()
                .copied()
                .filter(|&i| i != index && pools[i].num_idle() > 0)
                .collect();
            (open.saturating_sub(self.connections), candidates)
        };
        for i in candidates {
            while over > 0 {
                // An idle connection only: one in use is never taken.
                let Some(idle) = pools[i].try_acquire() else {
                    break;
                };
                if let Err(error) = idle.close().await {
                    tracing::debug!(error = %error, "closing an idle SQLite connection over the budget");
                }
                over -= 1;
            }
            if over == 0 {
                break;
            }
        }
        over == 0
    }
}
