//! A guard over 300 SQLite tenant files holds a bounded number of connections: each sqlx
//! SQLite connection is a worker thread and a file descriptor, so the process's threads
//! and open files are sampled while the guard starts and revalidates, and must stay within
//! the directory's connection budget plus a constant.
//!
//! This binary holds this one test: the counts are process-wide.

// The shared helpers, compiled once in the `contract-tests` library.
use contract_tests::support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use contract_sqlx::tenants::ConnectionBudget;
use contract_sqlx::{Contract, Guard, check::ContractSet, sqlite_tenant_files};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{ConnectOptions, Connection, Sqlite};

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "events")]
#[allow(dead_code)]
struct Event {
    #[contract(primary_key)]
    id: i64,
    body: String,
}

const TENANTS: usize = 300;
const DRIFTED: &str = "tenant_042";
/// The budget `sqlite_tenant_files` gives a directory.
const BUDGET: usize = ConnectionBudget::DEFAULT_CONNECTIONS as usize;
/// Beyond the budget's idle connections, at any moment: the guard's control connection
/// (1); the tenant connection the pass is using (1); the previous file's, still going
/// through the budget's release hook (1); the idle connection that hook closes to make
/// room, while it closes (1); the sampler's own handle on `/proc/self/fd` (1). And worker
/// threads that acknowledged their close but have not been scheduled to exit yet: a few
/// on a busy machine (up to 7 seen with a load of 10 on 2 cores), 7 allowed.
const SLACK: usize = 12;

/// CPU time of the whole process (every thread, the connections' workers included), in
/// clock ticks (`utime + stime` of `/proc/self/stat`): steadier than wall time on a busy
/// machine.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after `(comm)` start with the 3rd (state); utime is the 14th, stime the 15th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(14) + field(15)
}

fn entries(dir: &str) -> usize {
    std::fs::read_dir(dir).map_or(0, Iterator::count)
}

/// Samples the process's thread and open-file counts on a thread of its own until dropped,
/// keeping the highest of each.
struct Peaks {
    stop: Arc<AtomicBool>,
    threads: Arc<AtomicUsize>,
    fds: Arc<AtomicUsize>,
}

impl Peaks {
    fn start() -> Self {
        let (stop, threads, fds) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (s, t, f) = (stop.clone(), threads.clone(), fds.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                t.fetch_max(entries("/proc/self/task"), Ordering::Relaxed);
                f.fetch_max(entries("/proc/self/fd"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(200));
            }
        });
        Self { stop, threads, fds }
    }

    /// `(threads, fds)` so far; resets them.
    fn take(&self) -> (usize, usize) {
        (
            self.threads.swap(0, Ordering::Relaxed),
            self.fds.swap(0, Ordering::Relaxed),
        )
    }
}

impl Drop for Peaks {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn create_tenant(dir: &Path, tenant: &str, ddl: &str) {
    let mut conn = SqliteConnectOptions::new()
        .filename(dir.join(format!("{tenant}.db")))
        .create_if_missing(true)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("create {tenant}: {e}"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(ddl.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{ddl}: {e}"));
    conn.close().await.expect("close");
}

#[tokio::test]
async fn guard_over_300_tenant_files_stays_within_the_connection_budget() {
    let scratch = support::TempDir::new("contract_sqlite_budget");
    let tenants = scratch.0.join("tenants");
    std::fs::create_dir_all(&tenants).expect("tenants dir");
    for i in 0..TENANTS {
        let tenant = format!("tenant_{i:03}");
        let ddl = if tenant == DRIFTED {
            "CREATE TABLE events (id INTEGER PRIMARY KEY)"
        } else {
            "CREATE TABLE events (id INTEGER PRIMARY KEY, body TEXT NOT NULL)"
        };
        create_tenant(&tenants, &tenant, ddl).await;
    }
    let peaks = Peaks::start();
    // Let the sampler settle, then take the baseline: everything but the guard.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (base_threads, base_fds) = peaks.take();

    let control = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(scratch.0.join("control.db"))
                .create_if_missing(true),
        )
        .await
        .expect("control pool");
    let (started, cpu) = (Instant::now(), cpu_ticks());
    let guard = Guard::<Sqlite>::builder()
        .contracts(ContractSet::new().with::<Event>())
        .directory(sqlite_tenant_files(&tenants).await.expect("tenant files"))
        .in_memory_control()
        .start(&control)
        .await
        .expect("guard start");
    println!(
        "start (first pass) over {TENANTS} files: {:?} wall, {} CPU ticks",
        started.elapsed(),
        cpu_ticks() - cpu
    );
    for pass in 1..=3 {
        let (started, cpu) = (Instant::now(), cpu_ticks());
        let summary = guard.revalidate().await.expect("revalidate");
        println!(
            "pass {pass} over {} files: {:?} wall, {} CPU ticks",
            summary.introspected,
            started.elapsed(),
            cpu_ticks() - cpu
        );
    }
    // Wait for connections handed back after the last statement to settle.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (threads, fds) = peaks.take();
    let (threads, fds) = (
        threads.saturating_sub(base_threads),
        fds.saturating_sub(base_fds),
    );
    println!("peak above baseline: {threads} threads, {fds} open files (budget {BUDGET})");

    assert!(!guard.gate(DRIFTED).is_open(), "{DRIFTED} is drifted");
    let closed: Vec<String> = (0..TENANTS)
        .map(|i| format!("tenant_{i:03}"))
        .filter(|t| t != DRIFTED && !guard.gate(t).is_open())
        .collect();
    assert!(closed.is_empty(), "healthy tenants paused: {closed:?}");
    assert!(
        threads <= BUDGET + SLACK && fds <= BUDGET + SLACK,
        "{threads} threads and {fds} open files above the baseline; the budget is {BUDGET} connections (+{SLACK})"
    );
    drop(guard);
    control.close().await;
}
