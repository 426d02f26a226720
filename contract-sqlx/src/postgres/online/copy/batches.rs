//! The copy's batches: by primary-key range, each its own short transaction that also
//! advances the stored checkpoint, so a killed run resumes after the last one committed.

use std::time::Instant;

use sqlx::{AssertSqlSafe, PgPool, Row};

use super::CopyNames;
use super::create::column_lists;
use super::qualify::Layout;
use crate::error::Result;
use crate::postgres::online::backfill::Pass;
use crate::postgres::online::type_change::{OnlineReport, OnlineTypeChange};

/// Times a copy retries one batch after conflicts with writers before it gives up (the
/// checkpoint stays).
const MAX_CONFLICTS: u32 = 100;

/// A batch that conflicted with a writer and is retried: SQLSTATE `deadlock_detected`, or
/// `unique_violation` (a writer's trigger inserted a key of the batch, uncommitted when
/// the batch read the new table, committed before the batch's insert could go on).
fn is_conflict(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|c| c == "40P01" || c == "23505")
}

/// Copies from `last_key` (exclusive) to the end, then marks the checkpoint `verify`.
pub(super) async fn run(
    pool: &PgPool,
    change: &OnlineTypeChange,
    names: &CopyNames,
    layout: &Layout,
    last_key: Option<i64>,
    report: &mut OnlineReport,
) -> Result<()> {
    let db = |context| super::super::step_failed(context, change.tenant());
    let pk = contract_core::Dialect::Postgres.quote(&layout.pk)?;
    let (columns, values) = column_lists(layout, change, "")?;
    let key_literal = contract_core::Dialect::Postgres.string_literal(&names.key)?;
    // After the batch lock (the module documentation says why), one statement: the
    // range's upper bound from the key index, its rows inserted unless the trigger has
    // already written them, and the checkpoint advanced. A plain insert with `NOT EXISTS`,
    // not `ON CONFLICT DO NOTHING`: a speculative insertion costs every row a second WAL
    // record and its own lock (a key the trigger inserts meanwhile fails the batch
    // instead, which is retried). The key range is repeated in `NOT EXISTS` so that
    // whatever join the planner picks reads only the range of the new table (without it,
    // a hash anti-join read the whole new table per batch: quadratic).
    // language=SQL
    let batch = |after: i64, rows: u32| {
        format!(
            "BEGIN;
             SELECT set_config('synchronous_commit', 'off', true), pg_advisory_xact_lock({lock});
             WITH bound AS (SELECT max({pk})::int8 AS hi, count(*)::int8 AS n
                            FROM (SELECT {pk} FROM {t} WHERE {pk} > '{after}'::int8 ORDER BY {pk} LIMIT {rows}) b),
                  src AS (SELECT {columns} FROM {t} WHERE {pk} > '{after}'::int8 AND {pk} <= (SELECT hi FROM bound)),
                  ins AS (INSERT INTO {n} ({columns}) SELECT {values} FROM src WHERE NOT EXISTS (SELECT 1 FROM {n} x
                              WHERE x.{pk} = src.{pk} AND x.{pk} > '{after}'::int8 AND x.{pk} <= (SELECT hi FROM bound)) RETURNING 1),
                  cp AS (UPDATE {p} SET last_key = (SELECT hi FROM bound), rows_done = rows_done + (SELECT n FROM bound),
                                updated_at = now() WHERE change = {k} AND (SELECT hi FROM bound) IS NOT NULL RETURNING rows_done)
             SELECT (SELECT hi FROM bound), (SELECT n FROM bound), (SELECT count(*)::int8 FROM ins), (SELECT rows_done FROM cp);
             COMMIT",
            lock = names.batch_lock,
            t = names.table,
            n = names.new,
            p = names.progress,
            k = key_literal,
        )
    };
    let mut pass = Pass::new(change, report);
    let mut key = last_key;
    let mut conflicts = 0;
    loop {
        let batch_started = Instant::now();
        // One round trip: the statements of one transaction sent together (each still
        // takes its own snapshot); a failed one leaves the transaction aborted, rolled
        // back before the connection goes back to the pool. A batch lost in a server
        // crash (`synchronous_commit` off) is lost with its checkpoint and done again
        // (the module documentation says why nothing else is lost).
        let sql = batch(key.unwrap_or(i64::MIN), pass.rows_next());
        let outcome = async {
            let mut conn = pool.acquire().await?;
            let result = sqlx::raw_sql(AssertSqlSafe(sql))
                .fetch_all(&mut *conn)
                .await;
            if result.is_err() {
                sqlx::raw_sql(AssertSqlSafe("ROLLBACK"))
                    .execute(&mut *conn)
                    .await?;
            }
            let row = result?.pop().ok_or(sqlx::Error::RowNotFound)?;
            Ok::<_, sqlx::Error>((
                row.try_get::<Option<i64>, _>(0)?,
                row.try_get::<Option<i64>, _>(1)?.unwrap_or(0),
                row.try_get::<Option<i64>, _>(3)?.unwrap_or(0),
            ))
        }
        .await;
        let (max, rows, done) = match outcome {
            Ok(done) => done,
            Err(error) if is_conflict(&error) && conflicts < MAX_CONFLICTS => {
                conflicts += 1;
                tracing::info!(table = %names.table, conflicts, %error, "a copy batch conflicted with a writer; retrying it");
                continue;
            }
            Err(error) => return Err(db("a copy batch")(error)),
        };
        let Some(max) = max else {
            break;
        };
        key = Some(max);
        conflicts = 0;
        pass.committed(change, report, rows, done, batch_started)
            .await;
    }
    pass.finish(pool, change, &names.progress, &names.key, report)
        .await
}
