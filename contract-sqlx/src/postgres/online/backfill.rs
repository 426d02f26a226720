//! The batched backfill of an online type change: by primary-key range, each batch its own
//! short transaction that also advances the stored checkpoint, so a killed run resumes.

use std::time::{Duration, Instant};

use contract_core::BackfillProgress;
use sqlx::{AssertSqlSafe, PgPool, SqlSafeStr};

use super::type_change::{Names, OnlineReport, OnlineTypeChange};
use crate::error::Result;

/// How often a running backfill logs its progress and keeps a sample for the execution log
/// (its gauges move after every batch).
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Backfills from `last_key` (exclusive) to the end, then marks the checkpoint `verify`.
pub(super) async fn run(
    pool: &PgPool,
    change: &OnlineTypeChange,
    names: &Names,
    pk: &str,
    last_key: Option<i64>,
    report: &mut OnlineReport,
) -> Result<()> {
    let db = |context| super::step_failed(context, change.tenant());
    // One key range per batch: its upper bound from the key index, then the rows in it
    // whose shadow is not already right (the trigger keeps up rows written meanwhile).
    // Every condition is a plain range on the key, so even the generic plan of this
    // prepared statement is an index range scan (an earlier `$1 IS NULL OR key > $1`
    // was not: each batch sorted the whole table, 0.7 s per batch at 2M rows).
    // language=SQL
    let batch = format!(
        "WITH bound AS (SELECT max({pk})::int8 AS hi, count(*)::int8 AS n
                        FROM (SELECT {pk} FROM {t} WHERE {pk} > $1 ORDER BY {pk} LIMIT $2) b),
              done AS (UPDATE {t} SET {s} = {c}::{ty}
                       WHERE {pk} > $1 AND {pk} <= (SELECT hi FROM bound) AND {s} IS DISTINCT FROM {c}::{ty}
                       RETURNING 1)
         SELECT (SELECT hi FROM bound), (SELECT n FROM bound), (SELECT count(*)::int8 FROM done)",
        t = names.table,
        s = names.shadow,
        c = names.column,
        ty = change.new_type,
    );
    // language=SQL
    let checkpoint = format!(
        "UPDATE {} SET last_key = $2, rows_done = rows_done + $3, updated_at = now() WHERE change = $1
         RETURNING rows_done",
        names.progress
    );
    let mut pass = Pass::new(change, report);
    let mut key = last_key;
    loop {
        let batch_started = Instant::now();
        let mut tx = pool.begin().await.map_err(db("a backfill batch"))?;
        // The commit need not wait for its WAL flush: a batch lost in a server crash is
        // lost with its checkpoint (same transaction) and done again on resume; WAL is
        // replayed in order, so the synchronous commits after it (a writer's, the
        // `verify` mark, the swap) flush it first (the copy module's documentation).
        sqlx::query("SELECT set_config('synchronous_commit', 'off', true)")
            .execute(&mut *tx)
            .await
            .map_err(db("a backfill batch"))?;
        let (max, rows, _written): (Option<i64>, i64, i64) =
            sqlx::query_as(AssertSqlSafe(batch.clone()).into_sql_str())
                .bind(key.unwrap_or(i64::MIN))
                .bind(i64::from(pass.rows_next()))
                .fetch_one(&mut *tx)
                .await
                .map_err(db("a backfill batch"))?;
        let Some(max) = max else {
            break;
        };
        let done: i64 = sqlx::query_scalar(AssertSqlSafe(checkpoint.clone()).into_sql_str())
            .bind(&names.key)
            .bind(max)
            .bind(rows)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("the backfill checkpoint"))?;
        tx.commit().await.map_err(db("a backfill batch"))?;
        key = Some(max);
        pass.committed(change, report, rows, done, batch_started)
            .await;
    }
    pass.finish(pool, change, &names.progress, &names.key, report)
        .await
}

/// The bookkeeping of a batched pass, the shadow column's backfill or the table copy's:
/// the size of the next batch, the counters, the progress gauges and samples, the pause,
/// and the end (the checkpoint marked `verify`).
pub(super) struct Pass {
    total: f64,
    started: Instant,
    sampled: Instant,
    rows_next: u32,
}

impl Pass {
    /// A pass starting now, toward the report's row estimate.
    pub(super) fn new(change: &OnlineTypeChange, report: &OnlineReport) -> Self {
        let now = Instant::now();
        Self {
            total: report.rows_estimate.max(0.0),
            started: now,
            sampled: now,
            // A writer that touches a row of the running batch waits for its commit, so a
            // batch is sized to take about `batch_time`: at most `batch_rows`, fewer on a
            // slow or busy server (measured at 2M rows on a loaded 2-core machine: fixed
            // batches of 10,000 took up to 470 ms, and a writer waited 280 ms; sized to
            // 100 ms, the longest wait was 236-256 ms, the reader's, which row locks do
            // not stop, 65-95 ms).
            rows_next: change.batch_rows,
        }
    }

    /// Rows the next batch takes at most.
    pub(super) fn rows_next(&self) -> u32 {
        self.rows_next
    }

    /// Counts a committed batch of `rows` rows begun at `batch_started` (`done`: the
    /// checkpoint's rows so far), sizes the next one, sets the gauges, keeps a sample
    /// (the first batch's, then one every [`PROGRESS_EVERY`]) and pauses.
    pub(super) async fn committed(
        &mut self,
        change: &OnlineTypeChange,
        report: &mut OnlineReport,
        rows: i64,
        done: i64,
        batch_started: Instant,
    ) {
        report.rows_backfilled += rows;
        report.batches += 1;
        self.rows_next = next_size(self.rows_next, batch_started.elapsed(), change);
        crate::telemetry::count(
            crate::guard::metrics::ONLINE_BACKFILL_ROWS_COPIED_TOTAL,
            u64::try_from(rows).unwrap_or(0),
        );
        let sample = progress(change, report, done, self.total, self.started, false);
        if report.batches == 1 || self.sampled.elapsed() >= PROGRESS_EVERY {
            self.sampled = Instant::now();
            keep(change, report, sample);
        }
        if !change.pause.is_zero() {
            tokio::time::sleep(change.pause).await;
        }
    }

    /// Marks the checkpoint row `key` of the `progress` table (quoted) `verify`, records
    /// the pass's time and keeps the last sample.
    pub(super) async fn finish(
        self,
        pool: &PgPool,
        change: &OnlineTypeChange,
        progress_table: &str,
        key: &str,
        report: &mut OnlineReport,
    ) -> Result<()> {
        let done: i64 = sqlx::query_scalar(
            AssertSqlSafe(format!(
                "UPDATE {progress_table} SET state = 'verify', updated_at = now() WHERE change = $1 RETURNING rows_done"
            ))
            .into_sql_str(),
        )
        .bind(key)
        .fetch_one(pool)
        .await
        .map_err(super::step_failed("the backfill checkpoint", change.tenant()))?;
        report.backfill_ms = crate::remediation::elapsed_ms(self.started);
        let last = progress(change, report, done, self.total, self.started, true);
        keep(change, report, last);
        Ok(())
    }
}

/// The size of the next batch: scaled so it takes about `batch_time`, between 100 rows
/// (or `batch_rows` if smaller) and `batch_rows`, changing at most twofold at a time.
fn next_size(rows: u32, took: std::time::Duration, change: &OnlineTypeChange) -> u32 {
    let target = change.batch_time.as_secs_f64();
    let took = took.as_secs_f64().max(0.000_1);
    let scale = (target / took).clamp(0.5, 2.0);
    let floor = change.batch_rows.min(100);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let next = (f64::from(rows) * scale).round() as u32;
    next.clamp(floor, change.batch_rows)
}

/// Rows done of the estimate, the rate and the time left, set as gauges (after every
/// batch) and returned as a sample (which the first batch, one batch every
/// [`PROGRESS_EVERY`] and the end [`keep`]). `done` counts the rows of interrupted runs too.
fn progress(
    change: &OnlineTypeChange,
    report: &OnlineReport,
    done: i64,
    total: f64,
    started: Instant,
    end: bool,
) -> BackfillProgress {
    let elapsed = started.elapsed();
    let seconds = elapsed.as_secs_f64().max(0.001);
    #[allow(clippy::cast_precision_loss)]
    let rate = report.rows_backfilled as f64 / seconds;
    #[allow(clippy::cast_precision_loss)]
    let left = (total - done as f64).max(0.0);
    let eta = if end || rate <= 0.0 {
        0.0
    } else {
        (left / rate).round()
    };
    // The estimate comes from `pg_class.reltuples`, the rate and ETA from this run: never
    // negative, far below `u64::MAX`.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let whole = |x: f64| x.max(0.0).round() as u64;
    let sample = BackfillProgress::new(
        format!("{}.{}.{}", change.schema, change.table, change.column),
        u64::try_from(done).unwrap_or(0),
        whole(total),
        whole(rate),
        whole(eta),
        crate::remediation::elapsed_ms(started),
    );
    // No tenant labels on metrics (the tenant is in the log line below): the gauges tell
    // the running backfill's progress, whichever tenant it is running on.
    use crate::guard::metrics as m;
    crate::telemetry::gauge(m::ONLINE_BACKFILL_ROWS_DONE, sample.rows_done);
    crate::telemetry::gauge(m::ONLINE_BACKFILL_ROWS_ESTIMATE, sample.rows_total);
    crate::telemetry::gauge(m::ONLINE_BACKFILL_ROWS_PER_SECOND, sample.rows_per_s);
    crate::telemetry::gauge(m::ONLINE_BACKFILL_ETA_SECONDS, sample.eta_s);
    sample
}

/// Logs `sample` and keeps it for the execution log.
fn keep(change: &OnlineTypeChange, report: &mut OnlineReport, sample: BackfillProgress) {
    tracing::info!(
        schema = %change.schema,
        table = %change.table,
        column = %change.column,
        rows_done = sample.rows_done,
        rows_total = sample.rows_total,
        rows_per_s = sample.rows_per_s,
        eta_s = sample.eta_s,
        batches = report.batches,
        "online backfill progress"
    );
    report.progress.push(sample);
}
