//! An online column type change (`int4 → int8`, any cast written as `col::type`): a shadow
//! column kept in sync by a trigger, a batched backfill by key range with a stored
//! checkpoint, a verification pass, indexes built `CONCURRENTLY`, `NOT NULL` through a
//! validated check, then one short swap transaction under `lock_timeout` with retries.
//! Writers wait only for the brief locks of the expand and the swap, never for the table.

use std::time::{Duration, Instant};

use contract_core::Dialect;
use sqlx::{AssertSqlSafe, PgPool, SqlSafeStr};

use super::inspect::inspect;
use crate::error::{Error, Result};
use crate::postgres::apply::is_lock_conflict;
use crate::remediation::backoff::Backoff;
use crate::remediation::elapsed_ms;

/// One online type change; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OnlineTypeChange {
    /// The table's schema (the tenant).
    pub schema: String,
    /// The table.
    pub table: String,
    /// The column.
    pub column: String,
    /// The new type as DDL writes it (`int8`, `numeric(20,2)`); the cast is `col::type`.
    pub new_type: String,
    /// Rows per backfill batch at most (each its own transaction).
    pub batch_rows: u32,
    /// About how long one batch should take (its rows stay locked for that long): batches
    /// shrink below `batch_rows` when they take longer.
    pub batch_time: Duration,
    /// Pause between batches. It lowers the rate at which the backfill writes WAL (and
    /// with it the flush work its batches add to other sessions' commits) at the cost of
    /// time; it does not shorten the longest wait of a concurrent commit, which on a
    /// server that creates WAL segments as it goes is the creation of one (16 MB written
    /// and synced under the WAL write lock), paid about every 16 MB of WAL.
    pub pause: Duration,
    /// `lock_timeout` of the expand and swap transactions.
    pub lock_timeout: Duration,
    /// Attempts of those transactions on lock timeout.
    pub max_attempts: u32,
    /// `schema.table` of the checkpoint table (created if missing).
    pub progress_table: (String, String),
    /// Which procedure runs: by default the table copy when the table qualifies, the
    /// shadow column otherwise.
    pub procedure: OnlineProcedure,
    /// A statement the swap's transaction runs last: a remediation's audit row, which then
    /// commits exactly when the change does (never a change without its row).
    pub(crate) recorded_in_swap: Option<String>,
    /// The tenant whose remediation runs the change, when it is not the table's schema (a
    /// contract's fixed schema): what errors name.
    pub(crate) tenant: Option<String>,
}

/// The two procedures of an online type change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnlineProcedure {
    /// The table copy when the table qualifies (see [`OnlineReport::table_copy_refused`]),
    /// else the shadow column; a change already under way continues the way it started.
    #[default]
    Auto,
    /// A shadow column in the table, backfilled by batched `UPDATE`s.
    ShadowColumn,
    /// A new table with the new type, filled by batched `INSERT … SELECT`, swapped for the
    /// old one (`copy` module); refused with the reason when the table does not qualify.
    TableCopy,
}

impl OnlineTypeChange {
    /// A change of `schema.table.column` to `new_type` with the defaults: batches of at
    /// most 10,000 rows taking about 50 ms, no pause, `lock_timeout` 200 ms, 20 attempts, checkpoints in
    /// `public.contract_online_progress`.
    #[must_use]
    pub fn new(schema: &str, table: &str, column: &str, new_type: &str) -> Self {
        Self {
            schema: schema.to_owned(),
            table: table.to_owned(),
            column: column.to_owned(),
            new_type: new_type.to_owned(),
            batch_rows: 10_000,
            batch_time: Duration::from_millis(50),
            pause: Duration::ZERO,
            lock_timeout: Duration::from_millis(200),
            max_attempts: 20,
            progress_table: ("public".into(), "contract_online_progress".into()),
            procedure: OnlineProcedure::Auto,
            recorded_in_swap: None,
            tenant: None,
        }
    }

    /// The tenant errors name: the remediation's, else the table's schema.
    pub(crate) fn tenant(&self) -> &str {
        self.tenant.as_deref().unwrap_or(&self.schema)
    }

    /// Which procedure runs (the field `procedure`).
    #[must_use]
    pub fn procedure(mut self, procedure: OnlineProcedure) -> Self {
        self.procedure = procedure;
        self
    }

    /// Rows per batch and the pause between batches.
    #[must_use]
    pub fn batches(mut self, rows: u32, pause: Duration) -> Self {
        self.batch_rows = rows.max(1);
        self.pause = pause;
        self
    }

    /// About how long one backfill batch should take (the field `batch_time`).
    #[must_use]
    pub fn batch_time(mut self, time: Duration) -> Self {
        self.batch_time = time;
        self
    }

    /// `lock_timeout` and attempts of the expand and swap transactions.
    #[must_use]
    pub fn lock(mut self, timeout: Duration, max_attempts: u32) -> Self {
        self.lock_timeout = timeout;
        self.max_attempts = max_attempts.max(1);
        self
    }
}

/// What an online type change did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OnlineReport {
    /// The planner's row estimate (`pg_class.reltuples`) when it started.
    pub rows_estimate: f64,
    /// Rows this run backfilled.
    pub rows_backfilled: i64,
    /// Batches this run committed.
    pub batches: u64,
    /// Wall time of this run's backfill.
    pub backfill_ms: u64,
    /// Wall time of each part of this run, in order: `expand`, `backfill`, `verify`
    /// (the scan), `prepare` (the `NOT NULL` check validated, indexes built), `swap`.
    pub phases_ms: Vec<(&'static str, u64)>,
    /// The key an earlier, interrupted run had reached (`None`: started from the start).
    pub resumed_from: Option<i64>,
    /// Attempts the swap took.
    pub swap_attempts: u32,
    /// Wall time of the whole change.
    pub total_ms: u64,
    /// The procedure that ran ([`OnlineProcedure::ShadowColumn`] or
    /// [`OnlineProcedure::TableCopy`]).
    pub procedure: OnlineProcedure,
    /// Why the table copy was not taken, when the shadow column ran instead.
    pub table_copy_refused: Option<String>,
    /// Progress samples of this run's backfill: the first batch, one every few seconds,
    /// and the end (rows done counts those of an interrupted run it resumed).
    pub progress: Vec<contract_core::BackfillProgress>,
}

/// Names derived from the column, within PostgreSQL's 63 bytes.
pub(super) struct Names {
    pub table: String,
    pub column: String,
    pub shadow_raw: String,
    pub shadow: String,
    pub trigger: String,
    /// The trigger's name as the catalog stores it (`trigger` is quoted).
    pub trigger_raw: String,
    pub function: String,
    pub check: String,
    /// The check's name as the catalog stores it (`check` is quoted).
    pub check_raw: String,
    pub progress: String,
    pub key: String,
    /// The start every checkpoint key of a shadow-column change of this column shares,
    /// whatever the new type.
    pub key_prefix: String,
    /// That start as versions before quoted keys wrote it (`schema.table.column::`).
    pub legacy_key_prefix: String,
}

pub(super) fn short(name: String) -> String {
    if name.len() <= 63 {
        return name;
    }
    let hash = &contract_core::digest_hex(name.as_bytes())[..8];
    let mut cut = 54;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{hash}", &name[..cut])
}

impl Names {
    pub(super) fn new(change: &OnlineTypeChange) -> Result<Self> {
        let q = |n: &str| Dialect::Postgres.quote(n);
        let shadow_raw = short(format!("{}_contract_new", change.column));
        let base = short(format!("{}_{}_contract", change.table, change.column));
        // Quoted names: `a`.`b.c` and `a.b`.`c` must not share a key (nor one a prefix).
        let key_prefix = format!(
            "{}.{}.{}::",
            q(&change.schema)?,
            q(&change.table)?,
            q(&change.column)?
        );
        Ok(Self {
            table: Dialect::Postgres.quote_qualified(Some(&change.schema), &change.table)?,
            column: q(&change.column)?,
            shadow: q(&shadow_raw)?,
            shadow_raw,
            trigger: q(&base)?,
            trigger_raw: base.clone(),
            // Functions are named per schema, not per table: `o`.`x_y` and `o_x`.`y` both
            // make `base`, and the second change would replace the first's function.
            function: Dialect::Postgres.quote_qualified(
                Some(&change.schema),
                &short(format!(
                    "{base}_{}",
                    &contract_core::digest_hex(key_prefix.as_bytes())[..8]
                )),
            )?,
            check: q(&short(format!("{base}_nn")))?,
            check_raw: short(format!("{base}_nn")),
            progress: Dialect::Postgres
                .quote_qualified(Some(&change.progress_table.0), &change.progress_table.1)?,
            key: format!("{key_prefix}{}", change.new_type),
            key_prefix,
            legacy_key_prefix: format!("{}.{}.{}::", change.schema, change.table, change.column),
        })
    }
}

/// Runs (or resumes) `change` on `pool` with the procedure `change.procedure` selects.
///
/// # Errors
///
/// [`Error::NotOnline`] when the column cannot be changed online (the reason of the shadow
/// column, and of the table copy when that was asked for), with the table as it was but
/// for what an interrupted change of the column left and this run could not resume
/// (dropped first); a database error otherwise (what committed stays, and a new call
/// resumes from the checkpoint).
pub async fn change_type_online(pool: &PgPool, change: &OnlineTypeChange) -> Result<OnlineReport> {
    let names = Names::new(change)?;
    let lock = lock_table(pool, change, &names).await?;
    let report = change_under_lock(pool, change, &names).await;
    // Closing the connection releases the lock (so does dropping it, when this future is).
    let _ = sqlx::Connection::close(lock).await;
    report
}

/// The advisory-lock key every online change of the table `table` (quoted and qualified)
/// holds while it runs, and a type change made in place takes before it drops what an
/// interrupted one left (`leftover.rs`): never what a running change is using.
pub(super) fn table_lock_key(table: &str) -> i64 {
    crate::postgres::ddl::lock_key(&format!("contract:online-table:{table}"))
}

/// The table's online lock, held by a session of its own until it closes (also when the
/// process dies or the change's future is dropped). Another change of the table running
/// holds it: this one waits up to its attempts' `lock_timeout`s, then fails.
pub(super) async fn lock_table(
    pool: &PgPool,
    change: &OnlineTypeChange,
    names: &Names,
) -> Result<sqlx::PgConnection> {
    use sqlx::ConnectOptions;
    let context = "taking the table's online lock (another online change of the table holds it)";
    let mut conn = pool
        .connect_options()
        .connect()
        .await
        .map_err(super::step_failed(context, change.tenant()))?;
    let wait = change
        .lock_timeout
        .saturating_mul(change.max_attempts)
        .max(Duration::from_secs(1));
    sqlx::query("SELECT set_config('lock_timeout', $1, false)")
        .bind(crate::postgres::apply::millis(wait))
        .execute(&mut conn)
        .await
        .map_err(super::step_failed(context, change.tenant()))?;
    keep_lock_session(&mut conn)
        .await
        .map_err(super::step_failed(context, change.tenant()))?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(table_lock_key(&names.table))
        .execute(&mut conn)
        .await
        .map_err(super::step_failed(context, change.tenant()))?;
    Ok(conn)
}

/// Keeps a session that holds an online lock and sits idle for the whole change from being
/// ended under it, or kept past its client's death: no `idle_session_timeout` (PostgreSQL
/// 14 and later; a role may set one), and TCP keepalives that notice a dead client within
/// about two minutes (Linux's defaults take over two hours, and the lock with them).
pub(super) async fn keep_lock_session(conn: &mut sqlx::PgConnection) -> sqlx::Result<()> {
    // language=SQL
    sqlx::query(
        "SELECT set_config(name, value, false)
         FROM (VALUES ('idle_session_timeout', '0'), ('tcp_keepalives_idle', '60'),
                      ('tcp_keepalives_interval', '10'), ('tcp_keepalives_count', '6')) AS v(name, value)
         WHERE name IN (SELECT s.name FROM pg_settings s)",
    )
    .execute(conn)
    .await
    .map(drop)
}

/// [`change_type_online`] once the table's online lock ([`lock_table`]) is held.
pub(super) async fn change_under_lock(
    pool: &PgPool,
    change: &OnlineTypeChange,
    names: &Names,
) -> Result<OnlineReport> {
    ensure_progress(pool, names).await?;
    super::leftover::discard_unresumable(pool, change, names).await?;
    match change.procedure {
        OnlineProcedure::ShadowColumn => shadow_column(pool, change, names).await,
        OnlineProcedure::TableCopy => super::copy::run(pool, change, &names.progress).await,
        OnlineProcedure::Auto => {
            let started: bool = sqlx::query_scalar(
                AssertSqlSafe(format!(
                    "SELECT EXISTS (SELECT 1 FROM {} WHERE change = $1)",
                    names.progress
                ))
                .into_sql_str(),
            )
            .bind(&names.key)
            .fetch_one(pool)
            .await
            .map_err(super::step_failed(
                "reading the backfill checkpoint",
                change.tenant(),
            ))?;
            let refused = if started {
                "a shadow-column change of this column is under way".to_owned()
            } else {
                match super::copy::qualify(pool, change).await? {
                    Ok(()) => return super::copy::run(pool, change, &names.progress).await,
                    Err(reason) => reason,
                }
            };
            super::copy::abandon_if_started(pool, change, &names.progress).await?;
            tracing::info!(table = %names.table, column = %change.column, reason = %refused, "online type change by shadow column, not by table copy");
            let mut report = shadow_column(pool, change, names).await?;
            report.table_copy_refused = Some(refused);
            Ok(report)
        }
    }
}

/// The checkpoint table, created if missing.
async fn ensure_progress(pool: &PgPool, names: &Names) -> Result<()> {
    let progress_ddl = format!(
        "CREATE TABLE IF NOT EXISTS {} (change text PRIMARY KEY, last_key int8, rows_done int8 NOT NULL DEFAULT 0,
             state text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())",
        names.progress
    );
    crate::postgres::ddl::create_under_lock(
        pool,
        "contract:online-progress",
        progress_ddl,
        "creating the online progress table",
    )
    .await
}

/// The shadow-column procedure (the module documentation).
async fn shadow_column(
    pool: &PgPool,
    change: &OnlineTypeChange,
    names: &Names,
) -> Result<OnlineReport> {
    let started = Instant::now();
    let facts = inspect(pool, change).await?;
    let pk = facts.pk_column.clone().ok_or_else(|| Error::Unsupported {
        dialect: Dialect::Postgres,
        what: "an online type change without an integer primary key",
    })?;
    let pk = Dialect::Postgres.quote(&pk)?;
    let db = |context| super::step_failed(context, change.tenant());
    // Expand: the shadow column and the trigger that keeps it in sync (idempotent). The
    // trigger's `WHEN` is evaluated without calling the function, so the backfill's own
    // updates (which set the shadow right) cost no PL/pgSQL call per row.
    let expand = format!(
        "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {s} {ty};
         CREATE OR REPLACE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
           $\0$ BEGIN NEW.{s} := NEW.{c}::{ty}; RETURN NEW; END $\0$;
         DROP TRIGGER IF EXISTS {tr} ON {t};
         CREATE TRIGGER {tr} BEFORE INSERT OR UPDATE ON {t} FOR EACH ROW
           WHEN (NEW.{s} IS DISTINCT FROM NEW.{c}::{ty}) EXECUTE FUNCTION {f}();
         INSERT INTO {p} (change, state) VALUES ({k}, 'backfill') ON CONFLICT (change) DO NOTHING",
        t = names.table,
        s = names.shadow,
        ty = change.new_type,
        f = names.function,
        c = names.column,
        tr = names.trigger,
        p = names.progress,
        k = Dialect::Postgres.string_literal(&names.key)?,
    );
    short_tx(pool, change, &expand, "expand").await?;
    let (last_key, state): (Option<i64>, String) = sqlx::query_as(
        AssertSqlSafe(format!(
            "SELECT last_key, state FROM {} WHERE change = $1",
            names.progress
        ))
        .into_sql_str(),
    )
    .bind(&names.key)
    .fetch_one(pool)
    .await
    .map_err(db("reading the backfill checkpoint"))?;
    let resumed_from = last_key;
    let mut report = OnlineReport {
        rows_estimate: facts.rows_estimate,
        rows_backfilled: 0,
        batches: 0,
        backfill_ms: 0,
        phases_ms: vec![("expand", elapsed_ms(started))],
        resumed_from,
        swap_attempts: 0,
        total_ms: 0,
        procedure: OnlineProcedure::ShadowColumn,
        table_copy_refused: None,
        progress: Vec::new(),
    };
    let mut lap = Instant::now();
    let mut phase = |report: &mut OnlineReport, name: &'static str| {
        report.phases_ms.push((name, elapsed_ms(lap)));
        lap = Instant::now();
    };
    if state == "backfill" {
        super::backfill::run(pool, change, names, &pk, last_key, &mut report).await?;
    }
    phase(&mut report, "backfill");
    // Verify: every row's shadow equals the cast of the column (the trigger keeps it so).
    let differ: i64 = sqlx::query_scalar(
        AssertSqlSafe(format!(
            "SELECT count(*) FROM {t} WHERE {s} IS DISTINCT FROM {c}::{ty}",
            t = names.table,
            s = names.shadow,
            c = names.column,
            ty = change.new_type
        ))
        .into_sql_str(),
    )
    .fetch_one(pool)
    .await
    .map_err(db("verifying the backfill"))?;
    if differ != 0 {
        return Err(Error::NotOnline {
            table: format!("{}.{}", change.schema, change.table),
            column: change.column.clone(),
            reason: format!(
                "changed under the backfill: {differ} row(s) differ from their cast after it"
            ),
        });
    }
    phase(&mut report, "verify");
    super::swap::prepare(pool, change, names, &facts).await?;
    phase(&mut report, "prepare");
    report.swap_attempts = super::swap::swap(pool, change, names, &facts).await?;
    phase(&mut report, "swap");
    report.total_ms = elapsed_ms(started);
    tracing::info!(table = %names.table, column = %change.column, new_type = %change.new_type, total_ms = report.total_ms, rows = report.rows_backfilled, "online type change done");
    Ok(report)
}

/// Runs `sql` in one transaction under `lock_timeout`, retried on lock timeout or deadlock
/// (the server rolled it back either way). Each `$\0$` in it becomes a dollar quote
/// ([`dollar_quoted`]).
pub(super) async fn short_tx(
    pool: &PgPool,
    change: &OnlineTypeChange,
    sql: &str,
    what: &'static str,
) -> Result<u32> {
    let backoff = Backoff {
        base: Duration::from_millis(50),
        max: Duration::from_secs(5),
    };
    let sql = dollar_quoted(sql);
    let mut attempt = 1;
    loop {
        let result = async {
            let mut tx = pool.begin().await?;
            sqlx::query("SELECT set_config('lock_timeout', $1, true)")
                .bind(crate::postgres::apply::millis(change.lock_timeout))
                .execute(&mut *tx)
                .await?;
            sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        }
        .await;
        match result {
            Ok(_) => return Ok(attempt),
            Err(error) if is_lock_conflict(&error) && attempt < change.max_attempts => {
                tracing::warn!(table = %change.table, column = %change.column, what, attempt, error = %error, "lock conflict in an online type change; retrying");
                tokio::time::sleep(backoff.delay(attempt)).await;
                attempt += 1;
            }
            Err(error) => return Err(super::step_failed(what, change.tenant())(error)),
        }
    }
}

/// `sql` with each `$\0$` made a dollar quote whose tag occurs nowhere else in it. A fixed
/// tag would end its quote early where a name in the body holds it (a column or index
/// named `a$contract$b`); no name holds NUL, so the markers are only the template's.
pub(super) fn dollar_quoted(sql: &str) -> String {
    let mut n = 0u32;
    loop {
        let tag = if n == 0 {
            "contract".to_owned()
        } else {
            format!("contract{n}")
        };
        if !sql.contains(&format!("${tag}$")) {
            return sql.replace('\0', &tag);
        }
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::{Names, OnlineTypeChange, dollar_quoted};

    #[test]
    fn a_dollar_quote_s_tag_is_one_no_name_in_the_body_holds() {
        assert_eq!(
            dollar_quoted("DO $\0$ BEGIN END $\0$"),
            "DO $contract$ BEGIN END $contract$"
        );
        assert_eq!(
            dollar_quoted("DO $\0$ SELECT '\"a$contract$b\"' $\0$"),
            "DO $contract1$ SELECT '\"a$contract$b\"' $contract1$"
        );
        assert_eq!(dollar_quoted("SELECT 1"), "SELECT 1");
    }

    #[test]
    fn the_check_is_looked_up_by_the_name_the_catalog_stores() {
        // Trimming the quotes off the quoted name kept a doubled quote inside it: the
        // lookup missed a check an interrupted run had added, which was then added again
        // and failed ("already exists") on every pass.
        let change = OnlineTypeChange::new("tenant_1", "we\"ird", "user_id", "int8");
        let names = Names::new(&change).expect("names");
        assert_eq!(names.check_raw, "we\"ird_user_id_contract_nn");
        assert_eq!(names.check, "\"we\"\"ird_user_id_contract_nn\"");
    }
}
