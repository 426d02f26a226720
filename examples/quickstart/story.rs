//! The quickstart's story, written once for every backend: a fleet of tenants with a
//! queue each, drift in some of them, the guard, remediation, approval, quarantine.
//!
//! Everything that differs per backend (where tenants live, DDL spellings, which stores
//! exist) is behind the [`Fleet`] trait; see `sqlite.rs`, `postgres.rs` and `mysql.rs`
//! beside this file. [`run`] returns a [`Summary`] of real library results: the example
//! prints it, `tests/quickstart.rs` asserts on it.

use std::collections::BTreeMap;
use std::error::Error;
use std::path::{Path, PathBuf};

use contract_sqlx::control::{ControlPlane, ControlStore};
use contract_sqlx::payload::{PayloadContract, Rejection};
use contract_sqlx::plan::{Remediation, TenantPlan};
use contract_sqlx::quarantine::{Quarantine, QuarantinedMessage};
use contract_sqlx::{
    Contract, FleetReport, Gate, Guard, TenantDirectory, TenantName,
    check::ContractSet,
    guard::{PauseInfo, Revalidation},
    remediate,
    remediation::{ApplyOptions, RemediationRun},
};
use serde::Deserialize;
use sqlx::Pool;

/// Errors of the story (setup, library, I/O).
pub type BoxError = Box<dyn Error + Send + Sync>;

/// The consumer's row type: the same struct it decodes with `sqlx::FromRow`, and its
/// schema contract. Remediation may add `event_metadata` (a constant default) on its own;
/// renaming `body` to `payload`, or changing the type of `user_id`, needs an approval of
/// the exact plan.
#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "events")]
pub struct Event {
    #[contract(primary_key)]
    pub id: i64,
    pub user_id: i64,
    #[contract(renamed_from = "body")]
    pub payload: String,
    #[contract(default = "'{}'")]
    pub event_metadata: Option<sqlx::types::Json<serde_json::Value>>,
}

/// The payload contract: what the consumer's handler deserialises from `payload`.
#[derive(Debug, Deserialize)]
pub struct EventPayload {
    pub kind: String,
    pub amount_cents: i64,
}

/// The drift injected into a tenant before the guard starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drift {
    /// Migrated like the contract says.
    None,
    /// A migration never reached it: `event_metadata` is missing.
    MissingColumn,
    /// Still has the old column name `body` where the contract reads `payload`.
    RenamedColumn,
    /// Someone hot-fixed it by hand: `user_id` has a type the struct's `i64` does not
    /// decode: `int4` on PostgreSQL (widened in place), `TEXT` on SQLite (the table is
    /// rebuilt; both after an approval of the exact plan), `TEXT` on MySQL (where a type
    /// change copies the table and is never automated: refused, the tenant stays paused).
    IncompatibleType,
}

impl Drift {
    /// What was done to the tenant, for the output.
    pub fn describe(self) -> &'static str {
        match self {
            Drift::None => "none",
            Drift::MissingColumn => "column event_metadata dropped",
            Drift::RenamedColumn => "payload still named body",
            Drift::IncompatibleType => "user_id has an incompatible type",
        }
    }
}

/// One queued message: `(id, user_id, raw payload)`.
pub type Message = (i64, i64, &'static str);

const GOOD: [&str; 4] = [
    r#"{"kind": "order.paid", "amount_cents": 1250}"#,
    r#"{"kind": "order.refunded", "amount_cents": 300}"#,
    r#"{"kind": "order.paid", "amount_cents": 99}"#,
    r#"{"kind": "invoice.sent", "amount_cents": 4200}"#,
];

/// The fleet: tenant (short name), its drift, its queue. Poison messages: a string where
/// the payload contract wants an integer, a document that is not JSON, a missing field.
pub fn scenario() -> Vec<(&'static str, Drift, Vec<Message>)> {
    let queue = |n: i64, poison: &[(i64, &'static str)]| -> Vec<Message> {
        (1..=n)
            .map(|id| {
                let bad = poison.iter().find(|(p, _)| *p == id).map(|(_, raw)| *raw);
                let good = GOOD[usize::try_from(id).unwrap_or(0) % GOOD.len()];
                (id, 100 + id, bad.unwrap_or(good))
            })
            .collect()
    };
    vec![
        (
            "acme",
            Drift::None,
            queue(
                8,
                &[(3, r#"{"kind": "order.paid", "amount_cents": "12.50"}"#)],
            ),
        ),
        ("globex", Drift::None, queue(6, &[])),
        (
            "initech",
            Drift::MissingColumn,
            queue(7, &[(5, "order.paid 1250")]),
        ),
        (
            "umbrella",
            Drift::RenamedColumn,
            queue(6, &[(2, r#"{"amount_cents": 10}"#)]),
        ),
        ("hooli", Drift::IncompatibleType, queue(5, &[])),
    ]
}

/// `true` when the payload contract rejects `raw` (used to count the poison up front).
pub fn is_poison(raw: &str) -> bool {
    payload_contract().check_str(raw).is_err()
}

/// The consumer's payload contract.
pub fn payload_contract() -> PayloadContract<EventPayload> {
    PayloadContract::<EventPayload>::named("event").with_version("1")
}

/// The SQL the consumer runs against one tenant's queue.
#[derive(Debug, Clone)]
pub struct QueueSql {
    /// `SELECT id, user_id, payload, event_metadata ... WHERE id > <p1> ORDER BY id LIMIT n`
    /// (locking the rows where the backend can).
    pub claim: String,
    /// `DELETE ... WHERE id = <p1>`: the ack.
    pub ack: String,
    /// `SELECT COUNT(*) ...`: messages still queued.
    pub count: String,
}

/// What differs per backend. The story ([`run`]) is generic over it.
#[allow(async_fn_in_trait)]
pub trait Fleet {
    /// The sqlx database.
    type DB: StoryDb;

    /// `SQLite`, `PostgreSQL`, `MySQL`.
    fn name(&self) -> &'static str;
    /// Where the tenants live, for the output.
    fn location(&self) -> String;
    /// Creates one tenant (its `events` queue, with `drift` applied), enqueues `messages`
    /// and returns the tenant's name.
    async fn create_tenant(
        &mut self,
        short: &str,
        drift: Drift,
        messages: &[Message],
    ) -> Result<TenantName, BoxError>;
    /// The tenant directory the guard and remediation use.
    async fn directory(&self) -> Result<TenantDirectory<Self::DB>, BoxError>;
    /// The pool the guard starts on (it stores the pauses).
    fn control(&self) -> &Pool<Self::DB>;
    /// Where the guard persists pauses.
    fn control_plane(&self) -> ControlPlane;
    /// Remediation options (where audit rows go, who the actor is).
    fn apply_options(&self) -> ApplyOptions;
    /// The consumer's SQL for a tenant's queue.
    fn queue_sql(&self, tenant: &TenantName) -> Result<QueueSql, BoxError>;
    /// Where quarantined messages go.
    fn quarantine_table(&self) -> Quarantine;
    /// Creates the quarantine table(s) of `tenants`, reached through `pool`, if the
    /// backend has one.
    async fn prepare_quarantine(
        &self,
        pool: &Pool<Self::DB>,
        tenants: &[TenantName],
    ) -> Result<(), BoxError>;
    /// Quarantined messages of a tenant; `None` when the backend has no quarantine store.
    async fn quarantined(
        &self,
        pool: &Pool<Self::DB>,
        tenant: &TenantName,
    ) -> Result<Option<Vec<QuarantinedMessage>>, BoxError>;
}

/// A backend the story runs on: the consumer's few queries on its queue, and quarantine
/// (or the honest lack of it). Implemented in `sqlite.rs`, `postgres.rs`, `mysql.rs`.
#[allow(async_fn_in_trait)]
pub trait StoryDb: ControlStore {
    /// The contracts the guard checks: here only [`Event`].
    fn contracts() -> ContractSet<Self>;
    /// Claims the next batch after message `after` (`QueueSql::claim`).
    async fn claim(
        conn: &mut Self::Connection,
        sql: &QueueSql,
        after: i64,
    ) -> Result<Vec<Event>, BoxError>;
    /// Acks one message (`QueueSql::ack`); returns the rows deleted.
    async fn ack(conn: &mut Self::Connection, sql: &QueueSql, id: i64) -> Result<u64, BoxError>;
    /// Messages still queued (`QueueSql::count`).
    async fn count(pool: &Pool<Self>, sql: &QueueSql) -> Result<i64, BoxError>;
    /// Moves rejected messages to quarantine inside the batch transaction; `None` when the
    /// backend has no quarantine store (then poison stays in the queue, unacked).
    async fn quarantine(
        conn: &mut Self::Connection,
        tenant: &TenantName,
        quarantine: &Quarantine,
        rejected: &[(i64, &[u8], &Rejection)],
    ) -> Result<Option<u64>, BoxError>;
}

/// What happened to one tenant in one consumption round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The gate was open: messages processed (acked) and quarantined; poison left in the
    /// queue when the backend cannot quarantine.
    Consumed {
        processed: u64,
        quarantined: u64,
        poison_left: u64,
    },
    /// The gate was closed, with the guard's reason and the plan waiting for approval.
    Paused {
        reason: String,
        plan_hash: Option<String>,
    },
}

/// An approved plan and the run that applied it.
#[derive(Debug, Clone)]
pub struct Approval {
    pub tenant: String,
    pub plan: TenantPlan,
    pub run: RemediationRun,
}

/// Everything the story did, from the library's own results.
#[derive(Debug, Clone)]
pub struct Summary {
    pub backend: &'static str,
    pub location: String,
    /// Tenant → its drift, as injected (inputs, not results).
    pub injected: BTreeMap<String, Drift>,
    /// Tenant → (messages seeded, poison message ids).
    pub seeded: BTreeMap<String, (usize, Vec<i64>)>,
    /// The guard's start-up check.
    pub startup: FleetReport,
    /// Pauses right after start-up.
    pub startup_pauses: Vec<PauseInfo>,
    /// Round 1: every tenant through the gate after start-up.
    pub round_startup: BTreeMap<String, Outcome>,
    /// `Remediation::SafeOnly`.
    pub safe_only: RemediationRun,
    /// The guard's revalidation after it.
    pub revalidated_after_safe: Revalidation,
    /// Round 2.
    pub round_safe: BTreeMap<String, Outcome>,
    /// `Remediation::Approved(hash)`, one per plan that awaited approval.
    pub approvals: Vec<Approval>,
    /// The guard's revalidation after the approvals.
    pub revalidated_after_approval: Revalidation,
    /// Round 3.
    pub round_approved: BTreeMap<String, Outcome>,
    /// The guard's report at the end.
    pub final_report: FleetReport,
    /// Pauses at the end.
    pub final_pauses: Vec<PauseInfo>,
    /// Tenant → messages still queued at the end.
    pub pending: BTreeMap<String, i64>,
    /// Every quarantined message; `None` when the backend has no quarantine store.
    pub quarantined: Option<Vec<QuarantinedMessage>>,
    /// The execution logs of the remediation runs, as written to `log_path`.
    pub log_path: PathBuf,
}

impl Summary {
    /// Messages processed over all rounds, per tenant.
    pub fn processed(&self) -> BTreeMap<String, u64> {
        let mut total = BTreeMap::new();
        for round in [&self.round_startup, &self.round_safe, &self.round_approved] {
            for (tenant, outcome) in round {
                if let Outcome::Consumed { processed, .. } = outcome {
                    *total.entry(tenant.clone()).or_default() += processed;
                }
            }
        }
        total
    }
}

/// Runs the story on `fleet` and writes the execution log to `log_path`.
pub async fn run<F: Fleet>(fleet: &mut F, log_path: &Path) -> Result<Summary, BoxError> {
    // 1. A fleet of tenants, each with a queue, some drifted.
    let mut injected = BTreeMap::new();
    let mut seeded = BTreeMap::new();
    for (short, drift, messages) in scenario() {
        let tenant = fleet.create_tenant(short, drift, &messages).await?;
        let poison = messages
            .iter()
            .filter(|(_, _, raw)| is_poison(raw))
            .map(|(id, _, _)| *id)
            .collect();
        injected.insert(tenant.to_string(), drift);
        seeded.insert(tenant.to_string(), (messages.len(), poison));
    }

    // 2. The guard: checks every tenant at start-up and pauses the drifted ones.
    let directory = fleet.directory().await?;
    let contracts = F::DB::contracts();
    let guard = Guard::<F::DB>::builder()
        .contracts(contracts.clone())
        .directory(directory.clone())
        .remediation(Remediation::Off) // report and pause; remediation is step 4
        .control_plane(fleet.control_plane())
        .start(fleet.control())
        .await?;
    let startup = guard.report();
    let startup_pauses = guard.pauses().iter().map(|p| (**p).clone()).collect();

    // 3. Consumers go through the gate: healthy tenants flow, drifted ones wait.
    for (pool, tenants) in directory.groups() {
        fleet.prepare_quarantine(pool, tenants).await?;
    }
    let round_startup = consume_fleet(fleet, &guard, &directory).await?;

    // 4. SafeOnly: additive fixes are applied (audited); the rest waits or is refused.
    let options = fleet.apply_options();
    let safe_only = remediate(&directory, &contracts, Remediation::SafeOnly)
        .options(options.clone())
        .epoch(guard.epoch())
        .run()
        .await?;
    let revalidated_after_safe = guard.revalidate().await?;
    let round_safe = consume_fleet(fleet, &guard, &directory).await?;

    // 5. An operator approves the exact plan hash that waits for approval.
    let mut approvals = Vec::new();
    for (tenant, plan) in &safe_only.awaiting_approval {
        let policy = Remediation::Approved(plan.hash.clone());
        let run = remediate(&directory, &contracts, policy)
            .options(options.clone())
            .epoch(guard.epoch())
            .run()
            .await?;
        approvals.push(Approval {
            tenant: tenant.clone(),
            plan: plan.clone(),
            run,
        });
    }
    let revalidated_after_approval = guard.revalidate().await?;
    let round_approved = consume_fleet(fleet, &guard, &directory).await?;

    // 6. The end state, and the execution log of every remediation run.
    let final_report = guard.report();
    let final_pauses = guard.pauses().iter().map(|p| (**p).clone()).collect();
    let mut pending = BTreeMap::new();
    let mut quarantined: Option<Vec<QuarantinedMessage>> = Some(Vec::new());
    for tenant in directory.tenants() {
        let pool = directory
            .pool_of(tenant.as_str())
            .ok_or("tenant without a pool")?;
        let left = F::DB::count(pool, &fleet.queue_sql(tenant)?).await?;
        pending.insert(tenant.to_string(), left);
        match fleet.quarantined(pool, tenant).await? {
            Some(rows) => {
                if let Some(all) = quarantined.as_mut() {
                    all.extend(rows);
                }
            }
            None => quarantined = None,
        }
    }
    let logs: Vec<_> = std::iter::once(&safe_only.log)
        .chain(approvals.iter().map(|a| &a.run.log))
        .collect();
    std::fs::write(log_path, serde_json::to_string_pretty(&logs)?)?;

    Ok(Summary {
        backend: fleet.name(),
        location: fleet.location(),
        injected,
        seeded,
        startup,
        startup_pauses,
        round_startup,
        safe_only,
        revalidated_after_safe,
        round_safe,
        approvals,
        revalidated_after_approval,
        round_approved,
        final_report,
        final_pauses,
        pending,
        quarantined,
        log_path: log_path.to_owned(),
    })
}

/// One round: every tenant through the gate; an open tenant's queue is drained.
async fn consume_fleet<F: Fleet>(
    fleet: &F,
    guard: &Guard<F::DB>,
    directory: &TenantDirectory<F::DB>,
) -> Result<BTreeMap<String, Outcome>, BoxError> {
    let mut outcomes = BTreeMap::new();
    for tenant in directory.tenants() {
        let pool = directory
            .pool_of(tenant.as_str())
            .ok_or("tenant without a pool")?;
        let outcome = match guard.gate(tenant.as_str()) {
            Gate::Paused(why) => Outcome::Paused {
                reason: why.reason.clone(),
                plan_hash: why.plan_hash.clone(),
            },
            Gate::Open(permit) => {
                let sql = fleet.queue_sql(tenant)?;
                let quarantine = fleet.quarantine_table();
                drain::<F::DB>(pool, tenant, &sql, &quarantine, &permit).await?
            }
        };
        outcomes.insert(tenant.to_string(), outcome);
    }
    Ok(outcomes)
}

/// The consumer loop of one tenant, under the gate's permit: claim a batch, check each
/// payload with the consumer's own serde type, quarantine the poison, handle and ack the
/// rest, commit — all in one transaction per batch.
async fn drain<DB: StoryDb>(
    pool: &Pool<DB>,
    tenant: &TenantName,
    sql: &QueueSql,
    quarantine: &Quarantine,
    permit: &contract_sqlx::Permit,
) -> Result<Outcome, BoxError> {
    let contract = payload_contract();
    let (mut processed, mut quarantined, mut poison_left) = (0, 0, 0);
    let mut after = 0_i64; // poison that cannot be quarantined stays behind the cursor
    loop {
        let mut tx = pool.begin().await?;
        let batch = DB::claim(&mut tx, sql, after).await?;
        let Some(last) = batch.last() else { break };
        after = last.id;
        let checked: Vec<(&Event, Result<EventPayload, Rejection>)> = batch
            .iter()
            .map(|e| (e, contract.check_str(&e.payload)))
            .collect();
        let rejected: Vec<(i64, &[u8], &Rejection)> = checked
            .iter()
            .filter_map(|(e, r)| {
                r.as_ref()
                    .err()
                    .map(|why| (e.id, e.payload.as_bytes(), why))
            })
            .collect();
        match DB::quarantine(&mut tx, tenant, quarantine, &rejected).await? {
            Some(moved) => quarantined += moved,
            None => poison_left += u64::try_from(rejected.len())?,
        }
        let mut acked = 0;
        for (event, payload) in &checked {
            if let Ok(payload) = payload {
                handle(event, payload);
                acked += DB::ack(&mut tx, sql, event.id).await?;
            }
        }
        if !permit.is_current() {
            // Paused while the batch ran: release it (nothing acked, no attempt counted).
            tx.rollback().await?;
            break;
        }
        tx.commit().await?;
        processed += acked;
    }
    Ok(Outcome::Consumed {
        processed,
        quarantined,
        poison_left,
    })
}

/// The consumer's business logic.
fn handle(_event: &Event, _payload: &EventPayload) {}
