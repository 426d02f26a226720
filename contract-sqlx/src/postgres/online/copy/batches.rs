//! The copy's batches: by primary-key range, each its own short transaction that also
//! advances the stored checkpoint, so a killed run resumes after the last one committed.

use std::time::Instant;

use sqlx::{AssertSqlSafe, PgPool, Row};

use super::CopyNames;
use super::create::column_lists;
use super::qualify::Layout;
use crate::error::{Error, Result};
use crate::postgres::online::backfill::Pass;
use crate::postgres::online::type_change::{OnlineReport, OnlineTypeChange};

/// Deadlocks with writers a copy retries before it gives up (the checkpoint stays).
const MAX_DEADLOCKS: u32 = 100;

/// SQLSTATE `deadlock_detected`.
fn is_deadlock(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|c| c == "40P01")
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
    let db = |context| Error::db(context, Some(change.schema.as_str()));
    let pk = contract_core::Dialect::Postgres.quote(&layout.pk)?;
    let (columns, values) = column_lists(layout, change, "")?;
    let key_literal = contract_core::Dialect::Postgres.string_literal(&names.key)?;
    // After the batch lock (the module documentation says why), one statement: the
    // range's upper bound from the key index, its rows inserted unless the trigger has
    // already written them, and the checkpoint advanced.
    // language=SQL
    let batch = |after: i64, rows: u32| {
        format!(
            "BEGIN;
             SELECT set_config('synchronous_commit', 'off', true), pg_advisory_xact_lock({lock});
             WITH bound AS (SELECT max({pk})::int8 AS hi, count(*)::int8 AS n
                            FROM (SELECT {pk} FROM {t} WHERE {pk} > '{after}'::int8 ORDER BY {pk} LIMIT {rows}) b),
                  src AS (SELECT {columns} FROM {t} WHERE {pk} > '{after}'::int8 AND {pk} <= (SELECT hi FROM bound)),
                  ins AS (INSERT INTO {n} ({columns}) SELECT {values} FROM src ON CONFLICT DO NOTHING RETURNING 1),
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
    let mut deadlocks = 0;
    loop {
        let batch_started = Instant::now();
        // One round trip: the statements of one transaction sent together (each still
        // takes its own snapshot); a failed one leaves the transaction aborted, rolled
        // back before the connection goes back to the pool. A batch lost in a server
        // crash (`synchronous_commit` off) is lost with its checkpoint and done again.
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
            Err(error) if is_deadlock(&error) && deadlocks < MAX_DEADLOCKS => {
                deadlocks += 1;
                tracing::warn!(table = %names.table, deadlocks, "a copy batch deadlocked with a writer; retrying it");
                continue;
            }
            Err(error) => return Err(db("a copy batch")(error)),
        };
        let Some(max) = max else {
            break;
        };
        key = Some(max);
        pass.committed(change, report, rows, done, batch_started)
            .await;
    }
    pass.finish(pool, change, &names.progress, &names.key, report)
        .await
}
