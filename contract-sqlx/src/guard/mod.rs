//! The guard at run time (DESIGN D7–D10): a start-up check of the whole fleet, a batch
//! gate answered from memory, revalidation that re-checks only changed tenants, pauses
//! that survive restarts, and remediation by policy.

pub mod metrics;
#[cfg(feature = "postgres")]
mod postgres;
mod state;
mod store;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use contract_core::plan::Remediation;
use contract_core::{ExecutionLog, FleetReport, Severity, TenantName, TenantReport, Verdict};
use sqlx::Pool;

#[cfg(feature = "postgres")]
pub use postgres::{DDL_CHANNEL, install_ddl_trigger};
pub use state::{Gate, PauseInfo, PausedBy, Permit};
pub use store::{PauseStore, PauseTable};

use state::{TenantCell, TenantState};

use crate::apply::ApplyOptions;
use crate::contracts::ContractSet;
use crate::epoch::SchemaEpoch;
use crate::error::Result;
use crate::fleet::{check_tenant, error_chain, snapshot};
use crate::remediate::{Checked, CheckedGroup, remediate_checked};
use crate::tenants::{TenantDirectory, Tenants};
use crate::type_check::TypeChecks;

/// Tenant name → (shared name for permits, gate state).
type Cells = HashMap<String, (Arc<str>, Arc<TenantCell>)>;

/// Builds a [`Guard`].
#[derive(Debug)]
pub struct GuardBuilder<DB: PauseStore> {
    contracts: ContractSet<DB>,
    tenants: Option<Tenants>,
    directory: Option<TenantDirectory<DB>>,
    policy: Remediation,
    options: ApplyOptions,
    pauses: Option<PauseTable>,
    interval: Duration,
    epoch: SchemaEpoch,
}

impl<DB: PauseStore> GuardBuilder<DB> {
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

    /// Where pauses are persisted (default: `public.contract_pauses` on the start-up pool;
    /// on SQLite, a `contract_pauses` table in the start-up pool's file).
    #[must_use]
    pub fn pause_table(mut self, table: PauseTable) -> Self {
        self.pauses = Some(table);
        self
    }

    /// Keeps pauses in memory only (no table is created).
    #[must_use]
    pub fn in_memory_pauses(mut self) -> Self {
        self.pauses = None;
        self
    }

    /// Interval of the periodic revalidation run by [`Guard::spawn`] (default 5 s).
    #[must_use]
    pub fn revalidate_every(mut self, interval: Duration) -> Self {
        self.interval = interval;
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
        let pool =
            self.epoch
                .install(options)
                .connect(url)
                .await
                .map_err(crate::error::Error::db(
                    "connecting the consumer pool (check the database URL)",
                    None,
                ))?;
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
        if let Some(table) = &self.pauses {
            DB::ensure_pause_table(pool, table).await?;
        }
        let cells = directory
            .tenants()
            .into_iter()
            .map(|t| {
                (
                    t.as_str().to_owned(),
                    (
                        Arc::<str>::from(t.as_str()),
                        Arc::new(TenantCell::default()),
                    ),
                )
            })
            .collect();
        let expected_fingerprint = contract_core::digest_hex(
            serde_json::to_string(
                &self
                    .contracts
                    .entries()
                    .iter()
                    .map(|e| &e.contract)
                    .collect::<Vec<_>>(),
            )
            .unwrap_or_default()
            .as_bytes(),
        );
        let guard = Guard {
            inner: Arc::new(Inner {
                contracts: self.contracts,
                directory,
                control: pool.clone(),
                policy: self.policy,
                options: self.options,
                pauses: self.pauses,
                interval: self.interval,
                epoch: self.epoch,
                expected_fingerprint,
                cells: RwLock::new(cells),
                observed: tokio::sync::Mutex::new(HashMap::new()),
                report: RwLock::new(None),
                log: RwLock::new(None),
                dirty: std::sync::Mutex::new(BTreeSet::new()),
                wake: tokio::sync::Notify::new(),
                gate_metrics: GateMetrics::register(),
                retry: std::sync::Mutex::new(HashMap::new()),
                operator_lock: tokio::sync::Mutex::new(()),
                unpersisted: std::sync::Mutex::new(BTreeSet::new()),
            }),
        };
        guard.revalidate().await?;
        Ok(guard)
    }
}

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
    duration: ::metrics::Histogram,
}

impl GateMetrics {
    fn register() -> Self {
        Self {
            open: ::metrics::counter!(metrics::GATE_TOTAL, "outcome" => "open"),
            paused: ::metrics::counter!(metrics::GATE_TOTAL, "outcome" => "paused"),
            duration: ::metrics::histogram!(metrics::GATE_DURATION),
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
    /// A builder with no contracts, `Remediation::Off`, pauses in `public.contract_pauses`.
    #[must_use]
    pub fn builder() -> GuardBuilder<DB> {
        GuardBuilder {
            contracts: ContractSet::new(),
            tenants: None,
            directory: None,
            policy: Remediation::Off,
            options: ApplyOptions::default(),
            pauses: Some(PauseTable::default()),
            interval: Duration::from_secs(5),
            epoch: SchemaEpoch::new(),
        }
    }

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
        let started = Instant::now();
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
        handles.duration.record(started.elapsed().as_secs_f64());
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

    /// Pauses a tenant (every queue, or one) on behalf of an operator. Persisted; only
    /// [`Guard::resume`] lifts it — the guard never does.
    ///
    /// # Errors
    ///
    /// An invalid tenant name, or the pause table cannot be written.
    pub async fn pause(
        &self,
        tenant: &str,
        queue: Option<&str>,
        operator: &str,
        reason: &str,
    ) -> Result<()> {
        let tenant = TenantName::new(tenant)?;
        let info = PauseInfo {
            tenant: tenant.to_string(),
            queue: queue.map(str::to_owned),
            paused_by: PausedBy::Operator(operator.to_owned()),
            reason: reason.to_owned(),
            findings: Vec::new(),
            plan_hash: None,
            expected_fingerprint: None,
            observed_fingerprint: None,
            since: SystemTime::now(),
        };
        let _serial = self.inner.operator_lock.lock().await;
        if let Some(table) = &self.inner.pauses {
            DB::save_pause(&self.inner.control, table, &info).await?;
        }
        tracing::info!(tenant = %tenant, queue = ?queue, operator, reason, "operator paused tenant");
        self.update_cell(tenant.as_str(), |state| {
            state.operator.retain(|p| p.queue != info.queue);
            state.operator.push(Arc::new(info));
        });
        self.publish_gauges();
        Ok(())
    }

    /// Lifts an operator pause.
    ///
    /// # Errors
    ///
    /// An invalid tenant name, or the pause table cannot be written.
    pub async fn resume(&self, tenant: &str, queue: Option<&str>) -> Result<()> {
        let tenant = TenantName::new(tenant)?;
        let _serial = self.inner.operator_lock.lock().await;
        if let Some(table) = &self.inner.pauses {
            DB::delete_pause(
                &self.inner.control,
                table,
                tenant.as_str(),
                queue,
                &PausedBy::Operator(String::new()),
            )
            .await?;
        }
        tracing::info!(tenant = %tenant, queue = ?queue, "operator resumed tenant");
        self.update_cell(tenant.as_str(), |state| {
            state.operator.retain(|p| p.queue.as_deref() != queue)
        });
        self.publish_gauges();
        Ok(())
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

    /// One revalidation pass over every tenant: bulk introspection, a diff only where the
    /// live fingerprint changed (or the tenant was marked dirty), remediation by policy,
    /// pauses set or lifted, operator pauses reloaded from the table.
    ///
    /// # Errors
    ///
    /// Only when the pause table cannot be read or written; database failures of a pool
    /// mark its tenants paused as unreachable.
    pub async fn revalidate(&self) -> Result<Revalidation> {
        let dirty: BTreeSet<String> = std::mem::take(
            &mut *self
                .inner
                .dirty
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        self.pass(&dirty).await
    }

    async fn pass(&self, dirty: &BTreeSet<String>) -> Result<Revalidation> {
        let inner = &self.inner;
        let started = Instant::now();
        // Failed remediations are retried with a growing delay (re-checked as if dirty).
        let mut dirty = dirty.clone();
        dirty.extend(
            inner
                .retry
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .filter(|(_, (at, _))| *at <= started)
                .map(|(tenant, _)| tenant.clone()),
        );
        let dirty = &dirty;
        let mut observed = inner.observed.lock().await;
        let mut summary = Revalidation::default();
        // Per pool, the changed tenants that drifted, with the snapshot they were found in:
        // remediation plans from it rather than introspecting them again.
        let mut drifted_groups: Vec<CheckedGroup<DB>> = Vec::new();
        let introspect_started = Instant::now();
        for (pool, names) in inner.directory.groups() {
            let schemas: Vec<String> = names.iter().map(|t| t.as_str().to_owned()).collect();
            summary.introspected += schemas.len();
            match snapshot(pool, &schemas, &inner.contracts).await {
                Ok(snap) => {
                    let (mut drifted, mut reports) = (Vec::new(), Vec::new());
                    for tenant in names {
                        let fingerprint =
                            tenant_fingerprint(tenant.as_str(), &inner.contracts, &snap);
                        let known = observed.get(tenant.as_str()).map(|(fp, _)| fp.as_str());
                        if known != Some(fingerprint.as_str()) || dirty.contains(tenant.as_str()) {
                            let report = check_tenant(tenant.as_str(), &inner.contracts, &snap);
                            if report.verdict == Verdict::Drifted {
                                drifted.push(tenant.clone());
                                reports.push(report.clone());
                            }
                            observed.insert(tenant.to_string(), (fingerprint, report));
                            summary.changed.push(tenant.to_string());
                        }
                    }
                    if !drifted.is_empty() {
                        drifted_groups.push(CheckedGroup {
                            pool: pool.clone(),
                            names: drifted,
                            reports,
                            snapshot: Some(snap),
                        });
                    }
                }
                Err(error) => {
                    let error = error_chain(&error);
                    for tenant in names {
                        let report = TenantReport::unreachable(tenant.to_string(), error.clone());
                        observed.insert(tenant.to_string(), (String::new(), report));
                        summary.changed.push(tenant.to_string());
                    }
                }
            }
        }
        // Remediate (or plan) the changed tenants that drifted, per policy.
        let mut plan_hashes: BTreeMap<String, String> = BTreeMap::new();
        let mut failures: BTreeMap<String, String> = BTreeMap::new();
        let introspect_ms = crate::apply::elapsed_ms(introspect_started);
        let drifted: Vec<TenantName> = drifted_groups
            .iter()
            .flat_map(|g| g.names.iter().cloned())
            .collect();
        if inner.policy.plans() && !drifted.is_empty() {
            // Close the drifted tenants' gates before remediating (DESIGN D8: drift found,
            // no new claims): applying may wait for locks or for another replica, and
            // meanwhile consumers would claim batches that fail on the drifted schema. In
            // memory only: `apply_pauses` below lifts it, or replaces it with the stored pause.
            if inner.policy.applies() {
                for tenant in &drifted {
                    if let Some((fingerprint, report)) = observed.get(tenant.as_str()) {
                        let mut pause =
                            guard_pause(report, fingerprint, &inner.expected_fingerprint, None);
                        pause.reason = format!("remediating {}", pause.reason);
                        tracing::warn!(tenant = %tenant, reason = %pause.reason, "tenant paused by the guard");
                        self.update_cell(tenant.as_str(), |state| {
                            // Already paused by the guard: paused since then.
                            if let Some(previous) = &state.drift {
                                pause.since = previous.since;
                            }
                            state.drift = Some(Arc::new(pause));
                        });
                    }
                }
            }
            let mut sub = TenantDirectory::new();
            for group in &drifted_groups {
                sub = sub.add(group.pool.clone(), group.names.clone());
            }
            let checked = Checked {
                groups: drifted_groups,
                introspect_ms,
            };
            let run = match remediate_checked(
                &sub,
                checked,
                &inner.contracts,
                &inner.policy,
                &inner.options,
                Some(&inner.epoch),
            )
            .await
            {
                Ok(run) => run,
                Err(error) => {
                    // Keep them paused and diff them again next pass.
                    for tenant in &drifted {
                        if let Some(entry) = observed.get_mut(tenant.as_str()) {
                            entry.0.clear();
                        }
                    }
                    self.publish_gauges();
                    return Err(error);
                }
            };
            ::metrics::counter!(metrics::REMEDIATIONS_TOTAL).increment(run.audits.len() as u64);
            self.schedule_retries(&run);
            failures = run
                .failed
                .iter()
                .map(|f| (f.tenant.clone(), f.error.clone()))
                .collect();
            summary.remediated = run.audits.iter().map(|a| a.tenant.clone()).collect();
            for report in &run.after.tenants {
                if let Some(entry) = observed.get_mut(&report.tenant) {
                    entry.1 = report.clone();
                }
            }
            if !run.audits.is_empty() {
                // The schema changed under us: next pass must see the new fingerprints.
                for audit in &run.audits {
                    if let Some(entry) = observed.get_mut(&audit.tenant) {
                        entry.0.clear();
                    }
                }
            }
            plan_hashes = run
                .awaiting_approval
                .iter()
                .map(|(t, p)| (t.clone(), p.hash.clone()))
                .collect();
            *inner.log.write().unwrap_or_else(PoisonError::into_inner) = Some(run.log);
        }
        // On error the gates are still set (in memory); finish the pass, then report it.
        let persisted = self
            .apply_pauses(&observed, &summary.changed, &plan_hashes, &failures)
            .await;
        inner
            .retry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|tenant, _| {
                observed
                    .get(tenant)
                    .is_some_and(|(_, r)| r.verdict != Verdict::Compliant)
            });
        summary.paused = observed
            .iter()
            .filter(|(_, (_, r))| r.verdict != Verdict::Compliant)
            .map(|(t, _)| t.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut tenants: Vec<TenantReport> = observed.values().map(|(_, r)| r.clone()).collect();
        // Like `check_fleet` and `remediate`: rejected tenant names are reported too.
        tenants.extend(crate::fleet::rejected_reports(&inner.directory));
        tenants.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        let report = FleetReport::new(DB::DIALECT, inner.contracts.describe(), tenants);
        #[allow(clippy::cast_precision_loss)]
        ::metrics::gauge!(metrics::DRIFT_FINDINGS).set(
            report
                .findings()
                .filter(|f| f.severity >= Severity::AtRisk)
                .count() as f64,
        );
        *inner.report.write().unwrap_or_else(PoisonError::into_inner) = Some(report);
        ::metrics::histogram!(metrics::REVALIDATION_DURATION)
            .record(started.elapsed().as_secs_f64());
        self.publish_gauges();
        persisted?;
        Ok(summary)
    }

    /// Sets or lifts guard pauses for changed tenants, persists them, reloads operator
    /// pauses. Every gate is set in memory before any write, so a failed write cannot
    /// leave a gate open; a pause that could not be written is written again next pass.
    /// After the first failed write the remaining ones are deferred too (the table is
    /// likely unreachable: no timeout per tenant), and that error is returned.
    async fn apply_pauses(
        &self,
        observed: &HashMap<String, (String, TenantReport)>,
        changed: &[String],
        plan_hashes: &BTreeMap<String, String>,
        failures: &BTreeMap<String, String>,
    ) -> Result<()> {
        let inner = &self.inner;
        let first_pass = inner
            .report
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none();
        let pending = if inner.pauses.is_some() {
            std::mem::take(
                &mut *inner
                    .unpersisted
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            )
        } else {
            BTreeSet::new()
        };
        // At start-up only guard pauses an earlier run stored need removing: one read
        // instead of a DELETE per compliant tenant (if the read fails, delete them all).
        let stored_guard: Option<BTreeSet<String>> = match &inner.pauses {
            Some(table) if first_pass => {
                DB::load_pauses(&inner.control, table)
                    .await
                    .ok()
                    .map(|stored| {
                        stored
                            .into_iter()
                            .filter(|p| p.paused_by == PausedBy::Guard)
                            .map(|p| p.tenant)
                            .collect()
                    })
            }
            _ => None,
        };
        let mut writes: Vec<(String, Option<Arc<PauseInfo>>)> = Vec::new();
        for tenant in changed {
            let Some((fingerprint, report)) = observed.get(tenant) else {
                continue;
            };
            let previous = self.cell_state(tenant).and_then(|s| s.drift);
            let drift = (report.verdict != Verdict::Compliant).then(|| {
                let mut pause = guard_pause(
                    report,
                    fingerprint,
                    &inner.expected_fingerprint,
                    plan_hashes.get(tenant),
                );
                if let Some(error) = failures.get(tenant) {
                    pause.reason.push_str(&format!(
                        "; remediation failed and will be retried: {error}"
                    ));
                }
                // Still paused by the guard: paused since then (the stored row agrees).
                if let Some(previous) = &previous {
                    pause.since = previous.since;
                }
                Arc::new(pause)
            });
            match (&previous, &drift) {
                (previous, Some(p)) if previous.as_ref().is_none_or(|q| q.reason != p.reason) => {
                    tracing::warn!(tenant = %tenant, reason = %p.reason, plan_hash = ?p.plan_hash, "tenant paused by the guard")
                }
                (Some(_), None) => {
                    tracing::info!(tenant = %tenant, "tenant complies again; guard pause lifted")
                }
                _ => {}
            }
            self.update_cell(tenant, |state| state.drift.clone_from(&drift));
            // A stale stored guard pause is removed at start-up, when lifted, or when an
            // earlier removal failed.
            let stale_at_start =
                first_pass && stored_guard.as_ref().is_none_or(|s| s.contains(tenant));
            if drift.is_some() || previous.is_some() || stale_at_start || pending.contains(tenant) {
                writes.push((tenant.clone(), drift));
            }
        }
        // Writes that failed in an earlier pass, for tenants unchanged since: what memory holds.
        for tenant in &pending {
            if !changed.contains(tenant) {
                writes.push((
                    tenant.clone(),
                    self.cell_state(tenant).and_then(|s| s.drift),
                ));
            }
        }
        let Some(table) = &inner.pauses else {
            return Ok(());
        };
        let mut first_error = None;
        for (tenant, drift) in writes {
            if first_error.is_none() {
                let written = match &drift {
                    Some(pause) => DB::save_pause(&inner.control, table, pause).await,
                    None => {
                        DB::delete_pause(&inner.control, table, &tenant, None, &PausedBy::Guard)
                            .await
                    }
                };
                match written {
                    Ok(()) => continue,
                    Err(error) => first_error = Some(error),
                }
            }
            inner
                .unpersisted
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(tenant);
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        // Under the operator lock: a pause or resume cannot land between the read and
        // the update of the cells (the reload would undo it).
        let _serial = inner.operator_lock.lock().await;
        let stored = DB::load_pauses(&inner.control, table).await?;
        let cells = inner.cells.read().unwrap_or_else(PoisonError::into_inner);
        for (tenant, (_, cell)) in cells.iter() {
            let operator: Vec<Arc<PauseInfo>> = stored
                .iter()
                .filter(|p| &p.tenant == tenant && matches!(p.paused_by, PausedBy::Operator(_)))
                .cloned()
                .map(Arc::new)
                .collect();
            cell.update(|state| {
                if state
                    .operator
                    .iter()
                    .map(|p| (&p.queue, &p.paused_by))
                    .ne(operator.iter().map(|p| (&p.queue, &p.paused_by)))
                {
                    state.operator = operator;
                }
            });
        }
        Ok(())
    }

    /// Failed tenants are retried after the revalidation interval, doubling per failure
    /// up to ten minutes (retrying every pass would keep queueing exclusive locks);
    /// remediated tenants are forgotten.
    fn schedule_retries(&self, run: &crate::remediate::RemediationRun) {
        let mut retry = self
            .inner
            .retry
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for audit in &run.audits {
            retry.remove(&audit.tenant);
        }
        let now = Instant::now();
        for failure in &run.failed {
            let failures = retry.get(&failure.tenant).map_or(0, |(_, n)| *n) + 1;
            let delay = self
                .inner
                .interval
                .saturating_mul(1 << (failures - 1).min(12))
                .min(Duration::from_secs(600));
            tracing::warn!(tenant = %failure.tenant, error = %failure.error, failures, retry_in = ?delay, "remediation failed");
            retry.insert(failure.tenant.clone(), (now + delay, failures));
        }
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
                    tracing::error!(error = %error_chain(&error), "revalidation failed; retrying next interval");
                }
            }
        })
    }
}

fn unknown_tenant(tenant: &str) -> PauseInfo {
    PauseInfo {
        tenant: tenant.escape_debug().to_string(),
        queue: None,
        paused_by: PausedBy::Guard,
        reason: "unknown tenant: it is not in the guard's tenant directory; add it and restart the guard".into(),
        findings: Vec::new(),
        plan_hash: None,
        expected_fingerprint: None,
        observed_fingerprint: None,
        since: SystemTime::now(),
    }
}

fn guard_pause(
    report: &TenantReport,
    observed: &str,
    expected: &str,
    plan_hash: Option<&String>,
) -> PauseInfo {
    let findings: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.severity >= Severity::AtRisk)
        .cloned()
        .collect();
    let mut reason = match &report.verdict {
        Verdict::Unreachable { error } => format!("unreachable: {error}"),
        _ => format!(
            "drift: {}",
            findings
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ),
    };
    if let Some(hash) = plan_hash {
        reason.push_str(&format!(
            "; plan {} awaits approval",
            contract_core::plan::short_hash(hash)
        ));
    }
    PauseInfo {
        tenant: report.tenant.clone(),
        queue: None,
        paused_by: PausedBy::Guard,
        reason,
        findings,
        plan_hash: plan_hash.cloned(),
        expected_fingerprint: Some(expected.to_owned()),
        observed_fingerprint: (!observed.is_empty()).then(|| observed.to_owned()),
        since: SystemTime::now(),
    }
}

/// A digest of a tenant's contracted live tables (absent tables included).
fn tenant_fingerprint<DB: crate::backend::Backend>(
    tenant: &str,
    contracts: &ContractSet<DB>,
    snap: &crate::fleet::FleetSnapshot<DB>,
) -> String {
    let mut digest = contract_core::FieldDigest::new();
    for entry in contracts.entries() {
        let table = snap.table_for(tenant, &entry.contract);
        digest
            .field(&entry.contract.table)
            .field(table.map_or("absent", |t| t.fingerprint.as_str()));
    }
    digest.finish_hex()
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use std::path::{Path, PathBuf};

    use contract_core::{ColumnContract, TableContract};
    use sqlx::Sqlite;
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

    use super::*;
    use crate::contracts::ContractEntry;
    use crate::type_check::TypeCheck;

    async fn open(path: &Path) -> SqlitePool {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .expect("open")
    }

    async fn exec(pool: &SqlitePool, sql: &str) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(pool)
            .await
            .expect(sql);
    }

    fn contracts() -> ContractSet<Sqlite> {
        let mut set = ContractSet::new();
        set.push_entry(ContractEntry {
            contract: TableContract {
                struct_name: "Event".into(),
                schema: None,
                table: "events".into(),
                columns: vec![
                    ColumnContract::new("id", "i64"),
                    ColumnContract::new("body", "String"),
                ],
            },
            checks: vec![
                TypeCheck::of::<i64>("id", "i64"),
                TypeCheck::of::<String>("body", "String"),
            ],
        });
        set
    }

    fn since_ms(pause: &PauseInfo) -> u128 {
        pause
            .since
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    }

    fn guard_pause_of(guard: &Guard<Sqlite>, tenant: &str) -> Arc<PauseInfo> {
        guard
            .pauses()
            .into_iter()
            .find(|p| p.tenant == tenant && p.paused_by == PausedBy::Guard)
            .expect("a guard pause")
    }

    /// A pass whose pause writes fail still closes every drifted tenant's gate, and the
    /// pauses are written by a later pass although the tenants did not change again;
    /// re-checking a paused tenant keeps when it was paused. Rejected tenant names are
    /// in the guard's report, as in `check_fleet`.
    #[tokio::test]
    async fn failed_pause_writes_close_every_gate_and_are_written_next_pass() {
        let dir: PathBuf =
            std::env::temp_dir().join(format!("contract-guard-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let tenants_dir = dir.join("tenants");
        std::fs::create_dir_all(&tenants_dir).expect("dir");
        for name in ["tenant_a", "tenant_b", "tenant_c", "bad-name"] {
            let pool = open(&tenants_dir.join(format!("{name}.db"))).await;
            exec(
                &pool,
                "CREATE TABLE events (id INTEGER NOT NULL, body TEXT NOT NULL)",
            )
            .await;
            pool.close().await;
        }
        let control = open(&dir.join("control.db")).await;
        let guard = Guard::<Sqlite>::builder()
            .contracts(contracts())
            .directory(
                crate::sqlite_tenant_files(&tenants_dir)
                    .await
                    .expect("tenant files"),
            )
            .start(&control)
            .await
            .expect("guard start");
        assert!(
            ["tenant_a", "tenant_b", "tenant_c"]
                .iter()
                .all(|t| guard.gate(t).is_open())
        );
        let rejected = guard
            .report()
            .tenants
            .into_iter()
            .find(|r| r.tenant == "bad-name")
            .expect("the rejected name is reported");
        assert!(matches!(rejected.verdict, Verdict::Unreachable { .. }));

        // The pause table is gone: every pause write fails.
        exec(&control, "DROP TABLE contract_pauses").await;
        for tenant in ["tenant_a", "tenant_b"] {
            let pool = open(&tenants_dir.join(format!("{tenant}.db"))).await;
            exec(&pool, "ALTER TABLE events DROP COLUMN body").await;
            pool.close().await;
        }
        assert!(guard.revalidate().await.is_err());
        assert!(!guard.gate("tenant_a").is_open());
        assert!(!guard.gate("tenant_b").is_open());
        assert!(guard.gate("tenant_c").is_open());
        let since = since_ms(&guard_pause_of(&guard, "tenant_a"));

        // The table is back: the next pass writes both pauses, though only tenant_a is
        // re-checked (and it keeps its start).
        Sqlite::ensure_pause_table(&control, &PauseTable::default())
            .await
            .expect("pause table");
        tokio::time::sleep(Duration::from_millis(20)).await;
        guard.mark_dirty("tenant_a");
        let pass = guard.revalidate().await.expect("revalidate");
        assert_eq!(pass.changed, ["tenant_a"]);
        assert_eq!(since_ms(&guard_pause_of(&guard, "tenant_a")), since);
        let stored = Sqlite::load_pauses(&control, &PauseTable::default())
            .await
            .expect("load");
        let stored: Vec<(&str, u128)> = stored
            .iter()
            .filter(|p| p.paused_by == PausedBy::Guard)
            .map(|p| (p.tenant.as_str(), since_ms(p)))
            .collect();
        assert_eq!(stored.len(), 2, "{stored:?}");
        assert_eq!(stored[0], ("tenant_a", since));
        assert_eq!(stored[1].0, "tenant_b");
        assert!(!guard.gate("tenant_a").is_open());
        assert!(!guard.gate("tenant_b").is_open());
        drop(guard);

        // A restart after tenant_a was fixed: its stored guard pause is removed (found by
        // one read of the stored pauses), tenant_b's stays.
        let pool = open(&tenants_dir.join("tenant_a.db")).await;
        exec(
            &pool,
            "ALTER TABLE events ADD COLUMN body TEXT NOT NULL DEFAULT ''",
        )
        .await;
        pool.close().await;
        let guard = Guard::<Sqlite>::builder()
            .contracts(contracts())
            .directory(
                crate::sqlite_tenant_files(&tenants_dir)
                    .await
                    .expect("tenant files"),
            )
            .start(&control)
            .await
            .expect("guard restart");
        assert!(guard.gate("tenant_a").is_open());
        assert!(!guard.gate("tenant_b").is_open());
        let stored: Vec<String> = Sqlite::load_pauses(&control, &PauseTable::default())
            .await
            .expect("load")
            .into_iter()
            .filter(|p| p.paused_by == PausedBy::Guard)
            .map(|p| p.tenant)
            .collect();
        assert_eq!(stored, ["tenant_b"]);
        drop(guard);
        control.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
