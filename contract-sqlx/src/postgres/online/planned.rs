//! Online type changes the planner chose (`ApplyOptions::online_threshold_rows`): the
//! table sizes it chooses by, and the apply of a plan holding such steps.
//!
//! The plan's other steps run first, as any plan's do (their own transaction or phases,
//! their own audit row). Then each online step runs [`change_type_online`] under a
//! session advisory lock of the tenant's online work (so two replicas never backfill the
//! same tenant at once; a killed process releases it with its connection), and one audit
//! row records what the online steps did. A run killed mid-backfill leaves the checkpoint:
//! the next pass plans the same step (the shadow column is an extra column, not drift),
//! with the same hash, and the procedure resumes after the last committed batch.

use std::time::Instant;

use contract_core::plan::PlanStep;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, PgPool, Postgres, SqlSafeStr};

use super::{OnlineReport, OnlineTypeChange, change_type_online};
use crate::error::{Error, Result};
use crate::remediation::{ApplyJob, AuditRecord, elapsed_ms, failed, new_audit_id};

/// `pg_class.reltuples` of each `(schema, table)`, in order; `None` for a table not found
/// or never analysed (PostgreSQL 14+ says `-1`).
pub(in crate::postgres) async fn row_estimates(
    pool: &PgPool,
    tables: &[(String, String)],
) -> Result<Vec<Option<u64>>> {
    let (schemas, names): (Vec<&str>, Vec<&str>) =
        tables.iter().map(|(s, t)| (s.as_str(), t.as_str())).unzip();
    // language=SQL
    let rows: Vec<Option<i64>> = sqlx::query_scalar(
        "SELECT (SELECT c.reltuples::int8 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = t.s AND c.relname = t.r AND c.reltuples >= 0)
         FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(s, r, i) ORDER BY t.i",
    )
    .bind(schemas)
    .bind(names)
    .fetch_all(pool)
    .await
    .map_err(Error::db("reading table size estimates", None))?;
    Ok(rows
        .into_iter()
        .map(|r| r.and_then(|n| u64::try_from(n).ok()))
        .collect())
}

/// Applies `job`, whose steps include online type changes (see the module documentation).
pub(in crate::postgres) async fn apply_online(
    pool: &PgPool,
    job: &ApplyJob<'_, Postgres>,
) -> Result<AuditRecord> {
    let started = Instant::now();
    let tenant = job.tenant.as_str();
    let (online, rest): (Vec<&PlanStep>, Vec<&PlanStep>) =
        job.steps.iter().copied().partition(|s| s.online.is_some());
    let (mut statements, mut attempts, mut progress) = (Vec::new(), 1, Vec::new());
    if !rest.is_empty() {
        let first = ApplyJob {
            steps: rest,
            planned_on: job.planned_on.clone(),
            drift_before: job.drift_before.clone(),
            ..*job
        };
        let record = crate::postgres::apply::apply_statements(pool, &first).await?;
        statements.extend(record.statements);
        attempts = record.attempts;
    }
    // The tenant's online work, one replica at a time: a session lock on a connection of
    // its own, released when it closes (also when the process dies).
    let mut lock = pool.connect_options().connect().await.map_err(failed(
        tenant,
        1,
        "connect for the online lock",
    ))?;
    sqlx::query("SELECT set_config('statement_timeout', $1, false)")
        .bind(crate::postgres::apply::millis(
            job.options.advisory_lock_wait,
        ))
        .execute(&mut lock)
        .await
        .map_err(failed(tenant, 1, "online lock"))?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(crate::postgres::ddl::lock_key(&format!(
            "contract:online:{tenant}"
        )))
        .execute(&mut lock)
        .await
        .map_err(failed(tenant, 1, "online lock"))?;
    let options = job.options;
    let mut outcome = Ok(());
    for step in &online {
        let Some(planned) = &step.online else {
            continue;
        };
        let change = OnlineTypeChange::new(
            &planned.schema,
            &step.table,
            &planned.column,
            &planned.new_type,
        )
        .batches(options.online_batch_rows, options.online_pause)
        .lock(options.lock_timeout, options.max_attempts);
        tracing::info!(tenant, table = %step.table, column = %planned.column, new_type = %planned.new_type, rows_estimate = planned.rows_estimate, "online type change starts");
        match change_type_online(pool, &change).await {
            Ok(report) => {
                attempts = attempts.max(report.swap_attempts);
                statements.push(summary(&change, &report));
                progress.extend(report.progress);
            }
            Err(error) => {
                outcome = Err(error);
                break;
            }
        }
    }
    // Closing the connection releases the lock.
    let _ = lock.close().await;
    outcome?;
    let audit_id = new_audit_id();
    let duration_ms = elapsed_ms(started);
    insert_audit(pool, job, &audit_id, &statements, attempts, duration_ms).await?;
    let mut record = AuditRecord::applied(job, audit_id, statements, attempts, duration_ms);
    record.progress = progress;
    Ok(record)
}

/// What one online change did, as the audit row and the execution log show it (an SQL
/// comment: the statements themselves ran batch by batch).
fn summary(change: &OnlineTypeChange, report: &OnlineReport) -> String {
    let seconds = report.backfill_ms.max(1) as f64 / 1000.0;
    #[allow(clippy::cast_precision_loss)]
    let rate = (report.rows_backfilled as f64 / seconds).round();
    let resumed = report
        .resumed_from
        .map(|key| format!(", resumed after key {key}"))
        .unwrap_or_default();
    format!(
        "-- online type change {}.{}.{} to {}: {} of about {} rows backfilled in {} batches ({rate} rows/s{resumed}), swap in {} attempt(s), {} ms",
        change.schema,
        change.table,
        change.column,
        change.new_type,
        report.rows_backfilled,
        report.rows_estimate.round(),
        report.batches,
        report.swap_attempts,
        report.total_ms
    )
}

async fn insert_audit(
    pool: &PgPool,
    job: &ApplyJob<'_, Postgres>,
    audit_id: &str,
    statements: &[String],
    attempts: u32,
    duration_ms: u64,
) -> Result<()> {
    let audit = &job.options.audit;
    let table =
        contract_core::Dialect::Postgres.quote_qualified(Some(&audit.schema), &audit.table)?;
    // language=SQL
    let insert = format!(
        "INSERT INTO {table} (audit_id, tenant, plan_hash, statements, drift_before, status, actor, attempts, started_at, finished_at, duration_ms, approval_id, approved_by)
         VALUES ($1, $2, $3, $4, $5, 'applied', $6, $7, now(), clock_timestamp(), $8, $9, $10)"
    );
    sqlx::query(AssertSqlSafe(insert).into_sql_str())
        .bind(audit_id)
        .bind(job.tenant.as_str())
        .bind(&job.plan.hash)
        .bind(sqlx::types::Json(statements))
        .bind(sqlx::types::Json(&job.drift_before))
        .bind(&audit.actor)
        .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
        .bind(i64::try_from(duration_ms).unwrap_or(i64::MAX))
        .bind(job.approval.and_then(|a| a.id.as_deref()))
        .bind(job.approval.map(|a| a.approver.as_str()))
        .execute(pool)
        .await
        .map_err(failed(job.tenant.as_str(), attempts, "audit row"))?;
    Ok(())
}
