//! A multi-transaction apply: each transaction under the tenant's advisory lock, its own
//! `lock_timeout` retries, and the audit row's progress committed with it.
//!
//! The first transaction re-checks the plan against the live schema (as a one-transaction
//! apply does) and inserts the audit row, `pending` with `phase = 1`; each later one checks
//! under the lock that the row still says it is next, runs, and advances it; the last sets
//! it `applied`. A crash or cancellation between transactions leaves the committed ones (a
//! valid schema: a constraint `NOT VALID` is enforced for new rows) and a pending row the
//! next pass resumes from ([`super::resume_pending`]).

use std::time::Instant;

use sqlx::{AssertSqlSafe, PgPool, Postgres, SqlSafeStr};

use crate::error::{Error, Result};
use crate::postgres::apply::{is_lock_conflict, set_local};
use crate::remediation::phases::{Transaction, all_statements, transactions};
use crate::remediation::{ApplyJob, ApplyOptions, AuditRecord, elapsed_ms, failed, new_audit_id};
use crate::remediation::{ApprovalRef, outcome_unknown};

/// One multi-transaction apply in progress (a fresh one, or one being resumed).
pub(super) struct Phased<'a> {
    pub pool: &'a PgPool,
    pub tenant: &'a str,
    pub plan_hash: &'a str,
    pub audit_id: String,
    pub transactions: Vec<Transaction>,
    pub options: &'a ApplyOptions,
}

/// What one transaction found under the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Progress {
    /// It ran and committed.
    Ran,
    /// Another replica already committed it.
    Skipped,
    /// The audit row is no longer pending (another replica finished or settled it).
    Settled,
}

/// The first insert's details (a fresh apply only).
struct Fresh<'a, 'j> {
    job: &'a ApplyJob<'j, Postgres>,
    approval: Option<&'a ApprovalRef>,
    /// What the first transaction dropped of an interrupted online change, once it
    /// committed (its audit row lists it first).
    dropped: std::sync::Mutex<Vec<String>>,
}

/// Applies `job`'s steps in their transactions (see the module documentation).
pub(in crate::postgres) async fn apply_phased(
    pool: &PgPool,
    job: &ApplyJob<'_, Postgres>,
) -> Result<AuditRecord> {
    let started = Instant::now();
    let run = Phased {
        pool,
        tenant: job.tenant.as_str(),
        plan_hash: &job.plan.hash,
        audit_id: new_audit_id(),
        transactions: transactions(&job.steps),
        options: job.options,
    };
    let fresh = Fresh {
        job,
        approval: job.approval,
        dropped: std::sync::Mutex::default(),
    };
    let attempts = run.run_from(0, Some(&fresh)).await?;
    // As the row lists them: what the first transaction dropped, then the plan's.
    let mut recorded = std::mem::take(
        &mut *fresh
            .dropped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    recorded.extend(all_statements(&run.transactions));
    Ok(AuditRecord::applied(
        job,
        run.audit_id.clone(),
        recorded,
        attempts,
        elapsed_ms(started),
    ))
}

impl Phased<'_> {
    /// Runs transactions `start..`, each with its own lock-timeout retries; the most
    /// attempts any of them took.
    async fn run_from(&self, start: usize, fresh: Option<&Fresh<'_, '_>>) -> Result<u32> {
        let mut most = 1;
        for index in start..self.transactions.len() {
            let (progress, attempts) = self.run_one(index, fresh.filter(|_| index == 0)).await?;
            most = most.max(attempts);
            if progress == Progress::Settled {
                break;
            }
        }
        Ok(most)
    }

    /// Resumes at transaction `start` (the audit row's `phase`); whether it ran to the
    /// end or found the row settled by someone else.
    pub(super) async fn resume(&self, start: usize) -> Result<Progress> {
        let mut last = Progress::Skipped;
        for index in start..self.transactions.len() {
            last = self.run_one(index, None).await?.0;
            if last == Progress::Settled {
                break;
            }
        }
        Ok(last)
    }

    /// Transaction `index`, retried on lock timeout; a failure after the first
    /// transaction is [`Error::PhaseFailed`].
    async fn run_one(
        &self,
        index: usize,
        fresh: Option<&Fresh<'_, '_>>,
    ) -> Result<(Progress, u32)> {
        let mut attempt = 1;
        loop {
            let started = Instant::now();
            match self.once(index, attempt, fresh).await {
                Ok(progress) => {
                    let txn = &self.transactions[index];
                    tracing::info!(
                        tenant = self.tenant,
                        transaction = index + 1,
                        of = self.transactions.len(),
                        phase = %txn.label,
                        lock = %txn.lock,
                        ?progress,
                        attempt,
                        duration_ms = elapsed_ms(started),
                        "remediation transaction"
                    );
                    return Ok((progress, attempt));
                }
                Err(Error::Apply { source, stage, .. })
                    if is_lock_conflict(&source) && attempt < self.options.max_attempts =>
                {
                    tracing::warn!(tenant = self.tenant, %stage, attempt, transaction = index + 1, error = %source, "lock conflict during remediation; retrying");
                    tokio::time::sleep(self.options.backoff(attempt)).await;
                    attempt += 1;
                }
                Err(Error::Apply {
                    source,
                    stage,
                    attempts,
                    ..
                }) if index > 0 => {
                    return Err(Error::PhaseFailed {
                        tenant: self.tenant.to_owned(),
                        phase: index + 1,
                        phases: self.transactions.len(),
                        stage: format!("{} at `{stage}`", self.transactions[index].label),
                        attempts,
                        audit_id: self.audit_id.clone(),
                        source: Box::new(source),
                    });
                }
                Err(other) => return Err(other),
            }
        }
    }

    async fn once(
        &self,
        index: usize,
        attempt: u32,
        fresh: Option<&Fresh<'_, '_>>,
    ) -> Result<Progress> {
        let tenant = self.tenant;
        let fail = |stage: &str| failed(tenant, attempt, stage);
        let started = Instant::now();
        let options = self.options;
        let mut tx = self.pool.begin().await.map_err(fail("begin"))?;
        set_local(&mut tx, "statement_timeout", options.advisory_lock_wait)
            .await
            .map_err(fail("set timeouts"))?;
        crate::postgres::ddl::xact_lock(&mut tx, &crate::postgres::ddl::tenant_lock_name(tenant))
            .await
            .map_err(fail("advisory lock"))?;
        // Everything after the tenant's lock is bounded as the DDL is (`advisory_lock_wait`
        // bounds that lock only: a table lock cancelled by it would not be retried).
        set_local(&mut tx, "lock_timeout", options.lock_timeout)
            .await
            .map_err(fail("set timeouts"))?;
        set_local(&mut tx, "statement_timeout", options.statement_timeout)
            .await
            .map_err(fail("set timeouts"))?;
        let table = contract_core::Dialect::Postgres
            .quote_qualified(Some(&options.audit.schema), &options.audit.table)?;
        // What an interrupted online change of a column changed in place left (`leftover.rs`).
        let mut cleanup = Vec::new();
        if let Some(fresh) = fresh {
            let (online_locks, blocks) = super::cleanup_before_plain(fresh.job)?;
            cleanup = blocks;
            // The tables' online locks, then what the re-check reads stays as it is until
            // the DDL (`table_lock.rs`).
            let rechecked = fresh.job.rechecked_tables();
            let table_locks = crate::postgres::table_lock::lock_statements(fresh.job, &rechecked)?;
            for lock in online_locks.into_iter().chain(table_locks) {
                sqlx::raw_sql(AssertSqlSafe(lock))
                    .execute(&mut *tx)
                    .await
                    .map_err(|source| {
                        crate::postgres::table_lock::lock_failed(tenant, source, fail("table lock"))
                    })?;
            }
            let live =
                crate::postgres::introspect_on(&mut tx, &fresh.job.schemas(), fresh.job.contracts)
                    .await
                    .map_err(fail("re-introspect under lock"))?;
            if !fresh.job.still_matches(&live) {
                return Err(Error::StalePlan {
                    tenant: tenant.to_owned(),
                });
            }
        } else {
            // language=SQL
            let read = format!("SELECT phase, status FROM {table} WHERE audit_id = $1 FOR UPDATE");
            let row: Option<(Option<i32>, String)> =
                sqlx::query_as(AssertSqlSafe(read).into_sql_str())
                    .bind(&self.audit_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(fail("audit row"))?;
            let done = row
                .as_ref()
                .and_then(|(phase, _)| usize::try_from(phase.unwrap_or(0)).ok());
            match (row.as_ref().map(|(_, s)| s.as_str()), done) {
                (Some("pending"), Some(done)) if done == index => {}
                (Some("pending"), Some(done)) if done > index => return Ok(Progress::Skipped),
                _ => return Ok(Progress::Settled),
            }
        }
        sqlx::query("SELECT set_config('search_path', 'pg_catalog, pg_temp', true), set_config('TimeZone', 'UTC', true)")
            .execute(&mut *tx)
            .await
            .map_err(fail("pin search_path"))?;
        for statement in cleanup.iter().chain(&self.transactions[index].statements) {
            sqlx::raw_sql(AssertSqlSafe(statement.clone()))
                .execute(&mut *tx)
                .await
                .map_err(fail(statement))?;
        }
        let committed = i32::try_from(index + 1).unwrap_or(i32::MAX);
        let status = if index + 1 == self.transactions.len() {
            "applied"
        } else {
            "pending"
        };
        let duration_ms = i64::try_from(elapsed_ms(started)).unwrap_or(i64::MAX);
        let attempts = i32::try_from(attempt).unwrap_or(i32::MAX);
        let mut dropped = Vec::new();
        if let Some(fresh) = fresh {
            // language=SQL
            let insert = format!(
                "INSERT INTO {table} (audit_id, tenant, plan_hash, statements, drift_before, status, actor, attempts, started_at, finished_at, duration_ms, approval_id, approved_by, phase, transactions)
                 VALUES ($1, $2, $3, {dropped} || $4, $5, $6, $7, $8, now(), clock_timestamp(), $9, $10, $11, $12, $13)
                 RETURNING {dropped}::text",
                dropped = super::leftover::DROPPED,
            );
            let row = sqlx::query(AssertSqlSafe(insert).into_sql_str())
                .bind(&self.audit_id)
                .bind(tenant)
                .bind(self.plan_hash)
                .bind(sqlx::types::Json(all_statements(&self.transactions)))
                .bind(sqlx::types::Json(&fresh.job.drift_before))
                .bind(status)
                .bind(&options.audit.actor)
                .bind(attempts)
                .bind(duration_ms)
                .bind(fresh.approval.and_then(|a| a.id.as_deref()))
                .bind(fresh.approval.map(|a| a.approver.as_str()))
                .bind(committed)
                .bind(sqlx::types::Json(&self.transactions))
                .fetch_one(&mut *tx)
                .await
                .map_err(fail("audit row"))?;
            dropped = super::leftover::dropped_statements(&row).map_err(fail("audit row"))?;
        } else {
            // language=SQL
            let update = format!(
                "UPDATE {table} SET phase = $2, status = $3, finished_at = clock_timestamp(),
                     duration_ms = duration_ms + $4, attempts = GREATEST(attempts, $5)
                 WHERE audit_id = $1"
            );
            sqlx::query(AssertSqlSafe(update).into_sql_str())
                .bind(&self.audit_id)
                .bind(committed)
                .bind(status)
                .bind(duration_ms)
                .bind(attempts)
                .execute(&mut *tx)
                .await
                .map_err(fail("audit row"))?;
        }
        tx.commit().await.map_err(|source| {
            if outcome_unknown(&source) {
                Error::OutcomeUnknown {
                    tenant: tenant.to_owned(),
                    stage: format!("commit of transaction {}", index + 1),
                    audit_id: self.audit_id.clone(),
                    source,
                }
            } else {
                fail("commit")(source)
            }
        })?;
        if let Some(fresh) = fresh {
            *fresh
                .dropped
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = dropped;
        }
        Ok(Progress::Ran)
    }
}
