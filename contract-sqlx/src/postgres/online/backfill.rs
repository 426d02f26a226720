//! The batched backfill of an online type change: by primary-key range, each batch its own
//! short transaction that also advances the stored checkpoint, so a killed run resumes.

use std::time::Instant;

use sqlx::{AssertSqlSafe, PgPool, SqlSafeStr};

use super::type_change::{Names, OnlineReport, OnlineTypeChange};
use crate::error::{Error, Result};

/// Backfills from `last_key` (exclusive) to the end, then marks the checkpoint `verify`.
pub(super) async fn run(
    pool: &PgPool,
    change: &OnlineTypeChange,
    names: &Names,
    pk: &str,
    last_key: Option<i64>,
    report: &mut OnlineReport,
) -> Result<()> {
    let db = |context| Error::db(context, Some(change.schema.as_str()));
    // language=SQL
    let batch = format!(
        "WITH batch AS (SELECT {pk} FROM {t} WHERE ($1::int8 IS NULL OR {pk} > $1) ORDER BY {pk} LIMIT $2),
              done AS (UPDATE {t} SET {s} = {c}::{ty} FROM batch WHERE {t}.{pk} = batch.{pk} RETURNING {t}.{pk})
         SELECT max({pk})::int8, count(*)::int8 FROM done",
        t = names.table,
        s = names.shadow,
        c = names.column,
        ty = change.new_type,
    );
    // language=SQL
    let checkpoint = format!(
        "UPDATE {} SET last_key = $2, rows_done = rows_done + $3, updated_at = now() WHERE change = $1",
        names.progress
    );
    let total = report.rows_estimate.max(0.0);
    let started = Instant::now();
    let mut key = last_key;
    loop {
        let mut tx = pool.begin().await.map_err(db("a backfill batch"))?;
        let (max, rows): (Option<i64>, i64) =
            sqlx::query_as(AssertSqlSafe(batch.clone()).into_sql_str())
                .bind(key)
                .bind(i64::from(change.batch_rows))
                .fetch_one(&mut *tx)
                .await
                .map_err(db("a backfill batch"))?;
        let Some(max) = max else {
            break;
        };
        sqlx::query(AssertSqlSafe(checkpoint.clone()).into_sql_str())
            .bind(&names.key)
            .bind(max)
            .bind(rows)
            .execute(&mut *tx)
            .await
            .map_err(db("the backfill checkpoint"))?;
        tx.commit().await.map_err(db("a backfill batch"))?;
        key = Some(max);
        report.rows_backfilled += rows;
        report.batches += 1;
        if report.batches % 20 == 1 {
            progress(change, report, total, started);
        }
        if !change.pause.is_zero() {
            tokio::time::sleep(change.pause).await;
        }
    }
    sqlx::query(
        AssertSqlSafe(format!(
            "UPDATE {} SET state = 'verify', updated_at = now() WHERE change = $1",
            names.progress
        ))
        .into_sql_str(),
    )
    .bind(&names.key)
    .execute(pool)
    .await
    .map_err(db("the backfill checkpoint"))?;
    progress(change, report, total, started);
    Ok(())
}

/// Rows done of the estimate, the rate and the time left, in the log and as metrics.
fn progress(change: &OnlineTypeChange, report: &OnlineReport, total: f64, started: Instant) {
    let seconds = started.elapsed().as_secs_f64().max(0.001);
    #[allow(clippy::cast_precision_loss)]
    let done = report.rows_backfilled as f64;
    let rate = done / seconds;
    let eta = if rate > 0.0 {
        ((total - done).max(0.0) / rate).round()
    } else {
        0.0
    };
    tracing::info!(
        schema = %change.schema,
        table = %change.table,
        column = %change.column,
        rows_done = report.rows_backfilled,
        rows_total = total,
        rows_per_s = rate.round(),
        eta_s = eta,
        "online backfill progress"
    );
    // No tenant labels on metrics (the tenant is in the log line above): the gauges tell
    // the backfill's progress, whichever tenant it is running on.
    // The estimate comes from `pg_class.reltuples`: never negative, far below `u64::MAX`.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let total_rows = total.max(0.0).round() as u64;
    crate::telemetry::gauge(
        "contract_online_backfill_rows_done",
        u64::try_from(report.rows_backfilled).unwrap_or(0),
    );
    crate::telemetry::gauge("contract_online_backfill_rows_total", total_rows);
}
