//! Building and starting a [`Guard`]: contracts, tenants, policy, control plane, interval.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use contract_core::plan::Remediation;
use sqlx::Pool;
use tracing::Instrument as _;

use super::{BacklogSource, Dirty, GateMetrics, Guard, Inner, PassState};
use crate::check::{ContractSet, TypeChecks};
use crate::control::{ControlPlane, ControlStore, Replica};
use crate::error::Result;
use crate::remediation::{ApplyOptions, SchemaEpoch};
use crate::tenants::{TenantDirectory, Tenants};

/// Builds a [`Guard`].
#[derive(Debug)]
pub struct GuardBuilder<DB: ControlStore> {
    contracts: ContractSet<DB>,
    tenants: Option<Tenants>,
    directory: Option<TenantDirectory<DB>>,
    policy: Remediation,
    options: ApplyOptions,
    plane: Option<ControlPlane>,
    log_file: Option<PathBuf>,
    backlog: Option<Arc<dyn BacklogSource<DB>>>,
    interval: Duration,
    full_check_every: u32,
    check_timeout: Duration,
    epoch: SchemaEpoch,
}

impl<DB: ControlStore> GuardBuilder<DB> {
    /// Guards the contract of `T`.
    #[must_use]
    pub fn contract<T: contract_core::Contract + TypeChecks<DB>>(mut self) -> Self {
        self.contracts.push::<T>();
        self
    }

    /// Guards every contract of `contracts`.
    #[must_use]
    pub fn contracts(mut self, contracts: ContractSet<DB>) -> Self {
        for entry in contracts.entries() {
            self.contracts.push_entry(entry.clone());
        }
        self
    }

    /// Discovers tenants on the start-up pool.
    #[must_use]
    pub fn tenants(mut self, tenants: Tenants) -> Self {
        self.tenants = Some(tenants);
        self
    }

    /// Uses a prepared tenant directory (tenants on several servers, SQLite files).
    #[must_use]
    pub fn directory(mut self, directory: TenantDirectory<DB>) -> Self {
        self.directory = Some(directory);
        self
    }

    /// What to do about drift (default: [`Remediation::Off`], report and pause only).
    #[must_use]
    pub fn remediation(mut self, policy: Remediation) -> Self {
        self.policy = policy;
        self
    }

    /// Timeouts, retries and the audit table for remediation.
    #[must_use]
    pub fn apply_options(mut self, options: ApplyOptions) -> Self {
        self.options = options;
        self
    }

    /// Where the control plane's tables are (default: [`ControlPlane::default`], on the
    /// start-up pool): pauses, tenant status, approvals and replicas, shared by every
    /// replica and read by the `contract` CLI.
    #[must_use]
    pub fn control_plane(mut self, plane: ControlPlane) -> Self {
        self.plane = Some(plane);
        self
    }

    /// Keeps pauses and status in memory only (no table is created; approvals can then
    /// only come from the policy, and the CLI sees nothing of this guard).
    #[must_use]
    pub fn in_memory_control(mut self) -> Self {
        self.plane = None;
        self
    }

    /// Counts each tenant's waiting messages with `source` (a queue table:
    /// [`crate::quarantine::QueueBacklog`]; a broker queue): paused and resumed tenants every
    /// pass, the whole fleet every [`super::FULL_SWEEP`]. The depths are in the guard's
    /// report, each tenant's status and two gauges (total, largest; no tenant label), and
    /// [`Guard::backlog_cleared`] says how fast a resumed tenant's backlog drained.
    #[must_use]
    pub fn backlog(mut self, source: impl BacklogSource<DB>) -> Self {
        self.backlog = Some(Arc::new(source));
        self
    }

    /// Appends each pass's execution log that planned or applied something to `path`, one
    /// JSON document per line (JSON Lines), so a long-running guard keeps one file.
    #[must_use]
    pub fn execution_log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.log_file = Some(path.into());
        self
    }

    /// Interval of the periodic revalidation run by [`Guard::spawn`] (default 5 s).
    #[must_use]
    pub fn revalidate_every(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Every `n`-th sweep introspects every tenant (default 12; 1: every sweep does). The
    /// other sweeps introspect only the tenants whose catalog signature moved (see
    /// [`super::ChangeSignal`]): the full check bounds how long a change the signal could
    /// miss goes unseen. Backends without a trustworthy signal (MySQL) always check fully.
    #[must_use]
    pub fn full_check_every(mut self, n: u32) -> Self {
        self.full_check_every = n.max(1);
        self
    }

    /// How long one pass may wait for a pool's live schema before its tenants are paused as
    /// unreachable (default 10 s). It bounds how long gates stay open while a server is
    /// away: without it a pass waits for the pool's own `acquire_timeout` (sqlx: 30 s) while
    /// connections are refused. Raise it for very large fleets on slow servers.
    #[must_use]
    pub fn check_timeout(mut self, timeout: Duration) -> Self {
        self.check_timeout = timeout;
        self
    }

    /// Shares a schema epoch with the consumer's pool hook ([`SchemaEpoch::install`]).
    #[must_use]
    pub fn epoch(mut self, epoch: SchemaEpoch) -> Self {
        self.epoch = epoch;
        self
    }

    /// The one-line start-up for a consumer: connects the consumer's pool with the
    /// statement-cache hook installed ([`SchemaEpoch::install`], so remediation DDL never
    /// surfaces as `cached plan must not change result type`), then starts the guard on it.
    ///
    /// ```no_run
    /// # use contract_sqlx::Contract;
    /// # #[derive(sqlx::FromRow, Contract)] #[contract(table = "events")] struct Event { id: i64 }
    /// # async fn demo() -> contract_sqlx::Result<()> {
    /// use contract_sqlx::{Guard, plan::Remediation};
    /// let (pool, guard) = Guard::<sqlx::Postgres>::builder()
    ///     .contract::<Event>()
    ///     .remediation(Remediation::SafeOnly)
    ///     .connect(sqlx::postgres::PgPoolOptions::new().max_connections(8), "postgres://…")
    ///     .await?;
    /// # let _ = (pool, guard); Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`crate::Error::Database`] when the pool cannot connect (check the URL and that the
    /// server is up), then the errors of [`GuardBuilder::start`].
    pub async fn connect(
        self,
        options: sqlx::pool::PoolOptions<DB>,
        url: &str,
    ) -> Result<(Pool<DB>, Guard<DB>)> {
        let pool = self.epoch.install(options).connect(url).await.map_err(
            crate::error::Error::db_hint(
                "connecting the consumer pool",
                crate::error::hint::CONNECT,
                None,
            ),
        )?;
        let guard = self.start(&pool).await?;
        Ok((pool, guard))
    }

    /// Discovers the tenants, checks the whole fleet, applies the remediation policy and
    /// pauses drifted tenants. `pool` is used for discovery and stores the pauses.
    ///
    /// Install your `metrics` recorder (exporter) before this call: the gate's metric
    /// handles are registered here, once, to keep the gate cheap.
    ///
    /// # Errors
    ///
    /// Discovery failures, an invalid tenant list, or a pause table that cannot be created.
    pub async fn start(self, pool: &Pool<DB>) -> Result<Guard<DB>> {
        let directory = match (self.directory, &self.tenants) {
            (Some(directory), _) => directory,
            (None, Some(source)) => TenantDirectory::new().discover(pool, source).await?,
            (None, None) => {
                TenantDirectory::new()
                    .discover(pool, &Tenants::schemas_like("tenant_%"))
                    .await?
            }
        };
        if let Some(plane) = &self.plane {
            DB::ensure(pool, plane).await?;
        }
        let contracts: Vec<_> = self
            .contracts
            .entries()
            .iter()
            .map(|e| e.contract.clone())
            .collect();
        let version = contract_core::digest_hex(
            serde_json::to_string(&contracts)
                .unwrap_or_default()
                .as_bytes(),
        );
        let now = SystemTime::now();
        let replica = Replica {
            replica_id: uuid::Uuid::now_v7().to_string(),
            host: hostname::get()
                .map_or_else(|_| "localhost".into(), |h| h.to_string_lossy().into_owned()),
            pid: i64::from(std::process::id()),
            version,
            contracts,
            started_at: now,
            heartbeat_at: now,
        };
        let tenants = directory.tenants().len();
        let guard = Guard {
            inner: Arc::new(Inner {
                contracts: self.contracts,
                directory: RwLock::new(Arc::new(directory)),
                control: pool.clone(),
                plane: self.plane,
                policy: RwLock::new(self.policy),
                options: self.options,
                interval: self.interval,
                full_check_every: self.full_check_every,
                check_timeout: self.check_timeout,
                epoch: self.epoch,
                replica,
                cells: RwLock::new(HashMap::new()),
                state: tokio::sync::Mutex::new(PassState::default()),
                report: RwLock::new(None),
                last_pass: RwLock::new(None),
                log: RwLock::new(None),
                log_file: self.log_file,
                backlog: self.backlog,
                dirty: std::sync::Mutex::new(Dirty::default()),
                wake: Arc::new(tokio::sync::Notify::new()),
                dirty_wake: Arc::new(tokio::sync::Notify::new()),
                gate_metrics: GateMetrics::register(),
                operator_lock: tokio::sync::Mutex::new(()),
                unpersisted: std::sync::Mutex::new(BTreeSet::new()),
                deregistered: tokio::sync::Mutex::new(false),
                deferred_sweep: std::sync::Mutex::new(None),
            }),
        };
        let span = tracing::info_span!(
            "contract.guard.start",
            dialect = %DB::DIALECT,
            tenants,
            policy = %guard.policy(),
        );
        guard.revalidate().instrument(span).await?;
        Ok(guard)
    }
}

impl<DB: ControlStore> Guard<DB> {
    /// A builder with no contracts, `Remediation::Off`, the control plane in its default
    /// place on the start-up pool, passes every 5 s.
    #[must_use]
    pub fn builder() -> GuardBuilder<DB> {
        GuardBuilder {
            contracts: ContractSet::new(),
            tenants: None,
            directory: None,
            policy: Remediation::Off,
            options: ApplyOptions::default(),
            plane: Some(ControlPlane::default()),
            log_file: None,
            backlog: None,
            interval: Duration::from_secs(5),
            full_check_every: 12,
            check_timeout: Duration::from_secs(10),
            epoch: SchemaEpoch::new(),
        }
    }
}
