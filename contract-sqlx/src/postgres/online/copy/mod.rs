//! The online type change by table copy: a new table with the new type, kept in sync by a
//! trigger on the old one, filled by batched `INSERT … SELECT`, verified, and swapped for
//! the old table in one short transaction. It writes every row once, sequentially, where
//! the shadow column updates every row in place (a new row version and an entry in every
//! index per row), so it takes a fraction of the time on a big table.
//!
//! # Phases
//!
//! 1. **Create** (one short transaction under `lock_timeout`, retried): `CREATE TABLE new
//!    (LIKE old INCLUDING ALL)`, its indexes renamed `<original>_ccopy` (the swap renames
//!    them back), its storage parameters set, the column's type changed while it is empty,
//!    the indexes that back no constraint dropped again (built after the copy: inserting
//!    into a table with its indexes took twice as long at 2M rows), the trigger created
//!    on the old table and the checkpoint row inserted. The trigger,
//!    `AFTER INSERT OR UPDATE OR DELETE … FOR EACH ROW`, upserts `NEW` (cast) into the new
//!    table by primary key and deletes `OLD`'s key on a delete or a key change.
//! 2. **Copy** by primary-key range, each batch its own transaction that also advances
//!    the checkpoint: the batch lock (a transaction-level advisory lock of this copy),
//!    then `INSERT INTO new SELECT … FROM old WHERE key in (last, hi] AND NOT EXISTS (the
//!    key in new)`. A killed run resumes after the last committed batch.
//! 3. **Verify**: the row count and a sum of a 64-bit hash of every row (the old one cast)
//!    over both tables, in one statement, so one snapshot (the trigger writes both tables
//!    in the writer's transaction, so any snapshot sees them alike). A difference drops
//!    the copy and the next pass starts again. Then the indexes left out are built
//!    `CONCURRENTLY` (the trigger's writes go on) and the copy is analysed.
//! 4. **Swap** (one short transaction under `lock_timeout`, retried): `ACCESS EXCLUSIVE` on
//!    the old table; owner, grants, comment and `serial` sequences moved to the new one;
//!    the trigger dropped, the old table and its indexes renamed away (`_contract_old`,
//!    `_cold`), the new one renamed into its place, its indexes (and with them their
//!    constraints) renamed back, the function and the checkpoint removed. The old table is
//!    dropped after the commit (a crash before leaves it for the next copy to drop).
//!
//! A crash at any point leaves the old table intact and authoritative: until the swap
//! commits it is the table, and the swap is one transaction. The next pass finds the
//! checkpoint and resumes (or, if the new table or the trigger is gone, or the table no
//! longer qualifies, drops what is left and starts again or takes the shadow column).
//!
//! # Why the batches commit with `synchronous_commit = off`
//!
//! A batch's commit returns without waiting for its WAL to reach the disk (`SET LOCAL`,
//! this transaction only; the server's setting is untouched). A server crash can then lose
//! the last batches that reported success, and nothing else:
//!
//! - A batch's rows and its checkpoint advance are one transaction: lost, they are lost
//!   together, and the checkpoint names the last batch that survived. The next pass
//!   resumes after it and copies the lost ranges again (`NOT EXISTS` skips any key the
//!   trigger wrote meanwhile).
//! - WAL is replayed in order up to the first record not on disk, so a lost batch takes
//!   only later WAL with it, and anything that committed synchronously after it forced
//!   it to disk first: a writer's commit (at the default `synchronous_commit`) whose
//!   trigger overwrote a batch's row, the `verify` mark of the checkpoint and the swap
//!   (both at the server's setting, `on` by default) flush every batch before them. So the swap never sees a copy
//!   that a crash could still take back.
//! - A killed client loses nothing: the server has every batch that committed.
//!
//! What it saves is the copy's own wait for a flush per batch; the WAL is the same, and the
//! writers' commits still flush whatever the copy wrote before them.
//!
//! # Why a concurrent write is never lost, resurrected or left stale
//!
//! From the moment the create transaction commits, every write to the old table runs the
//! trigger in its own transaction: the new table reflects it when, and only when, it
//! commits. A batch inserts the rows it reads as of its own snapshot and skips a key the
//! new table already has in that snapshot; a key inserted by a transaction still running
//! then makes the insert wait for it, and fail with a unique violation if it commits (the
//! batch is then retried, and skips the key). For a row `r` in a batch's range and a writer
//! `W`:
//!
//! - `W` **deletes** `r` or changes its key: its trigger takes the batch lock shared
//!   before deleting from the new table, and a batch holds it exclusively from before its
//!   snapshot (the `INSERT` is the next statement, so it reads as of after the lock) to
//!   its commit. If `W`'s trigger got the lock first, `W` commits before the batch gets
//!   it, so the batch's snapshot no longer has `r`. If the batch got it first, `W`'s
//!   trigger waits for the batch to commit and then (a new statement, a new snapshot)
//!   deletes the row the batch copied. Without the lock the batch could copy `r` from its
//!   snapshot after `W`'s trigger had found nothing to delete: a row resurrected.
//!   (Locking the batch's source rows `FOR KEY SHARE` is equally correct; it made every
//!   row of the copy cost a lock written to the old table, about twice the time.)
//! - `W` **updates** `r` (not its key): it takes no batch lock. Its trigger upserts the
//!   newest `r`. If
//!   that comes before the batch's insert, the batch finds the key and does nothing (if
//!   `W` has not committed, the batch waits for it: if `W` rolls back, the batch's older
//!   version is the right one; if it commits, the batch fails and its retry skips the
//!   key). If it comes after, `W`'s upsert waits for the batch's uncommitted
//!   row and then overwrites it. Either way the new table ends with `W`'s version.
//! - `W` **inserts** `r`: the trigger inserts it; a batch that reads it later skips it
//!   (or, as above, fails and its retry skips it).
//!
//! Rows past the last batch's bound were all written through the trigger, so the copy
//! stops when a batch finds no key after the checkpoint. A writer that deletes in the same
//! transaction as it upserted a row of the running batch can deadlock with it (each waits
//! for the other); PostgreSQL aborts one, usually the batch, which is then retried.
//! (`ON CONFLICT DO NOTHING` would skip such keys without a retry, but its speculative
//! insertion writes a second WAL record for every row of the copy.)
//!
//! All this holds for writers at `READ COMMITTED` (PostgreSQL's default): the trigger's
//! statements then see what committed before them. A `REPEATABLE READ` writer's trigger
//! does not see a batch's rows committed after its snapshot (its upsert fails with a
//! serialization error, its delete misses the row); the verification catches the latter
//! before the swap.

mod batches;
mod create;
mod finish;
mod qualify;

use std::time::Instant;

use contract_core::Dialect;
use sqlx::{AssertSqlSafe, PgPool, SqlSafeStr};

use super::type_change::{OnlineProcedure, OnlineReport, OnlineTypeChange, short, short_tx};
use crate::error::{Error, Result};
use crate::remediation::elapsed_ms;

/// Names of the copy's objects, within PostgreSQL's 63 bytes.
pub(super) struct CopyNames {
    /// The old table, `"schema"."table"`.
    pub table: String,
    /// The new table, `"schema"."table_contract_copy"`.
    pub new: String,
    /// The old table after the swap, until it is dropped, and its bare name.
    pub old: String,
    pub old_raw: String,
    pub trigger: String,
    pub function: String,
    pub progress: String,
    /// The checkpoint row's key.
    pub key: String,
    /// The start of the key every copy of this table shares (`copy:"schema"."table".`).
    pub key_table: String,
    /// That start as versions before quoted keys wrote it (`copy:schema.table.`).
    pub legacy_key_table: String,
    /// The advisory lock a batch holds exclusively and the trigger's deletes share.
    pub batch_lock: i64,
}

impl CopyNames {
    fn new(change: &OnlineTypeChange, progress: &str) -> Result<Self> {
        let pg = Dialect::Postgres;
        let new_raw = short(format!("{}_contract_copy", change.table));
        let old_raw = short(format!("{}_contract_old", change.table));
        // Quoted names: the copies of `a.b` are not among those of `a` (`copy:s.a.`).
        let key_table = format!(
            "copy:{}.{}.",
            pg.quote(&change.schema)?,
            pg.quote(&change.table)?
        );
        let key = format!(
            "{key_table}{}::{}",
            pg.quote(&change.column)?,
            change.new_type
        );
        Ok(Self {
            batch_lock: crate::postgres::ddl::lock_key(&format!("contract:{key}")),
            table: pg.quote_qualified(Some(&change.schema), &change.table)?,
            new: pg.quote_qualified(Some(&change.schema), &new_raw)?,
            old: pg.quote_qualified(Some(&change.schema), &old_raw)?,
            old_raw,
            trigger: pg.quote(&trigger_name(change))?,
            function: pg.quote_qualified(
                Some(&change.schema),
                &short(format!("{}_contract_copy_fn", change.table)),
            )?,
            progress: progress.to_owned(),
            key,
            key_table,
            legacy_key_table: format!("copy:{}.{}.", change.schema, change.table),
        })
    }
}

/// The name of the trigger that keeps the copy in sync (not quoted).
fn trigger_name(change: &OnlineTypeChange) -> String {
    short(format!("{}_contract_copy", change.table))
}

/// The name the copy of the index `name` carries until the swap.
pub(super) fn index_copy(name: &str) -> String {
    short(format!("{name}_ccopy"))
}

/// The name the old index `name` carries from the swap until the old table is dropped.
pub(super) fn index_old(name: &str) -> String {
    short(format!("{name}_cold"))
}

/// `Ok(())` when the table can be copied, else the reason it cannot.
pub(super) async fn qualify(
    pool: &PgPool,
    change: &OnlineTypeChange,
) -> Result<std::result::Result<(), String>> {
    Ok(qualify::qualify(pool, change).await?.map(|_| ()))
}

/// Runs (or resumes) the copy procedure.
pub(super) async fn run(
    pool: &PgPool,
    change: &OnlineTypeChange,
    progress: &str,
) -> Result<OnlineReport> {
    let started = Instant::now();
    let names = CopyNames::new(change, progress)?;
    let layout = match qualify::qualify(pool, change).await? {
        Ok(layout) => layout,
        Err(reason) => {
            abandon_if_started(pool, change, progress).await?;
            return Err(Error::NotOnline {
                table: format!("{}.{}", change.schema, change.table),
                column: change.column.clone(),
                reason: format!("cannot be changed by a copy of the table: {reason}"),
            });
        }
    };
    let db = |context| super::step_failed(context, change.tenant());
    let type_at_start = finish::column_type(pool, change, &names).await?;
    let checkpoint: Option<(Option<i64>, String)> = sqlx::query_as(
        AssertSqlSafe(format!(
            "SELECT last_key, state FROM {} WHERE change = $1",
            names.progress
        ))
        .into_sql_str(),
    )
    .bind(&names.key)
    .fetch_optional(pool)
    .await
    .map_err(db("reading the copy checkpoint"))?;
    let (last_key, state) = match checkpoint {
        Some(found) if in_place(pool, change, &names).await? => found,
        stale => {
            if stale.is_some() {
                tracing::warn!(table = %names.table, "the copy's table or trigger is gone; starting the copy again");
            }
            create::create(pool, change, &names, &layout).await?;
            (None, "copy".to_owned())
        }
    };
    let mut report = OnlineReport {
        rows_estimate: 0.0,
        rows_backfilled: 0,
        batches: 0,
        backfill_ms: 0,
        phases_ms: vec![("expand", elapsed_ms(started))],
        resumed_from: last_key,
        swap_attempts: 0,
        total_ms: 0,
        procedure: OnlineProcedure::TableCopy,
        table_copy_refused: None,
        progress: Vec::new(),
    };
    report.rows_estimate = sqlx::query_scalar::<_, f64>(
        "SELECT greatest(reltuples, 0)::float8 FROM pg_class WHERE oid = $1::regclass",
    )
    .bind(&names.table)
    .fetch_one(pool)
    .await
    .map_err(db("reading the table's size"))?;
    let mut lap = Instant::now();
    let mut phase = |report: &mut OnlineReport, name: &'static str| {
        report.phases_ms.push((name, elapsed_ms(lap)));
        lap = Instant::now();
    };
    if state == "copy" {
        batches::run(pool, change, &names, &layout, last_key, &mut report).await?;
    }
    phase(&mut report, "backfill");
    finish::verify(pool, change, &names, &layout).await?;
    phase(&mut report, "verify");
    create::build_indexes(pool, change, &names, &layout).await?;
    sqlx::query(AssertSqlSafe(format!("ANALYZE {}", names.new)).into_sql_str())
        .execute(pool)
        .await
        .map_err(db("analyzing the copy"))?;
    phase(&mut report, "prepare");
    finish::unchanged_type(pool, change, &names, &type_at_start).await?;
    report.swap_attempts = finish::swap(pool, change, &names, &layout, &type_at_start).await?;
    phase(&mut report, "swap");
    // Dropped after the swap: the files of a big table take a while to unlink (356 ms for
    // 2M rows on a loaded machine), which in the swap would hold its lock that long.
    // The change has committed: a failure here leaves the old table behind, not the
    // change undone.
    let drop_old = format!("DROP TABLE IF EXISTS {}", names.old);
    if let Err(error) = sqlx::query(AssertSqlSafe(drop_old).into_sql_str())
        .execute(pool)
        .await
    {
        tracing::warn!(table = %names.table, old = %names.old, error = %error, "the type change committed, but dropping the old table failed; drop it by hand");
    }
    report.total_ms = elapsed_ms(started);
    tracing::info!(table = %names.table, column = %change.column, new_type = %change.new_type, total_ms = report.total_ms, rows = report.rows_backfilled, "online type change by table copy done");
    Ok(report)
}

/// Whether the new table and the trigger that keeps it in sync both exist.
async fn in_place(pool: &PgPool, change: &OnlineTypeChange, names: &CopyNames) -> Result<bool> {
    sqlx::query_scalar(
        "SELECT to_regclass($1) IS NOT NULL AND EXISTS (SELECT 1 FROM pg_trigger
                WHERE tgrelid = $2::regclass AND tgname = $3)",
    )
    .bind(&names.new)
    .bind(&names.table)
    .bind(trigger_name(change))
    .fetch_one(pool)
    .await
    .map_err(Error::db("looking up the copy", Some(change.tenant())))
}

/// Drops whatever a copy left (the trigger, the new table, the function, the checkpoint),
/// if it left anything; the old table is untouched.
pub(super) async fn abandon_if_started(
    pool: &PgPool,
    change: &OnlineTypeChange,
    progress: &str,
) -> Result<()> {
    let names = CopyNames::new(change, progress)?;
    let left: bool = sqlx::query_scalar(
        AssertSqlSafe(format!(
            "SELECT to_regclass($1) IS NOT NULL OR EXISTS (SELECT 1 FROM {} WHERE change = $2)",
            names.progress
        ))
        .into_sql_str(),
    )
    .bind(&names.new)
    .bind(&names.key)
    .fetch_one(pool)
    .await
    .map_err(Error::db("looking up a copy", Some(change.tenant())))?;
    if left {
        tracing::warn!(table = %names.table, "dropping what an earlier copy of the table left");
        short_tx(pool, change, &abandon_sql(&names)?, "dropping a copy").await?;
    }
    Ok(())
}

/// The statements that drop a copy (idempotent), with every copy checkpoint of the table:
/// the copy table is the table's, whatever column or type an earlier copy changed, so a
/// checkpoint of another change would resume into a copy it did not make.
fn abandon_sql(names: &CopyNames) -> Result<String> {
    let (mut statements, delete) = abandon_statements(names)?;
    statements.push(delete);
    Ok(statements.join(";\n"))
}

/// [`abandon_sql`]'s drops, one by one, and its `DELETE` of the checkpoints.
fn abandon_statements(names: &CopyNames) -> Result<(Vec<String>, String)> {
    let table = Dialect::Postgres.string_literal(&names.key_table)?;
    let drops = vec![
        format!(
            "DROP TRIGGER IF EXISTS {} ON {}",
            names.trigger, names.table
        ),
        format!("DROP TABLE IF EXISTS {}", names.new),
        format!("DROP TABLE IF EXISTS {}", names.old),
        format!("DROP FUNCTION IF EXISTS {}()", names.function),
    ];
    // With the keys of versions before quoted names (never resumed, they would stay).
    let delete = format!(
        "DELETE FROM {p} WHERE change = {k} OR left(change, length({table})) = {table} \
         OR left(change, length({legacy})) = {legacy}",
        p = names.progress,
        k = Dialect::Postgres.string_literal(&names.key)?,
        legacy = Dialect::Postgres.string_literal(&names.legacy_key_table)?,
    );
    Ok((drops, delete))
}

/// What a copy of `change`'s table would leave: its trigger's name as the catalog stores
/// it, the statements that drop the copy, and the `DELETE` of its checkpoints
/// ([`abandon_sql`]).
pub(in crate::postgres::online) fn leftover(
    change: &OnlineTypeChange,
    progress: &str,
) -> Result<(String, Vec<String>, String)> {
    let names = CopyNames::new(change, progress)?;
    let (drops, delete) = abandon_statements(&names)?;
    Ok((trigger_name(change), drops, delete))
}
