//! Online remediation benchmark: the same change applied the plain way and online, on one
//! tenant table of `--rows N` rows under a concurrent writer and reader.
//!
//! ```text
//! cargo bench -p contract-sqlx --bench online -- --rows 2000000
//! ```
//!
//! Needs PostgreSQL at `CONTRACT_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); it works in a uniquely named scratch
//! database, dropped again also when a step fails. The table `tenant_bench.events` (`id`
//! key, `user_id int4 NOT NULL` with an index, a nullable `note` that holds no NULL, an
//! `amount`) is filled, copied to a mirror, and then, each under a writer (`--rate R`
//! operations a second, half inserts, half point updates of `user_id`, each written to the
//! table and its mirror in one transaction) and a reader (`--rate R` point reads):
//!
//! 1. `user_id int4 → int8` plain: `ALTER TABLE … ALTER COLUMN … TYPE int8 USING …` (one
//!    transaction, the table rewritten under `ACCESS EXCLUSIVE`); then put back untimed.
//! 2. The same change online: `remediation::change_type_online` (shadow column, trigger,
//!    batched backfill of `--batch B` rows per transaction, verification, concurrent index,
//!    short swap under a 200 ms `lock_timeout`).
//! 3. `note` to `NOT NULL` the single-transaction way: the plan's statements (`CHECK … NOT
//!    VALID`, `VALIDATE`, `SET NOT NULL`, drop the check) in one transaction; then put back.
//! 4. The same plan applied by `remediate` with its approval: phased, `VALIDATE` in its own
//!    transaction under `SHARE UPDATE EXCLUSIVE`.
//!
//! Each change starts after a `CHECKPOINT` (untimed; it needs superuser or the
//! `pg_checkpoint` role): the fill and each rewrite write hundreds of MB of WAL, and a
//! checkpoint they set off (`max_wal_size`) would otherwise `fsync` its files inside the
//! next measurement, whose writer's commits then wait on that, not on the change.
//!
//! A *stall* is how long one write took, counted for the writes that started while the
//! change ran. After each type change the checksum of every row of the table (a 64-bit
//! hash of each row, summed, with the row count) is compared with the mirror's. The last
//! stdout line is one JSON object: `{"bench":"online","rows":…,"plain_ms":…,"online_ms":…,
//! "plain_writer_max_stall_ms":…,"online_writer_max_stall_ms":…,"online_writer_p99_ms":…,
//! "notnull_plain_max_stall_ms":…,"notnull_online_max_stall_ms":…,"checksum_equal":…}`.

mod onlineload;
mod pgfleet;

use std::time::{Duration, Instant};

use contract_sqlx::plan::Remediation;
use contract_sqlx::remediation::{ApplyOptions, OnlineTypeChange, change_type_online};
use contract_sqlx::{Contract, TenantDirectory, Tenants, check::ContractSet, remediate};
use onlineload::{Load, Sample, Stalls, Wait, Waits, checksum};
use pgfleet::{Result, ms};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, PgConnection, Postgres};

const SCHEMA: &str = "tenant_bench";
const TABLE: &str = "tenant_bench.events";
const MIRROR: &str = "tenant_bench.events_mirror";

/// What the consumer reads once every change is made: `note` no longer `NULL`able.
#[allow(dead_code)]
#[derive(sqlx::FromRow, Contract)]
#[contract(table = "events")]
struct Event {
    #[contract(primary_key)]
    id: i64,
    user_id: i64,
    note: String,
}

struct Args {
    rows: usize,
    rate: usize,
    batch: usize,
    pause_ms: usize,
    attribute: bool,
}

fn main() {
    let mut args = [
        ("--rows", 2_000_000),
        ("--rate", 200),
        ("--batch", 10_000),
        ("--pause-ms", 0),
        ("--attribute", 0),
    ];
    if let Err(e) = pgfleet::parse_args(
        "online [--rows N] [--rate OPS_PER_S] [--batch ROWS] [--pause-ms MS] [--attribute 0|1]",
        &mut args,
    ) {
        eprintln!("online bench: {e}");
        std::process::exit(2);
    }
    let [
        (_, rows),
        (_, rate),
        (_, batch),
        (_, pause_ms),
        (_, attribute),
    ] = args;
    let args = Args {
        rows,
        rate,
        batch,
        pause_ms,
        attribute: attribute != 0,
    };
    pgfleet::run_main(
        "online",
        pgfleet::with_scratch_db("contract_bench_online", move |scratch| run(scratch, args)),
    );
}

/// One measured change: wall time and the writer's and reader's stalls while it ran.
struct Measured {
    ms: f64,
    writer: Stalls,
    reader: Stalls,
    /// When the change started, and every write of the run.
    from: Instant,
    writes: Vec<Sample>,
}

impl Measured {
    fn print(&self, label: &str) {
        println!(
            "{label:<40} {:>10.1} {:>9.1} {:>9.1} {:>7} {:>9.1}",
            self.ms, self.writer.max_ms, self.writer.p99_ms, self.writer.count, self.reader.max_ms
        );
    }
}

async fn run(scratch: PgConnectOptions, args: Args) -> Result<()> {
    let rows = i64::try_from(args.rows)?;
    let rate = u32::try_from(args.rate)?;
    let mut admin = scratch.connect().await?;
    let started = Instant::now();
    exec(
        &mut admin,
        &format!(
            "CREATE SCHEMA {SCHEMA};
             CREATE TABLE {TABLE} (id int8 PRIMARY KEY, user_id int4 NOT NULL, note text, amount int4 NOT NULL);
             INSERT INTO {TABLE} SELECT g, (g % 100000)::int4, 'n' || g, 0 FROM generate_series(1, {rows}) g;
             CREATE INDEX events_user_id ON {TABLE} (user_id);
             CREATE TABLE {MIRROR} AS SELECT * FROM {TABLE};
             ALTER TABLE {MIRROR} ADD PRIMARY KEY (id)"
        ),
    )
    .await?;
    // VACUUM runs outside a transaction, so one statement per call.
    exec(&mut admin, &format!("VACUUM ANALYZE {TABLE}")).await?;
    exec(&mut admin, &format!("VACUUM ANALYZE {MIRROR}")).await?;
    eprintln!(
        "{rows} rows (and the mirror) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut next_id = rows + 1;
    let mut checksums_equal = true;
    let mut compare = async |admin: &mut PgConnection, what: &str| -> Result<()> {
        let (table, mirror) = (
            checksum(admin, TABLE).await?,
            checksum(admin, MIRROR).await?,
        );
        eprintln!("checksum after {what}: table {table}, mirror {mirror}");
        checksums_equal &= table == mirror;
        Ok(())
    };

    // 1. The plain type change, then put back untimed.
    checkpoint(&mut admin).await?;
    let plain = measure(&scratch, rows, &mut next_id, rate, async || {
        exec_tx(
            &scratch,
            &format!("ALTER TABLE {TABLE} ALTER COLUMN user_id TYPE int8 USING user_id::int8"),
        )
        .await
    })
    .await?;
    compare(&mut admin, "the plain type change").await?;
    exec(
        &mut admin,
        &format!("ALTER TABLE {TABLE} ALTER COLUMN user_id TYPE int4"),
    )
    .await?;
    exec(&mut admin, &format!("VACUUM ANALYZE {TABLE}")).await?;

    // 2. The online type change.
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(scratch.clone())
        .await?;
    let change = OnlineTypeChange::new(SCHEMA, "events", "user_id", "int8")
        .batches(
            u32::try_from(args.batch)?,
            Duration::from_millis(u64::try_from(args.pause_ms)?),
        )
        .lock(Duration::from_millis(200), 50);
    let mut report = None;
    let waits = if args.attribute {
        Some(Waits::start(&scratch, Duration::from_millis(5)).await?)
    } else {
        None
    };
    checkpoint(&mut admin).await?;
    let wal_before = wal_lsn(&mut admin).await?;
    let checkpoints_before = checkpoints(&mut admin).await?;
    let online = measure(&scratch, rows, &mut next_id, rate, async || {
        report = Some(change_type_online(&pool, &change).await?);
        Ok(())
    })
    .await?;
    let wal_mb = (wal_lsn(&mut admin).await? - wal_before) / 1_048_576.0;
    let checkpoints_during = checkpoints(&mut admin).await? - checkpoints_before;
    let waits = match waits {
        Some(waits) => waits.stop().await?,
        None => Vec::new(),
    };
    compare(&mut admin, "the online type change").await?;
    if let Some(report) = &report {
        let parts: Vec<String> = report
            .phases_ms
            .iter()
            .map(|(part, ms)| format!("{part} {ms}"))
            .collect();
        eprintln!(
            "online: {} rows in {} batches, swap took {} attempt(s); ms per part: {}; WAL written meanwhile (all sessions): {wal_mb:.0} MB, checkpoints completed meanwhile: {checkpoints_during}",
            report.rows_backfilled,
            report.batches,
            report.swap_attempts,
            parts.join(", ")
        );
        if args.attribute {
            attribute(&online, &report.phases_ms, &waits);
        }
    }

    // 3 and 4. NOT NULL on `note`: one transaction, then the phased apply of the same plan.
    let contracts = ContractSet::<Postgres>::new().with::<Event>();
    let directory = TenantDirectory::new()
        .discover(&pool, &Tenants::schemas_like("tenant_%"))
        .await?;
    let dry = remediate(&directory, &contracts, Remediation::DryRun)
        .run()
        .await?;
    let [plan] = dry.plans.as_slice() else {
        return Err(format!("expected one plan, got {}", dry.plans.len()).into());
    };
    let statements: Vec<String> = plan.statements().map(str::to_owned).collect();
    eprintln!(
        "NOT NULL plan {}:\n  {}",
        plan.hash,
        statements.join("\n  ")
    );
    checkpoint(&mut admin).await?;
    let notnull_plain = measure(&scratch, rows, &mut next_id, rate, async || {
        exec_tx(&scratch, &statements.join(";\n")).await
    })
    .await?;
    exec(
        &mut admin,
        &format!("ALTER TABLE {TABLE} ALTER COLUMN note DROP NOT NULL"),
    )
    .await?;
    let options = ApplyOptions::default()
        .with_lock_timeout(Duration::from_millis(200))
        .with_max_attempts(50)
        .with_base_backoff(Duration::from_millis(20));
    let hash = plan.hash.clone();
    checkpoint(&mut admin).await?;
    let notnull_online = measure(&scratch, rows, &mut next_id, rate, async || {
        let run = remediate(&directory, &contracts, Remediation::Approved(hash.clone()))
            .options(options.clone())
            .run()
            .await?;
        if run.audits.len() != 1 || !run.failed.is_empty() {
            return Err(format!(
                "the phased NOT NULL was not applied: {} audits, failures: {}",
                run.audits.len(),
                run.failed
                    .iter()
                    .map(|f| f.error.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            )
            .into());
        }
        Ok(())
    })
    .await?;
    compare(&mut admin, "both NOT NULL changes").await?;
    pool.close().await;
    admin.close().await?;

    println!();
    println!(
        "{rows} rows; writer and reader at {rate} operations/s each; online batches of at most {} rows taking about {} ms, pause {} ms",
        args.batch,
        change.batch_time.as_millis(),
        args.pause_ms
    );
    println!(
        "{:<40} {:>10} {:>9} {:>9} {:>7} {:>9}",
        "change", "total ms", "w max ms", "w p99 ms", "writes", "r max ms"
    );
    plain.print("int4 -> int8 plain ALTER ... USING");
    online.print("int4 -> int8 online");
    notnull_plain.print("SET NOT NULL, one transaction");
    notnull_online.print("SET NOT NULL, phased");
    println!(
        "online/plain time {:.2} (target <= 4); online writer max stall {:.1} ms (target <= 250)",
        online.ms / plain.ms,
        online.writer.max_ms
    );
    println!(
        "{{\"bench\":\"online\",\"rows\":{rows},\"plain_ms\":{:.1},\"online_ms\":{:.1},\"plain_writer_max_stall_ms\":{:.1},\"online_writer_max_stall_ms\":{:.1},\"online_writer_p99_ms\":{:.1},\"notnull_plain_max_stall_ms\":{:.1},\"notnull_online_max_stall_ms\":{:.1},\"checksum_equal\":{checksums_equal}}}",
        plain.ms,
        online.ms,
        plain.writer.max_ms,
        online.writer.max_ms,
        online.writer.p99_ms,
        notnull_plain.writer.max_ms,
        notnull_online.writer.max_ms,
    );
    Ok(())
}

/// Runs `change` under the writer and reader (started a second before it, stopped half a
/// second after), timing it and the operations that started while it ran.
async fn measure(
    scratch: &PgConnectOptions,
    rows: i64,
    next_id: &mut i64,
    rate: u32,
    change: impl AsyncFnOnce() -> Result<()>,
) -> Result<Measured> {
    let load = Load::start(scratch, TABLE, MIRROR, rows, *next_id, rate).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let from = Instant::now();
    let outcome = change().await;
    let to = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = load.stop().await?;
    outcome?;
    *next_id += i64::try_from(seen.writes.len())?;
    Ok(Measured {
        ms: ms(to - from),
        writer: Stalls::within(&seen.writes, from, to),
        reader: Stalls::within(&seen.reads, from, to),
        from,
        writes: seen.writes,
    })
}

/// Prints every write of the online change that took over 100 ms: when it started (ms
/// after the change began), the phase it started in, and what the sampler saw it wait on.
fn attribute(online: &Measured, phases: &[(&'static str, u64)], waits: &[Wait]) {
    let mut ends = Vec::new();
    let mut sum = 0;
    for (name, phase_ms) in phases {
        sum += phase_ms;
        ends.push((*name, sum));
    }
    let long = online
        .writes
        .iter()
        .filter(|w| w.at >= online.from && w.took > Duration::from_millis(100));
    for write in long {
        let start = ms(write.at - online.from);
        #[allow(clippy::cast_precision_loss)]
        let phase = ends
            .iter()
            .find(|(_, end)| start <= *end as f64)
            .map_or("after (drop of the old table)", |(name, _)| name);
        let mut seen: Vec<(String, usize)> = Vec::new();
        for wait in waits
            .iter()
            .filter(|w| w.at >= write.at && w.at <= write.at + write.took)
        {
            match seen.iter_mut().find(|(what, _)| *what == wait.what) {
                Some((_, n)) => *n += 1,
                None => seen.push((wait.what.clone(), 1)),
            }
        }
        eprintln!(
            "long write at +{start:.0} ms ({phase}): {:.0} ms",
            ms(write.took)
        );
        for (what, n) in seen {
            eprintln!("    {n:>3} x {what}");
        }
    }
}

/// A `CHECKPOINT` before a measured change, so that no checkpoint the earlier steps' WAL
/// set off runs during it.
async fn checkpoint(admin: &mut PgConnection) -> Result<()> {
    exec(admin, "CHECKPOINT").await.map_err(|e| {
        format!("CHECKPOINT before a measured change: {e} (run the bench as a superuser or a member of pg_checkpoint)").into()
    })
}

/// `sql` in one transaction on a connection of its own.
async fn exec_tx(scratch: &PgConnectOptions, sql: &str) -> Result<()> {
    let mut conn = scratch.connect().await?;
    let mut tx = conn.begin().await?;
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    conn.close().await?;
    Ok(())
}

/// Checkpoints the server has completed (timed and requested): `pg_stat_checkpointer`
/// from PostgreSQL 17, `pg_stat_bgwriter` before.
async fn checkpoints(conn: &mut PgConnection) -> Result<i64> {
    let version: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int4")
        .fetch_one(&mut *conn)
        .await?;
    let sql = if version >= 170_000 {
        "SELECT num_timed + num_requested FROM pg_stat_checkpointer"
    } else {
        "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"
    };
    Ok(sqlx::query_scalar(sql).fetch_one(conn).await?)
}

/// The server's current WAL position, in bytes.
async fn wal_lsn(conn: &mut PgConnection) -> Result<f64> {
    let (lsn,): (f64,) = sqlx::query_as("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::float8")
        .fetch_one(conn)
        .await?;
    Ok(lsn)
}

async fn exec(conn: &mut PgConnection, sql: &str) -> Result<()> {
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(conn)
        .await?;
    Ok(())
}
