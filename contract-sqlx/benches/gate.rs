//! Cost of `Guard::gate` when nothing changed, against a baseline measured in the same
//! run: a plain `HashMap<String, bool>` lookup of the same tenant names (the least any
//! in-memory gate must do). Embedded SQLite tenants; no server needed. A metrics recorder
//! is installed first, as in production (a cheap one: atomic counters, a histogram that
//! sums), so the gate's metric calls cost what they cost there.
//!
//! `cargo bench -p contract-sqlx --bench gate` — last stdout line is one JSON object.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

use contract_sqlx::{Contract, Guard, sqlite_tenant_files};
use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

#[derive(sqlx::FromRow, Contract)]
#[contract(table = "events")]
#[allow(dead_code)]
struct Event {
    id: i64,
    body: String,
}

const TENANTS: usize = 200;
const CALLS: usize = 2_000_000;

/// A recorder as cheap as a real exporter can be: atomics only.
#[derive(Debug, Default)]
struct AtomicRecorder;

/// A histogram that keeps count and sum.
#[derive(Debug, Default)]
struct Summary {
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl metrics::HistogramFn for Summary {
    fn record(&self, value: f64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        self.sum_nanos
            .fetch_add((value * 1e9) as u64, Ordering::Relaxed);
    }
}

impl Recorder for AtomicRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(AtomicU64::new(0)))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(AtomicU64::new(0)))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(Summary::default()))
    }
}

fn median(mut runs: Vec<f64>) -> f64 {
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

fn time_per_call(names: &[String], mut f: impl FnMut(&str) -> bool) -> f64 {
    let started = Instant::now();
    let mut open = 0usize;
    for i in 0..CALLS {
        open += usize::from(f(&names[i % names.len()]));
    }
    black_box(open);
    #[allow(clippy::cast_precision_loss)]
    let per_call = started.elapsed().as_nanos() as f64 / CALLS as f64;
    per_call
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    metrics::set_global_recorder(AtomicRecorder)
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    let scratch = tempfile::Builder::new()
        .prefix("contract-gate-bench-")
        .tempdir()?;
    let dir = scratch.path().to_owned();
    let names: Vec<String> = (0..TENANTS).map(|i| format!("tenant_{i}")).collect();
    for name in &names {
        let options = SqliteConnectOptions::new()
            .filename(dir.join(format!("{name}.db")))
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        sqlx::raw_sql("CREATE TABLE events (id INTEGER NOT NULL, body TEXT NOT NULL)")
            .execute(&pool)
            .await?;
        pool.close().await;
    }
    let control = SqlitePoolOptions::new().connect("sqlite::memory:").await?;
    let guard = Guard::<Sqlite>::builder()
        .contract::<Event>()
        .directory(sqlite_tenant_files(&dir).await?)
        .in_memory_control()
        .start(&control)
        .await?;
    let baseline_map: HashMap<String, bool> = names.iter().map(|n| (n.clone(), true)).collect();

    let (mut gate_runs, mut base_runs) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        base_runs.push(time_per_call(&names, |t| {
            baseline_map.get(t).copied().unwrap_or(false)
        }));
        gate_runs.push(time_per_call(&names, |t| guard.gate(t).is_open()));
    }
    let (gate_ns, base_ns) = (median(gate_runs), median(base_runs));
    println!("tenants: {TENANTS}, calls per run: {CALLS}, runs: 5 (median)");
    println!("HashMap<String, bool> lookup (baseline): {base_ns:.1} ns/call");
    println!("Guard::gate (open, no change):          {gate_ns:.1} ns/call");
    scratch.close()?;
    println!(
        "{{\"bench\":\"gate\",\"tenants\":{TENANTS},\"gate_ns\":{gate_ns:.1},\"baseline_ns\":{base_ns:.1},\"gate_vs_baseline\":{:.2}}}",
        gate_ns / base_ns
    );
    Ok(())
}
