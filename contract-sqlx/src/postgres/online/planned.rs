//! Online type changes the planner chose (`ApplyOptions::online_threshold_rows`): the
//! table sizes it chooses by, and the apply of a plan holding such steps.
//!
//! The plan's other steps run first, as any plan's do (their own transaction or phases,
//! their own audit row). Then each online step runs as `change_type_online` does (the
//! table's online lock, then its column checked as planned, then the change) under a
//! session advisory lock of the tenant's online work (so two replicas never backfill the
//! same tenant at once; a killed process releases it with its connection), and one audit
//! row records what the online steps did: the first swap's transaction writes it and each
//! later swap's adds its line, so no change commits without it (a cut, a kill or a
//! cancelled pass in between cannot separate them); once all are done the row is completed
//! with each change's figures. A run killed mid-backfill leaves the checkpoint:
//! the next pass plans the same step (the shadow column is an extra column, not drift),
//! with the same hash, and the procedure resumes after the last committed batch.

use std::time::Instant;

use contract_core::plan::PlanStep;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, PgPool, Postgres, SqlSafeStr};

use super::{OnlineReport, OnlineTypeChange};
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
    columns_as_planned(pool, job, &online).await?;
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
    super::type_change::keep_lock_session(&mut lock)
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
    let audit_id = new_audit_id();
    // Whether a swap has committed the audit row yet, and how many swaps have.
    let (mut written, mut swaps) = (false, 0_usize);
    let mut outcome = Ok(());
    for step in &online {
        let Some(planned) = &step.online else {
            continue;
        };
        let mut change = OnlineTypeChange::new(
            &planned.schema,
            &step.table,
            &planned.column,
            &planned.new_type,
        )
        .batches(options.online_batch_rows, options.online_pause)
        .lock(options.lock_timeout, options.max_attempts);
        change.tenant = Some(tenant.to_owned());
        // The audit row commits with the first swap (each later swap adds its line): a
        // change never commits without its row, whatever happens after it.
        let swapped = format!(
            "-- online type change {}.{}.{} to {}",
            change.schema, change.table, change.column, change.new_type
        );
        // Until the plan completes, the row says it is under way: a process killed (or a
        // pass cancelled) after this swap leaves that said.
        let under_way = format!(
            "under way: {} of the plan's {} online type changes swapped; a row left saying so \
             belongs to a plan that stopped (a killed process, a cancelled pass), and the next \
             pass plans the rest",
            swaps + 1,
            online.len()
        );
        let evidence = (swaps + 1 < online.len()).then_some(under_way.as_str());
        let record = if written {
            audit_update(job, &audit_id, Some(&swapped), evidence)
        } else {
            let mut so_far = statements.clone();
            so_far.push(swapped);
            crate::postgres::apply::audit_insert(
                job,
                &audit_id,
                &so_far,
                attempts,
                elapsed_ms(started),
            )
            .and_then(|insert| {
                Ok(format!(
                    "{insert};\n{}",
                    audit_update(job, &audit_id, None, evidence)?
                ))
            })
        };
        change.recorded_in_swap = Some(record.map_err(failed(tenant, attempts, "audit row"))?);
        // Each step, under the online lock, just before it starts: an earlier step's
        // backfill may have taken hours.
        // Under the table's online lock: another tenant's plan may have changed a table of
        // a contract's fixed schema while this one waited for it.
        let names = match super::type_change::Names::new(&change) {
            Ok(names) => names,
            Err(error) => {
                outcome = Err(error);
                break;
            }
        };
        let table_lock = match super::type_change::lock_table(pool, &change, &names).await {
            Ok(table_lock) => table_lock,
            Err(error) => {
                outcome = Err(error);
                break;
            }
        };
        if let Err(error) = columns_as_planned(pool, job, &[*step]).await {
            let _ = sqlx::Connection::close(table_lock).await;
            outcome = Err(error);
            break;
        }
        tracing::info!(tenant, table = %step.table, column = %planned.column, new_type = %planned.new_type, rows_estimate = planned.rows_estimate, "online type change starts");
        let changed = super::type_change::change_under_lock(pool, &change, &names).await;
        let _ = sqlx::Connection::close(table_lock).await;
        match changed {
            Ok(report) => {
                written = true;
                swaps += 1;
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
    if let Err(error) = &outcome {
        // The row (if a swap committed it: also one whose commit's answer was lost) says
        // what committed; it also says that the plan stopped after it, and why.
        let evidence = format!(
            "the plan stopped after the online type changes this row lists, of its {}: {}; the next pass plans the rest",
            online.len(),
            crate::error::error_chain(error)
        );
        settle_row(
            pool,
            job,
            &audit_id,
            None,
            Some(&evidence),
            attempts,
            elapsed_ms(started),
        )
        .await;
    }
    outcome?;
    let duration_ms = elapsed_ms(started);
    settle_row(
        pool,
        job,
        &audit_id,
        Some(&statements),
        None,
        attempts,
        duration_ms,
    )
    .await;
    let mut record = AuditRecord::applied(job, audit_id, statements, attempts, duration_ms);
    record.progress = progress;
    Ok(record)
}

/// Fails with [`Error::StalePlan`] unless each of `steps`' columns has the type it was
/// planned on. An online change casts whatever the column holds: a column changed by hand
/// meanwhile (say to `numeric(12,3)`) would be cast to the approved type, its fractions
/// silently rounded away. The job may have waited hours for its turn behind other
/// tenants' backfills, and a step behind an earlier step's, so this runs before the job
/// and again before each step. (The other steps' transaction re-checks its own tables
/// under the tenant's lock; they may change the rest of an online step's table.)
async fn columns_as_planned(
    pool: &PgPool,
    job: &ApplyJob<'_, Postgres>,
    steps: &[&PlanStep],
) -> Result<()> {
    let tenant = job.tenant.as_str();
    let column_of = |tables: &[&contract_core::LiveTable], step: &PlanStep| {
        let planned = step.online.as_ref()?;
        tables
            .iter()
            .find(|t| t.schema == planned.schema && t.name == step.table)
            .and_then(|t| t.columns.iter().find(|c| c.name == planned.column))
            .map(|c| (c.data_type.clone(), c.type_key.clone()))
    };
    let mut schemas: Vec<String> = steps
        .iter()
        .filter_map(|s| s.online.as_ref().map(|o| o.schema.clone()))
        .collect();
    let mut tables: Vec<String> = steps.iter().map(|s| s.table.clone()).collect();
    tables.sort_unstable();
    tables.dedup();
    schemas.sort_unstable();
    schemas.dedup();
    let stage = "re-introspect before the online change";
    let mut conn = pool.acquire().await.map_err(failed(tenant, 1, stage))?;
    let live = crate::postgres::recheck::reintrospect(&mut conn, &schemas, &tables, job.contracts)
        .await
        .map_err(failed(tenant, 1, stage))?;
    let live: Vec<&contract_core::LiveTable> = live.iter().collect();
    let unchanged = steps.iter().all(|step| {
        let before = column_of(&job.planned_on, step);
        before.is_some() && before == column_of(&live, step)
    });
    if unchanged {
        Ok(())
    } else {
        Err(Error::StalePlan {
            tenant: tenant.to_owned(),
        })
    }
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

/// The `UPDATE` a swap's transaction runs on the row the first swap wrote (literals: it
/// travels in the swap's message): its `line` added, and `evidence` set (or cleared).
fn audit_update(
    job: &ApplyJob<'_, Postgres>,
    audit_id: &str,
    line: Option<&str>,
    evidence: Option<&str>,
) -> std::result::Result<String, sqlx::Error> {
    let pg = contract_core::Dialect::Postgres;
    let encode = |e: contract_core::IdentError| sqlx::Error::Encode(Box::new(e));
    let literal = |value: &str| pg.string_literal(value).map_err(encode);
    let audit = &job.options.audit;
    let table = pg
        .quote_qualified(Some(&audit.schema), &audit.table)
        .map_err(encode)?;
    let add_line = match line {
        Some(line) => format!(
            "statements = statements || jsonb_build_array({}::text), ",
            literal(line)?
        ),
        None => String::new(),
    };
    let evidence = match evidence {
        Some(evidence) => literal(evidence)?,
        None => "NULL".to_owned(),
    };
    // language=SQL
    Ok(format!(
        "UPDATE {table} SET {add_line}evidence = {evidence}, finished_at = clock_timestamp() WHERE audit_id = {}",
        literal(audit_id)?,
    ))
}

/// Settles the row the swaps wrote (if one did): with each change's figures (`statements`)
/// when the plan completed, with why it stopped (`evidence`) when it did not; its attempts
/// and duration either way. Best effort: the row exists already, with a line per change.
async fn settle_row(
    pool: &PgPool,
    job: &ApplyJob<'_, Postgres>,
    audit_id: &str,
    statements: Option<&[String]>,
    evidence: Option<&str>,
    attempts: u32,
    duration_ms: u64,
) {
    let audit = &job.options.audit;
    let Ok(table) =
        contract_core::Dialect::Postgres.quote_qualified(Some(&audit.schema), &audit.table)
    else {
        return;
    };
    // language=SQL
    let update = format!(
        "UPDATE {table} SET statements = coalesce($1, statements), evidence = $2, attempts = $3,
             duration_ms = $4, finished_at = clock_timestamp() WHERE audit_id = $5"
    );
    let done = sqlx::query(AssertSqlSafe(update).into_sql_str())
        .bind(statements.map(sqlx::types::Json))
        .bind(evidence)
        .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
        .bind(i64::try_from(duration_ms).unwrap_or(i64::MAX))
        .bind(audit_id)
        .execute(pool)
        .await;
    if let Err(error) = done {
        tracing::warn!(tenant = %job.tenant, audit_id, error = %error, "the online change's audit row keeps what its swaps wrote: settling it failed");
    }
}
