//! Guard memory benchmark: the maximum resident set size of a process holding a started
//! guard over a fleet while it runs revalidation passes.
//!
//! ```text
//! cargo bench -p contract-sqlx --bench memory -- --tenants 10000
//! ```
//!
//! Needs PostgreSQL at `CONTRACT_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). It creates a uniquely named scratch
//! database with `--tenants N` compliant schemas (5 contracted tables each,
//! `benches/pgfleet`), and drops it again, also when a step fails. Then, `--runs R` (3)
//! times, it starts a child process (this bench again, with `--child`) that starts a guard
//! over the fleet on a 2-worker tokio runtime and runs `--passes P` (20) revalidation
//! passes; the parent reads the child's peak RSS (`VmHWM` in `/proc/<pid>/status`) once the
//! passes are done, before the child exits.
//!
//! The last stdout line is one JSON object: `{"bench":"memory","tenants":…,"max_rss_mb":…}`
//! (the median over the runs, in MB of 10^6 bytes).

mod pgfleet;

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Command, Stdio};
use std::str::FromStr as _;
use std::time::Instant;

use contract_sqlx::{Guard, Tenants};
use pgfleet::Result;
use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let (Some(db), Some(passes)) = (args.get(i + 1), args.get(i + 2)) else {
            eprintln!("memory bench child: --child <database> <passes>");
            std::process::exit(2);
        };
        let passes: usize = passes.parse().unwrap_or(1);
        pgfleet::run_main("memory (child)", child(db.clone(), passes));
        return;
    }
    let mut options = [("--tenants", 1000), ("--runs", 3), ("--passes", 20)];
    if let Err(e) =
        pgfleet::parse_args("memory [--tenants N] [--runs R] [--passes P]", &mut options)
    {
        eprintln!("memory bench: {e}");
        std::process::exit(2);
    }
    let [(_, tenants), (_, runs), (_, passes)] = options;
    pgfleet::run_main(
        "memory",
        pgfleet::with_scratch_db("contract_bench_memory", move |scratch| {
            parent(scratch, tenants, runs, passes)
        }),
    );
}

fn no_drift(_: &mut String, _: &str) {}

async fn parent(scratch: PgConnectOptions, n: usize, runs: usize, passes: usize) -> Result<()> {
    pgfleet::create_fleet(&scratch, n, no_drift).await?;
    let db = scratch
        .get_database()
        .ok_or("the scratch database has no name")?
        .to_owned();
    let exe = std::env::current_exe()?;
    let mut peaks = Vec::new();
    for run in 1..=runs {
        let started = Instant::now();
        let exe = exe.clone();
        let db = db.clone();
        let peak_kb = tokio::task::spawn_blocking(move || measure_child(&exe, &db, passes))
            .await
            .map_err(|e| format!("child watcher panicked: {e}"))??;
        eprintln!(
            "run {run}: peak RSS {:.1} MB after {passes} passes ({:.1} s)",
            mb(peak_kb),
            started.elapsed().as_secs_f64()
        );
        peaks.push(peak_kb);
    }
    peaks.sort_unstable();
    let median = peaks[peaks.len() / 2];
    println!();
    println!(
        "guard over {n} tenants x 5 contracted tables, {passes} passes: peak RSS min {:.1} / median {:.1} / max {:.1} MB ({runs} runs)",
        mb(peaks[0]),
        mb(median),
        mb(peaks[peaks.len() - 1])
    );
    println!(
        "{{\"bench\":\"memory\",\"tenants\":{n},\"max_rss_mb\":{:.1}}}",
        mb(median)
    );
    Ok(())
}

/// Starts the child, waits for its "passes done" line, reads its peak RSS, lets it exit.
fn measure_child(exe: &std::path::Path, db: &str, passes: usize) -> Result<u64> {
    let mut child = Command::new(exe)
        .args(["--child", db, &passes.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no child stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut done = false;
    for line in lines.by_ref() {
        if line? == "passes done" {
            done = true;
            break;
        }
    }
    let peak = if done {
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .ok_or("no VmHWM in the child's /proc status")?
    } else {
        0
    };
    drop(child.stdin.take());
    for line in lines {
        drop(line);
    }
    let status = child.wait()?;
    if !done || !status.success() {
        return Err(format!("the child failed ({status})").into());
    }
    Ok(peak)
}

fn mb(kb: u64) -> f64 {
    // u64 → f64 is exact below 2^53 kB.
    #[allow(clippy::cast_precision_loss)]
    let kb = kb as f64;
    kb * 1024.0 / 1e6
}

/// The child: a guard over the fleet, `passes` revalidation passes, then "passes done" on
/// stdout and a wait for stdin to close (the parent reads the peak meanwhile).
async fn child(db: String, passes: usize) -> Result<()> {
    let base = std::env::var(pgfleet::URL_VAR).unwrap_or_else(|_| pgfleet::DEFAULT_URL.into());
    let options = PgConnectOptions::from_str(&base)?.database(&db);
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await?;
    let guard = Guard::<Postgres>::builder()
        .contracts(pgfleet::contracts())
        .tenants(Tenants::schemas_like("tenant_%"))
        .in_memory_control()
        .start(&pool)
        .await?;
    for _ in 0..passes {
        guard.revalidate().await?;
    }
    let report = guard.report();
    if report.tenants_with("compliant").count() != report.tenants.len() {
        return Err(format!("not every tenant compliant: {}", report.summary()).into());
    }
    println!("passes done");
    tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        let _ = std::io::stdin().read_to_string(&mut sink);
    })
    .await?;
    drop(guard);
    pool.close().await;
    Ok(())
}
