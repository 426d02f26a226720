//! Fleet check benchmark (`ARCHITECTURE.md` D3): the guard's full fleet check against the
//! floor (the same single catalog query, rows fetched and dropped) and against the naive
//! approach (per tenant, `information_schema` queries for the same columns and keys),
//! measured in one run.
//!
//! ```text
//! cargo bench -p contract-sqlx --bench fleet -- --tenants 1000
//! ```
//!
//! Needs PostgreSQL at `CONTRACT_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). It creates a uniquely named scratch
//! database, fills it with `--tenants N` schemas `tenant_00001…` (5 contracted tables and
//! 5 uncontracted ones each), injects drift in 1% of them, measures, and drops the
//! database again, also when a step fails.
//!
//! Options: `--tenants N` (1000), `--runs R` timed runs after one warm-up (5),
//! `--naive-runs R` timed runs of the naive loop (3), `--naive-sample M` time the naive
//! loop over the first M tenants only and extrapolate to N (for large fleets),
//! `--batch B` tenants per DDL batch (50), `--keep` keep the scratch database (to
//! investigate plans in psql; drop it by hand), `--reuse DB` measure a database kept by an
//! earlier `--keep` run with the same `--tenants` (neither created nor dropped).
//!
//! The last stdout line is one JSON object with the medians and ratios.

use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use contract_sqlx::{
    Contract, FleetReport, TenantDirectory, Tenants,
    backend::Backend,
    check::{ContractSet, check_tenant, snapshot},
    check_fleet,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor, PgPool, Postgres};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = BoxError> = std::result::Result<T, E>;

const URL_VAR: &str = "CONTRACT_TEST_PG_URL";
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

// ---------------------------------------------------------------------------------------
// The contracts: 5 tables, 6 columns each (30 contracted columns per tenant).
// ---------------------------------------------------------------------------------------

#[allow(dead_code)]
#[derive(sqlx::FromRow, Contract)]
#[contract(table = "accounts")]
struct Account {
    #[contract(primary_key)]
    id: i64,
    name: String,
    email: Option<String>,
    active: bool,
    created_at: DateTime<Utc>,
    settings: Option<serde_json::Value>,
}

#[allow(dead_code)]
#[derive(sqlx::FromRow, Contract)]
#[contract(table = "events")]
struct Event {
    #[contract(primary_key)]
    id: i64,
    #[contract(references = "accounts(id)")]
    account_id: i64,
    kind: String,
    payload: serde_json::Value,
    occurred_at: DateTime<Utc>,
    seq: i32,
}

#[allow(dead_code)]
#[derive(sqlx::FromRow, Contract)]
#[contract(table = "orders")]
struct Order {
    #[contract(primary_key)]
    id: i64,
    #[contract(references = "accounts(id)")]
    account_id: i64,
    total_cents: i64,
    status: String,
    note: Option<String>,
    placed_at: DateTime<Utc>,
}

#[allow(dead_code)]
#[derive(sqlx::FromRow, Contract)]
#[contract(table = "invoices")]
struct Invoice {
    #[contract(primary_key)]
    id: i64,
    #[contract(references = "orders(id)")]
    order_id: i64,
    amount_cents: i64,
    paid: bool,
    due_at: Option<DateTime<Utc>>,
    lines: serde_json::Value,
}

#[allow(dead_code)]
#[derive(sqlx::FromRow, Contract)]
#[contract(table = "sessions")]
struct Session {
    #[contract(primary_key)]
    id: i64,
    #[contract(references = "accounts(id)")]
    account_id: i64,
    token: String,
    expires_at: DateTime<Utc>,
    attempts: i32,
    meta: Option<serde_json::Value>,
}

const CONTRACTED_TABLES: usize = 5;

/// Untimed guard and raw runs before timing.
const WARM_UP_RUNS: usize = 6;

/// One tenant's DDL: the 5 contracted tables (matching the contracts above, plus an
/// uncontracted column or two) and 5 uncontracted tables.
fn tenant_ddl(sql: &mut String, schema: &str) {
    let _ = write!(
        sql,
        r#"
CREATE SCHEMA {schema};
CREATE TABLE {schema}.accounts (
    id bigint PRIMARY KEY, name text NOT NULL, email text, active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(), settings jsonb, updated_at timestamptz);
CREATE TABLE {schema}.events (
    id bigint PRIMARY KEY, account_id bigint NOT NULL REFERENCES {schema}.accounts(id), kind text NOT NULL,
    payload jsonb NOT NULL DEFAULT '{{}}', occurred_at timestamptz NOT NULL, seq integer NOT NULL, source text);
CREATE TABLE {schema}.orders (
    id bigint PRIMARY KEY, account_id bigint NOT NULL REFERENCES {schema}.accounts(id), total_cents bigint NOT NULL,
    status text NOT NULL DEFAULT 'new', note text, placed_at timestamptz NOT NULL);
CREATE TABLE {schema}.invoices (
    id bigint PRIMARY KEY, order_id bigint NOT NULL REFERENCES {schema}.orders(id), amount_cents bigint NOT NULL,
    paid boolean NOT NULL DEFAULT false, due_at timestamptz, lines jsonb NOT NULL, currency text);
CREATE TABLE {schema}.sessions (
    id bigint PRIMARY KEY, account_id bigint NOT NULL REFERENCES {schema}.accounts(id), token text NOT NULL,
    expires_at timestamptz NOT NULL, attempts integer NOT NULL DEFAULT 0, meta jsonb);
CREATE TABLE {schema}.audit_log (id bigint PRIMARY KEY, at timestamptz NOT NULL, actor text, action text NOT NULL, detail jsonb);
CREATE TABLE {schema}.tags (id integer PRIMARY KEY, label text NOT NULL, color text);
CREATE TABLE {schema}.notes (id bigint PRIMARY KEY, body text NOT NULL, pinned boolean NOT NULL DEFAULT false, created_at timestamptz);
CREATE TABLE {schema}.settings_kv (key text PRIMARY KEY, value jsonb NOT NULL, updated_at timestamptz);
CREATE TABLE {schema}.webhooks (id bigint PRIMARY KEY, url text NOT NULL, secret text, enabled boolean NOT NULL, retries integer);
"#
    );
}

/// 1% of tenants drift: tenants 50, 150, 250, … (1-based).
fn is_drifted(index: usize) -> bool {
    index % 100 == 50
}

/// Alternates between a dropped contracted column and `int8 → int4` under an `i64` field.
fn drift_ddl(sql: &mut String, schema: &str, index: usize) {
    if (index / 100).is_multiple_of(2) {
        let _ = writeln!(sql, "ALTER TABLE {schema}.events DROP COLUMN kind;");
    } else {
        let _ = writeln!(
            sql,
            "ALTER TABLE {schema}.orders ALTER COLUMN total_cents TYPE integer;"
        );
    }
}

fn tenant_name(index: usize, width: usize) -> String {
    format!("tenant_{index:0width$}")
}

// ---------------------------------------------------------------------------------------
// The queries measured besides the guard.
// ---------------------------------------------------------------------------------------

/// The guard's own catalog query (`postgres/query.rs` `COLUMNS`), so that "raw" is the floor
/// of exactly what the guard sends. The bench checks that it returns as many rows as the
/// guard's snapshot implies.
const RAW_COLUMNS: &str = contract_sqlx::__private::PG_INTROSPECTION_SQL;

/// The transaction the guard runs its catalog query in.
const RAW_BEGIN: &str = contract_sqlx::__private::PG_INTROSPECTION_BEGIN;

/// Runs the guard's catalog query and drops the rows: the floor of the guard's check.
async fn fetch_raw(
    pool: &PgPool,
    tables: &[String],
    schemas: &[String],
    columns: &[String],
) -> Result<usize> {
    // Exactly as the guard sends it: in its transaction (JIT off), as an unnamed statement.
    let mut tx = pool.begin_with(RAW_BEGIN).await?;
    let rows = sqlx::query(RAW_COLUMNS)
        .bind(tables)
        .bind(schemas)
        .bind(columns)
        .persistent(false)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(rows.len())
}

/// What a per-schema introspection loop (Diesel / sea-schema style) sends for each tenant.
const NAIVE_SCHEMA_COLUMNS: &str = r"
SELECT table_name::text, column_name::text, data_type::text, is_nullable::text, column_default::text, ordinal_position::int4
FROM information_schema.columns
WHERE table_schema = $1
ORDER BY table_name, ordinal_position
";

/// The same, narrowed to the contracted tables: columns (types, nullability, defaults)...
const NAIVE_COLUMNS: &str = r"
SELECT table_name::text, column_name::text, data_type::text, is_nullable::text, column_default::text, ordinal_position::int4
FROM information_schema.columns
WHERE table_schema = $1 AND table_name = ANY($2)
ORDER BY table_name, ordinal_position
";

/// ...and the primary and foreign keys of the same tables.
const NAIVE_KEYS: &str = r"
SELECT tc.table_name::text, tc.constraint_type::text, kcu.column_name::text, kcu.ordinal_position::int4
FROM information_schema.table_constraints tc
JOIN information_schema.key_column_usage kcu
  ON kcu.constraint_schema = tc.constraint_schema AND kcu.constraint_name = tc.constraint_name
WHERE tc.table_schema = $1 AND tc.table_name = ANY($2) AND tc.constraint_type IN ('PRIMARY KEY', 'FOREIGN KEY')
ORDER BY tc.table_name, kcu.ordinal_position
";

// ---------------------------------------------------------------------------------------
// Options.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Options {
    tenants: usize,
    runs: usize,
    naive_runs: usize,
    naive_sample: Option<usize>,
    batch: usize,
    keep: bool,
    reuse: Option<String>,
}

impl Options {
    fn parse() -> Result<Self> {
        let mut options = Options {
            tenants: 1000,
            runs: 5,
            naive_runs: 3,
            naive_sample: None,
            batch: 50,
            keep: false,
            reuse: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = |name: &str| -> Result<usize> {
                let text = args
                    .next()
                    .ok_or_else(|| format!("{name} needs a number"))?;
                let n: usize = text.parse().map_err(|e| format!("{name} {text}: {e}"))?;
                if n == 0 {
                    return Err(format!("{name} must be at least 1").into());
                }
                Ok(n)
            };
            match arg.as_str() {
                "--tenants" => options.tenants = value("--tenants")?,
                "--runs" => options.runs = value("--runs")?,
                "--naive-runs" => options.naive_runs = value("--naive-runs")?,
                "--naive-sample" => options.naive_sample = Some(value("--naive-sample")?),
                "--batch" => options.batch = value("--batch")?,
                "--keep" => options.keep = true,
                "--reuse" => {
                    let db = args.next().ok_or("--reuse needs a database name")?;
                    if !db.starts_with("contract_bench_fleet_")
                        || !db.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    {
                        return Err(
                            format!("--reuse {db}: not a database kept by this bench").into()
                        );
                    }
                    options.reuse = Some(db);
                }
                // `cargo bench` passes `--bench` to every bench binary.
                "--bench" => {}
                other => {
                    return Err(format!(
                        "unknown argument `{other}`; usage: fleet [--tenants N] [--runs R] [--naive-runs R] \
                         [--naive-sample M] [--batch B] [--keep] [--reuse DB]"
                    )
                    .into());
                }
            }
        }
        if options.naive_sample.is_some_and(|m| m >= options.tenants) {
            options.naive_sample = None;
        }
        Ok(options)
    }
}

// ---------------------------------------------------------------------------------------
// Main: the scratch database is dropped whatever happens in between.
// ---------------------------------------------------------------------------------------

fn main() {
    let options = match Options::parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("fleet bench: {e}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fleet bench: cannot start the tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    // A `LocalSet`: the measured futures need not be `Send` (see `main_with_scratch_db`).
    let local = tokio::task::LocalSet::new();
    if let Err(e) = runtime.block_on(local.run_until(main_with_scratch_db(options))) {
        eprintln!("fleet bench FAILED: {e}");
        std::process::exit(1);
    }
}

async fn main_with_scratch_db(options: Options) -> Result<()> {
    let (url, from_env) = match std::env::var(URL_VAR) {
        Ok(url) => (url, true),
        Err(_) => (DEFAULT_URL.to_owned(), false),
    };
    let where_from = if from_env {
        format!("from {URL_VAR}")
    } else {
        format!("default; set {URL_VAR} to override")
    };
    let admin_options = PgConnectOptions::from_str(&url)
        .map_err(|e| format!("{URL_VAR}: `{url}` ({where_from}) is not a PostgreSQL URL: {e}"))?;
    let mut admin = admin_options.connect().await.map_err(|e| {
        format!("cannot connect to PostgreSQL at `{url}` ({where_from}); start a server or set {URL_VAR}: {e}")
    })?;

    if let Some(db_name) = options.reuse.clone() {
        eprintln!("--reuse: measuring the kept database {db_name}");
        let _ = admin.close().await;
        let scratch = admin_options.database(&db_name);
        return match tokio::task::spawn_local(run(scratch, options)).await {
            Ok(result) => result,
            Err(join) => Err(format!("the bench panicked: {join}").into()),
        };
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let db_name = format!("contract_bench_fleet_{}_{nanos}", std::process::id());
    admin
        .execute(AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
        .await
        .map_err(|e| format!("creating scratch database {db_name}: {e}"))?;
    eprintln!("scratch database {db_name} created");

    // Run the bench in its own task so that a panic comes back here as an error and the
    // scratch database is still dropped.
    let scratch = admin_options.clone().database(&db_name);
    let keep = options.keep;
    let outcome = match tokio::task::spawn_local(run(scratch, options)).await {
        Ok(result) => result,
        Err(join) => Err(format!("the bench panicked: {join}").into()),
    };

    if keep {
        eprintln!("--keep: scratch database {db_name} kept; drop it with DROP DATABASE {db_name}");
        let _ = admin.close().await;
        return outcome;
    }
    let dropped = admin
        .execute(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"
        )))
        .await;
    let _ = admin.close().await;
    match dropped {
        Ok(_) => eprintln!("scratch database {db_name} dropped"),
        Err(e) => {
            eprintln!("WARNING: could not drop scratch database {db_name}: {e}; drop it by hand")
        }
    }
    outcome
}

// ---------------------------------------------------------------------------------------
// The bench proper.
// ---------------------------------------------------------------------------------------

async fn run(scratch: PgConnectOptions, options: Options) -> Result<()> {
    let n = options.tenants;
    let width = n.to_string().len().max(5);

    // --- 1. Fleet creation ------------------------------------------------------------
    let injected = if options.reuse.is_some() {
        (1..=n).filter(|&i| is_drifted(i)).count()
    } else {
        create_and_analyze(&scratch, n, width, options.batch).await?
    };

    // --- 2. Guard setup -----------------------------------------------------------------
    // One connection: every variant runs on the same warm session (statement cache, catalog
    // cache), one after the other, as a guard's periodic check would.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .connect_with(scratch)
        .await?;
    let contracts = ContractSet::<Postgres>::new()
        .with::<Account>()
        .with::<Event>()
        .with::<Order>()
        .with::<Invoice>()
        .with::<Session>();
    let directory = TenantDirectory::new()
        .discover(&pool, &Tenants::schemas_like("tenant_%"))
        .await?;
    let schemas: Vec<String> = directory
        .tenants()
        .iter()
        .map(|t| t.as_str().to_owned())
        .collect();
    if schemas.len() != n {
        return Err(format!("discovered {} tenant schemas, created {n}", schemas.len()).into());
    }
    let table_names = contracts.table_names();
    let column_names = contracts.column_names();
    let tables = CONTRACTED_TABLES * n;
    assert_eq!(contracts.entries().len(), CONTRACTED_TABLES);

    // --- 3. Measurements ----------------------------------------------------------------
    // Untimed runs first: a connection's first check fills the server's catalog caches,
    // and a long-running guard checks in that steady state.
    let runs = options.runs;
    eprintln!("measuring: {WARM_UP_RUNS} warm-up + {runs} runs each");

    // Guard and raw alternate run by run (the order flipping each round), so that a noisy
    // spell of this machine lands on both and their ratio stays meaningful.
    let mut report: Option<FleetReport> = None;
    let mut raw_rows = 0;
    let mut guard_run = async || {
        report = Some(check_fleet(&directory, &contracts).await?);
        Ok(())
    };
    let mut raw_run = async || {
        raw_rows = fetch_raw(&pool, &table_names, &schemas, &column_names).await?;
        Ok(())
    };
    for _ in 0..WARM_UP_RUNS {
        guard_run().await?;
        raw_run().await?;
    }
    let (mut guard_samples, mut raw_samples) = (Samples::default(), Samples::default());
    for round in 0..runs {
        if round % 2 == 0 {
            guard_samples.time(&mut guard_run).await?;
            raw_samples.time(&mut raw_run).await?;
        } else {
            raw_samples.time(&mut raw_run).await?;
            guard_samples.time(&mut guard_run).await?;
        }
    }
    let (guard, raw) = (guard_samples.timing(), raw_samples.timing());
    let report = report.ok_or("no guard run")?;

    // Both again under each forced plan mode, to show what a generic plan would cost (the
    // guard sends an unnamed statement, planned with the actual arrays every time).
    let mut by_plan = Vec::new();
    for mode in ["force_custom_plan", "force_generic_plan"] {
        pool.execute(AssertSqlSafe(format!("SET plan_cache_mode = {mode}")))
            .await?;
        let g = measure(1, runs, async || {
            check_fleet(&directory, &contracts)
                .await
                .map(drop)
                .map_err(Into::into)
        })
        .await?;
        let r = measure(1, runs, async || {
            fetch_raw(&pool, &table_names, &schemas, &column_names)
                .await
                .map(drop)
        })
        .await?;
        by_plan.push((mode, g, r));
    }
    pool.execute("RESET plan_cache_mode").await?;

    // Where the guard's time goes (same calls as `check_fleet`, timed one by one).
    let mut phases = Phases::default();
    for i in 0..=runs {
        let t = Instant::now();
        let live = <Postgres as Backend>::introspect(&pool, &schemas, &contracts).await?;
        let introspect = t.elapsed();
        let t = Instant::now();
        let types = <Postgres as Backend>::resolve_types(&pool, &live).await?;
        let resolve = t.elapsed();
        drop((live, types));
        let t = Instant::now();
        let snap = snapshot(&pool, &schemas, &contracts).await?;
        let snapshot_time = t.elapsed();
        let t = Instant::now();
        let mut reports: Vec<_> = schemas
            .iter()
            .map(|s| check_tenant(s, &contracts, &snap))
            .collect();
        reports.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        let diff = t.elapsed();
        if i > 0 {
            phases.introspect.push(introspect);
            phases.resolve.push(resolve);
            phases.snapshot.push(snapshot_time);
            phases.diff.push(diff);
        }
        if i == runs {
            phases.live_tables = snap.tables.len();
            phases.live_columns = snap.tables.values().map(|t| t.columns.len()).sum();
            phases.expected_rows = snap.tables.values().map(|t| t.columns.len().max(1)).sum();
            phases.types = snap.types.len();
        }
    }

    let sample = options.naive_sample.unwrap_or(n);
    let naive_schemas = &schemas[..sample];
    // (c) The naive approach as the issue states it: one `information_schema.columns`
    // query per tenant, for the tenant's schema (what per-schema tools send). Two more
    // variants are printed for transparency: the same query narrowed to the contracted
    // tables, and that plus the key query (the same information the guard's one query
    // returns).
    let mut naive_rows = 0;
    let naive_sampled = measure(1, options.naive_runs, async || {
        let mut rows = 0;
        for schema in naive_schemas {
            rows += sqlx::query(NAIVE_SCHEMA_COLUMNS)
                .bind(schema)
                .fetch_all(&pool)
                .await?
                .len();
        }
        naive_rows = rows;
        Ok(())
    })
    .await?;
    let naive = naive_sampled.scaled(n, sample);
    let scoped = measure(0, options.naive_runs, async || {
        for schema in naive_schemas {
            sqlx::query(NAIVE_COLUMNS)
                .bind(schema)
                .bind(&table_names)
                .fetch_all(&pool)
                .await?;
        }
        Ok(())
    })
    .await?
    .scaled(n, sample);
    // A key query per tenant costs ~0.1 s: time it on at most 100 tenants and extrapolate.
    let keys_sample = sample.min(100);
    let with_keys = measure(0, 1, async || {
        for schema in &naive_schemas[..keys_sample] {
            sqlx::query(NAIVE_COLUMNS)
                .bind(schema)
                .bind(&table_names)
                .fetch_all(&pool)
                .await?;
            sqlx::query(NAIVE_KEYS)
                .bind(schema)
                .bind(&table_names)
                .fetch_all(&pool)
                .await?;
        }
        Ok(())
    })
    .await?
    .scaled(n, keys_sample);

    pool.close().await;

    // --- 4. Results ---------------------------------------------------------------------
    let drifted_found = report.tenants_with("drifted").count();
    let unreachable = report.tenants_with("unreachable").count();
    let guard_ms = ms(guard.median);
    let raw_ms = ms(raw.median);
    let naive_ms = ms(naive.median);
    let guard_vs_raw = guard_ms / raw_ms;
    let naive_vs_guard = naive_ms / guard_ms;

    println!();
    println!(
        "fleet check: {n} tenants, {tables} contracted tables, {} contracts",
        contracts.entries().len()
    );
    println!("{}", report.summary());
    println!();
    println!(
        "{:<44} {:>10} {:>10} {:>10} {:>10}  runs",
        "variant", "median ms", "min ms", "max ms", "client cpu"
    );
    guard.print("guard: check_fleet (all phases)", runs);
    raw.print("raw: guard's catalog query, rows dropped", runs);
    let naive_label = if sample < n {
        format!(
            "naive: information_schema x{sample} (x{:.1})",
            ratio(n, sample)
        )
    } else {
        format!("naive: information_schema x{n} tenants")
    };
    naive.print(&naive_label, options.naive_runs);
    scoped.print("naive, narrowed to contracted tables", options.naive_runs);
    with_keys.print(
        &format!(
            "naive, narrowed + keys x{keys_sample} (x{:.1})",
            ratio(n, keys_sample)
        ),
        1,
    );
    for (mode, g, r) in &by_plan {
        g.print(&format!("guard, plan_cache_mode={mode}"), runs);
        r.print(&format!("raw, plan_cache_mode={mode}"), runs);
    }
    println!();
    println!("guard breakdown (medians of {runs} runs, measured separately):");
    let show = |label: &str, samples: &[Duration]| {
        println!("  {label:<42} {:>10.1}", ms(Timing::of(samples).median))
    };
    show(
        "introspect (query + row decode + parse)",
        &phases.introspect,
    );
    show("resolve_types (one probe)", &phases.resolve);
    show("snapshot (introspect + resolve + map)", &phases.snapshot);
    show("check_tenant x N + sort (diff, report)", &phases.diff);
    println!(
        "  live tables {}, live columns {}, distinct types {}; raw rows {raw_rows} (expected {}), naive rows {naive_rows}",
        phases.live_tables, phases.live_columns, phases.types, phases.expected_rows
    );
    println!();
    println!(
        "guard/raw {guard_vs_raw:.2} (target <= 1.5), naive/guard {naive_vs_guard:.2} (target >= 10), \
         drifted found {drifted_found} / injected {injected}"
    );
    if raw_rows != phases.expected_rows {
        println!(
            "WARNING: the raw query returned {raw_rows} rows, the guard's snapshot implies {}: RAW_COLUMNS no longer matches postgres/query.rs COLUMNS",
            phases.expected_rows
        );
    }
    if unreachable > 0 {
        println!("WARNING: {unreachable} tenants unreachable");
    }
    if drifted_found != injected {
        println!("WARNING: drifted tenants found {drifted_found} != injected {injected}");
        for t in report.tenants_with("drifted").take(5) {
            println!("  {}: {:?}", t.tenant, t.findings.first());
        }
    }

    // Keys in this order; serde_json's map would sort them.
    let mut json = format!(
        "{{\"bench\":\"fleet\",\"tenants\":{n},\"tables\":{tables},\"guard_ms\":{guard_ms:.1},\
         \"raw_catalog_ms\":{raw_ms:.1},\"naive_ms\":{naive_ms:.1},\"guard_vs_raw\":{guard_vs_raw:.2},\
         \"naive_vs_guard\":{naive_vs_guard:.2},\"drifted_found\":{drifted_found},\"drifted_injected\":{injected},\
         \"naive_scoped_ms\":{:.1},\"naive_scoped_with_keys_ms\":{:.1}",
        ms(scoped.median),
        ms(with_keys.median)
    );
    if sample < n {
        // Only with --naive-sample: say that naive_ms is extrapolated.
        let _ = write!(json, ",\"naive_extrapolated_from_tenants\":{sample}");
    }
    json.push('}');
    println!("{json}");
    Ok(())
}

/// Creates the fleet and refreshes the catalog statistics. Returns how many were drifted.
async fn create_and_analyze(
    scratch: &PgConnectOptions,
    n: usize,
    width: usize,
    batch: usize,
) -> Result<usize> {
    let ddl_pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(scratch.clone())
        .await?;
    let started = Instant::now();
    let injected = create_fleet(&ddl_pool, n, width, batch).await?;
    eprintln!(
        "created {n} tenants ({injected} drifted) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Fresh catalog statistics, as a long-lived database would have.
    let started = Instant::now();
    ddl_pool
        .execute(
            "VACUUM ANALYZE pg_catalog.pg_class, pg_catalog.pg_attribute, pg_catalog.pg_namespace, \
             pg_catalog.pg_constraint, pg_catalog.pg_attrdef, pg_catalog.pg_type",
        )
        .await?;
    eprintln!(
        "vacuum analyze of the catalogs took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    ddl_pool.close().await;
    Ok(injected)
}

/// Creates `n` tenant schemas in batches of `batch` tenants (one multi-statement string,
/// one implicit transaction each), on two connections. Returns how many were drifted.
async fn create_fleet(pool: &PgPool, n: usize, width: usize, batch: usize) -> Result<usize> {
    let batches: Vec<(usize, usize)> = (1..=n)
        .step_by(batch)
        .map(|first| (first, (first + batch - 1).min(n)))
        .collect();
    let batches = Arc::new(batches);
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..2 {
        let (pool, batches, next, done) =
            (pool.clone(), batches.clone(), next.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(first, last)) = batches.get(i) else {
                    return Ok::<_, BoxError>(());
                };
                let mut sql = String::with_capacity(4096 * (last - first + 1));
                for index in first..=last {
                    let schema = tenant_name(index, width);
                    tenant_ddl(&mut sql, &schema);
                    if is_drifted(index) {
                        drift_ddl(&mut sql, &schema, index);
                    }
                }
                sqlx::raw_sql(AssertSqlSafe(sql))
                    .execute(&pool)
                    .await
                    .map_err(|e| format!("creating tenants {first}..={last}: {e}"))?;
                let total = done.fetch_add(last - first + 1, Ordering::Relaxed) + last - first + 1;
                let step = (n / 10).max(batch);
                if total % step < last - first + 1 || total == n {
                    eprintln!(
                        "  {total}/{n} tenants created ({:.1} s)",
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        }));
    }
    for worker in workers {
        worker.await??;
    }
    Ok((1..=n).filter(|&i| is_drifted(i)).count())
}

// ---------------------------------------------------------------------------------------
// Timing helpers.
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Phases {
    introspect: Vec<Duration>,
    resolve: Vec<Duration>,
    snapshot: Vec<Duration>,
    diff: Vec<Duration>,
    live_tables: usize,
    live_columns: usize,
    expected_rows: usize,
    types: usize,
}

#[derive(Debug, Clone, Copy)]
struct Timing {
    median: Duration,
    min: Duration,
    max: Duration,
    /// Mean CPU time of this process per run, where measured.
    client_cpu: Option<Duration>,
}

impl Timing {
    fn of(samples: &[Duration]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort();
        let mid = sorted.len() / 2;
        let median = if sorted.len().is_multiple_of(2) {
            (sorted[mid - 1] + sorted[mid]) / 2
        } else {
            sorted[mid]
        };
        Timing {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            client_cpu: None,
        }
    }

    /// Scales a measurement over `sample` tenants to `n` tenants.
    fn scaled(self, n: usize, sample: usize) -> Self {
        if sample == n {
            return self;
        }
        let f = ratio(n, sample);
        Timing {
            median: self.median.mul_f64(f),
            min: self.min.mul_f64(f),
            max: self.max.mul_f64(f),
            client_cpu: self.client_cpu.map(|c| c.mul_f64(f)),
        }
    }

    fn print(&self, label: &str, runs: usize) {
        let cpu = self
            .client_cpu
            .map_or_else(|| "-".to_owned(), |c| format!("{:.1}", ms(c)));
        println!(
            "{label:<44} {:>10.1} {:>10.1} {:>10.1} {cpu:>10}  {runs}",
            ms(self.median),
            ms(self.min),
            ms(self.max)
        );
    }
}

/// `warmups` untimed runs, then `runs` timed runs of `f`.
async fn measure(
    warmups: usize,
    runs: usize,
    mut f: impl AsyncFnMut() -> Result<()>,
) -> Result<Timing> {
    for _ in 0..warmups {
        f().await?;
    }
    let mut samples = Samples::default();
    for _ in 0..runs {
        samples.time(&mut f).await?;
    }
    Ok(samples.timing())
}

/// Wall-clock samples of one variant, with this process's CPU time over the same runs.
#[derive(Default)]
struct Samples {
    wall: Vec<Duration>,
    /// Total CPU time over the runs, when every run could read it.
    cpu: Option<Duration>,
    cpu_runs: usize,
}

impl Samples {
    async fn time(&mut self, f: &mut impl AsyncFnMut() -> Result<()>) -> Result<()> {
        let before = process_cpu();
        let t = Instant::now();
        f().await?;
        self.wall.push(t.elapsed());
        if let (Some(before), Some(after)) = (before, process_cpu()) {
            *self.cpu.get_or_insert_default() += after.saturating_sub(before);
            self.cpu_runs += 1;
        }
        Ok(())
    }

    fn timing(&self) -> Timing {
        let mut timing = Timing::of(&self.wall);
        if self.cpu_runs == self.wall.len() {
            timing.client_cpu = self
                .cpu
                .map(|total| total / u32::try_from(self.cpu_runs).unwrap_or(u32::MAX));
        }
        timing
    }
}

/// User + system CPU time of this process, all threads including finished ones (Linux
/// `/proc/self/stat`, in clock ticks of 10 ms: hence a mean over the runs), or `None` where
/// that is not available: the client's own share of a run, free of the server's.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ratio(a: usize, b: usize) -> f64 {
    let (a, b) = (
        u32::try_from(a).unwrap_or(u32::MAX),
        u32::try_from(b).unwrap_or(u32::MAX),
    );
    f64::from(a) / f64::from(b)
}
