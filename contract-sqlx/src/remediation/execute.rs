//! Applying decided plans: one transaction per tenant (never across tenants), tenants in
//! parallel up to a bound, each under its own lock with its own audit row.

use std::collections::HashMap;
use std::time::Instant;

use contract_core::plan::TenantPlan;
use contract_core::{Finding, LiveTable, TenantName};
use futures_util::StreamExt as _;
use sqlx::Pool;
use tracing::Instrument as _;

use super::plan::Planned;
use super::{ApplyJob, ApplyOptions, AuditRecord, elapsed_ms};
use crate::backend::Backend;
use crate::check::ContractSet;
use crate::error::{Error, Result};

/// The approval that covers a plan's hazardous steps (recorded in the audit row).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApprovalRef {
    /// The approval's id (`Approved(hash)` policies have none).
    pub id: Option<String>,
    /// Who approved.
    pub approver: String,
}

/// One tenant's apply as decided: the plan, which of its steps run, and under which
/// approval.
#[derive(Debug)]
pub(crate) struct Task<DB: Backend> {
    pub pool: Pool<DB>,
    pub tenant: TenantName,
    pub plan: TenantPlan,
    /// Indexes into `plan.steps`, in plan order.
    pub steps: Vec<usize>,
    pub planned_on: Vec<LiveTable>,
    /// The findings the tenant had (the audit row keeps the ones the steps fix).
    pub findings: Vec<Finding>,
    pub approval: Option<ApprovalRef>,
}

impl<DB: Backend> Task<DB> {
    /// A task for `planned` on `pool`, running the steps at `steps`.
    pub fn new(
        pool: Pool<DB>,
        planned: Planned,
        steps: Vec<usize>,
        approval: Option<ApprovalRef>,
    ) -> Self {
        Self {
            pool,
            tenant: planned.tenant,
            plan: planned.plan,
            steps,
            planned_on: planned.planned_on,
            findings: planned.findings,
            approval,
        }
    }
}

/// What became of one task.
#[derive(Debug)]
pub(crate) struct Done {
    pub tenant: String,
    pub result: Result<AuditRecord>,
    pub duration_ms: u64,
}

/// Applies `tasks`, at most `options.parallelism` tenants at a time, after ensuring each
/// pool's shared audit table once. Results come back in task order.
pub(crate) async fn apply_all<DB: Backend>(
    tasks: &[Task<DB>],
    contracts: &ContractSet<DB>,
    options: &ApplyOptions,
) -> Vec<Done> {
    // A pool-wide audit table (PostgreSQL) is ensured once per database, before its
    // applies; a failure fails that database's tenants only.
    let mut ensured: HashMap<String, Option<String>> = HashMap::new();
    let keys: Vec<String> = tasks.iter().map(|t| DB::describe_pool(&t.pool)).collect();
    for (task, key) in tasks.iter().zip(&keys) {
        if !ensured.contains_key(key) {
            let error = DB::ensure_audit_table(&task.pool, &options.audit)
                .await
                .err()
                .map(|e| crate::error::error_chain(&e));
            ensured.insert(key.clone(), error);
        }
    }
    let parallelism = options.parallelism.max(1);
    // Futures built in a loop (not a closure in the stream): the guard's pass runs this in
    // a spawned task, which needs the stream's futures to be `Send` for every lifetime.
    let mut applies = Vec::with_capacity(tasks.len());
    for (i, (task, key)) in tasks.iter().zip(&keys).enumerate() {
        let audit_table_error = ensured.get(key).cloned().flatten();
        applies.push(async move {
            (
                i,
                apply_one(task, contracts, options, audit_table_error).await,
            )
        });
    }
    let mut done: Vec<(usize, Done)> = futures_util::stream::iter(applies)
        .buffer_unordered(parallelism)
        .collect()
        .await;
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, d)| d).collect()
}

async fn apply_one<DB: Backend>(
    task: &Task<DB>,
    contracts: &ContractSet<DB>,
    options: &ApplyOptions,
    audit_table_error: Option<String>,
) -> Done {
    let started = Instant::now();
    let tenant = task.tenant.to_string();
    if let Some(error) = audit_table_error {
        return Done {
            tenant: tenant.clone(),
            result: Err(Error::AuditTable { tenant, error }),
            duration_ms: 0,
        };
    }
    let steps: Vec<_> = task.steps.iter().map(|&i| &task.plan.steps[i]).collect();
    let job = ApplyJob {
        tenant: &task.tenant,
        plan: &task.plan,
        drift_before: fixed_by(&steps, &task.findings),
        steps,
        planned_on: task.planned_on.iter().collect(),
        contracts,
        options,
        approval: task.approval.as_ref(),
    };
    let span = tracing::info_span!(
        "contract.apply",
        tenant = %task.tenant,
        plan_hash = %task.plan.hash,
        steps = job.steps.len(),
        approval = task.approval.as_ref().and_then(|a| a.id.as_deref()).unwrap_or(""),
    );
    let result = DB::apply(&task.pool, &job).instrument(span).await;
    if let Err(error @ Error::StalePlan { .. }) = &result {
        tracing::info!(tenant = %task.tenant, %error, "plan skipped: the tenant changed since it was planned");
    }
    Done {
        tenant,
        result,
        duration_ms: elapsed_ms(started),
    }
}

/// The findings `steps` fix (what the audit row records as the drift before): a reconciled
/// audit row is judged by whether exactly these are gone.
fn fixed_by<'f>(
    steps: &[&contract_core::plan::PlanStep],
    findings: &'f [Finding],
) -> Vec<&'f Finding> {
    findings
        .iter()
        .filter(|f| {
            steps.iter().any(|s| {
                s.table == f.table
                    && s.fixes == f.kind
                    && (s.column.is_none() || s.column == f.column)
            })
        })
        .collect()
}
