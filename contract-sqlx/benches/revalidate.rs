//! Revalidation benchmark: a sweep over an unchanged fleet against the raw catalog query
//! (the guard's own introspection query, rows fetched and dropped), and how fast one
//! tenant's DDL closes its gate, with the DDL event trigger and with the fallback sweep.
//!
//! ```text
//! cargo bench -p contract-sqlx --bench revalidate -- --tenants 1000
//! ```
//!
//! Needs PostgreSQL at `CONTRACT_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). It creates a uniquely named scratch
//! database with `--tenants N` schemas (5 contracted tables each, 6 contracted columns per
//! table, keys and foreign keys), measures, and drops the database again, also when a step
//! fails.
//!
//! * `fallback_unchanged_ms`: median of `guard.revalidate()` without the event trigger (a
//!   sweep: tenant discovery, the trigger check, then the catalog mark, which finds no
//!   catalog row changed since the last sweep and keeps the signatures) over `--runs`
//!   rounds; `fallback_raw_ms`: median of the raw catalog query over the same rounds,
//!   interleaved; `fallback_vs_raw` their ratio.
//! * `elsewhere_ms`: the same sweep right after DDL outside the tenants (a table created in
//!   `public`, not timed): the mark moved, so the sweep reads every tenant's catalog
//!   signature too, and none moved (the fallback's worst case on a database whose catalogs
//!   change between sweeps); `elsewhere_vs_raw` against the raw query.
//! * `mark_ms`: median of the catalog mark alone (`Backend::signatures_since`, catalogs
//!   unchanged), in the same rounds; `mark_vs_raw` against the raw query.
//! * `discovery_ms`: median of tenant discovery alone (the directory's listing query, as
//!   each pass runs it to find new and removed tenants), in the same rounds; its share of
//!   the sweep is `discovery_vs_raw` against the raw query.
//! * `signatures_ms`: median of the catalog signature query alone (`Backend::signatures`
//!   over every tenant, the fallback sweep's own change signal), in the same rounds;
//!   `signatures_vs_raw` against the raw query.
//! * `unchanged_ms`: the same sweep with the event trigger installed (its per-schema
//!   versions are the signal, `"signal"` names it); `raw_ms`: the raw catalog query
//!   interleaved with those rounds; `unchanged_vs_raw` their ratio.
//! * `detect_fallback_ms`: DDL on one tenant, then one sweep: from the DDL's commit to the
//!   end of the sweep that closed the gate (without the wait for the periodic interval).
//! * `detect_trigger_ms`: DDL on one tenant with the event trigger installed and the guard
//!   listening (`listen_for_ddl` + `spawn`, periodic sweep an hour away): from the DDL's
//!   commit until `gate(tenant)` is closed, polled every 0.2 ms.
//!
//! Options: `--tenants N` (1000), `--runs R` (5, at least 5), `--batch B` tenants per DDL
//! batch (50). The last stdout line is one JSON object.

use std::str::FromStr;
use std::time::{Duration, Instant};

use contract_sqlx::backend::{Backend as _, SignatureRead};
use contract_sqlx::guard::{ChangeSignal, install_ddl_trigger};
use contract_sqlx::{Contract, Guard, TenantDirectory, Tenants, check::ContractSet};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor, PgPool, Postgres};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = BoxError> = std::result::Result<T, E>;

const URL_VAR: &str = "CONTRACT_TEST_PG_URL";
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

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

fn contracts() -> ContractSet<Postgres> {
    ContractSet::new()
        .with::<Account>()
        .with::<Event>()
        .with::<Order>()
        .with::<Invoice>()
        .with::<Session>()
}

fn tenant_ddl(sql: &mut String, s: &str) {
    sql.push_str(&format!(
        r#"
CREATE SCHEMA {s};
CREATE TABLE {s}.accounts (id bigint PRIMARY KEY, name text NOT NULL, email text, active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(), settings jsonb);
CREATE TABLE {s}.events (id bigint PRIMARY KEY, account_id bigint NOT NULL REFERENCES {s}.accounts(id), kind text NOT NULL,
    payload jsonb NOT NULL DEFAULT '{{}}', occurred_at timestamptz NOT NULL, seq integer NOT NULL);
CREATE TABLE {s}.orders (id bigint PRIMARY KEY, account_id bigint NOT NULL REFERENCES {s}.accounts(id), total_cents bigint NOT NULL,
    status text NOT NULL DEFAULT 'new', note text, placed_at timestamptz NOT NULL);
CREATE TABLE {s}.invoices (id bigint PRIMARY KEY, order_id bigint NOT NULL REFERENCES {s}.orders(id), amount_cents bigint NOT NULL,
    paid boolean NOT NULL DEFAULT false, due_at timestamptz, lines jsonb NOT NULL);
CREATE TABLE {s}.sessions (id bigint PRIMARY KEY, account_id bigint NOT NULL REFERENCES {s}.accounts(id), token text NOT NULL,
    expires_at timestamptz NOT NULL, attempts integer NOT NULL DEFAULT 0, meta jsonb);
"#
    ));
}

fn tenant_name(index: usize) -> String {
    format!("tenant_{index:05}")
}

struct Options {
    tenants: usize,
    runs: usize,
    batch: usize,
}

impl Options {
    fn parse() -> Result<Self> {
        let mut options = Options {
            tenants: 1000,
            runs: 5,
            batch: 50,
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
                "--runs" => options.runs = value("--runs")?.max(5),
                "--batch" => options.batch = value("--batch")?,
                "--bench" => {}
                other => {
                    return Err(format!(
                        "unknown argument `{other}`; usage: revalidate [--tenants N] [--runs R] [--batch B]"
                    )
                    .into());
                }
            }
        }
        Ok(options)
    }
}

fn main() {
    let options = match Options::parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("revalidate bench: {e}");
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
            eprintln!("revalidate bench: cannot start the tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(with_scratch_db(options)) {
        eprintln!("revalidate bench FAILED: {e}");
        std::process::exit(1);
    }
}

async fn with_scratch_db(options: Options) -> Result<()> {
    let url = std::env::var(URL_VAR).unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let admin_options = PgConnectOptions::from_str(&url)
        .map_err(|e| format!("{URL_VAR}: `{url}` is not a PostgreSQL URL: {e}"))?;
    let mut admin = admin_options.connect().await.map_err(|e| {
        format!("cannot connect to PostgreSQL at `{url}`; start a server or set {URL_VAR}: {e}")
    })?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let db_name = format!("contract_bench_revalidate_{}_{nanos}", std::process::id());
    admin
        .execute(AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
        .await
        .map_err(|e| format!("creating scratch database {db_name}: {e}"))?;
    eprintln!("scratch database {db_name} created");
    let scratch = admin_options.clone().database(&db_name);
    // In its own task: a panic comes back as an error and the database is still dropped.
    let outcome = match tokio::spawn(run(scratch, options)).await {
        Ok(result) => result,
        Err(join) => Err(format!("the bench panicked: {join}").into()),
    };
    let dropped = admin
        .execute(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"
        )))
        .await;
    let _ = admin.close().await;
    match dropped {
        Ok(_) => eprintln!("scratch database {db_name} dropped"),
        Err(e) => eprintln!("WARNING: could not drop {db_name}: {e}; drop it by hand"),
    }
    outcome
}

async fn run(scratch: PgConnectOptions, options: Options) -> Result<()> {
    let n = options.tenants;
    let runs = options.runs;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(scratch)
        .await?;
    create_fleet(&pool, n, options.batch).await?;

    let contracts = contracts();
    let tables = contracts.table_names();
    let columns = contracts.column_names();
    let schemas: Vec<String> = (1..=n).map(tenant_name).collect();
    let raw = async || -> Result<usize> {
        let mut tx = pool
            .begin_with(contract_sqlx::__private::PG_INTROSPECTION_BEGIN)
            .await?;
        let rows = sqlx::query(contract_sqlx::__private::PG_INTROSPECTION_SQL)
            .bind(&tables)
            .bind(&schemas)
            .bind(&columns)
            .persistent(false)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows.len())
    };

    let started = Instant::now();
    let guard = Guard::<Postgres>::builder()
        .contracts(self::contracts())
        .tenants(Tenants::schemas_like("tenant_%"))
        .revalidate_every(Duration::from_secs(3600))
        .full_check_every(u32::MAX)
        .check_timeout(Duration::from_secs(120))
        .start(&pool)
        .await?;
    eprintln!(
        "guard started (full check) in {:.0} ms",
        ms(started.elapsed())
    );

    // --- Unchanged fleet, no trigger: sweep vs raw query, interleaved, after one warm-up
    // each. --------------------------------------------------------------------------------
    let mut fallback_unchanged = Vec::new();
    let mut fallback_raw = Vec::new();
    let mut discovery = Vec::new();
    let mut signature_reads = Vec::new();
    let mut mark_reads = Vec::new();
    let mut moved_elsewhere = Vec::new();
    let rows = raw().await?;
    guard.revalidate().await?;
    let mut mark = match Postgres::signatures_since(&pool, &schemas, &contracts, None).await? {
        Some(SignatureRead::Read(_, Some(mark))) => mark,
        _ => return Err("PostgreSQL read no catalog mark".into()),
    };
    for round in 0..runs {
        let t = Instant::now();
        raw().await?;
        fallback_raw.push(t.elapsed());
        let t = Instant::now();
        let listed = TenantDirectory::<Postgres>::new()
            .discover(&pool, &Tenants::schemas_like("tenant_%"))
            .await?;
        discovery.push(t.elapsed());
        if listed.tenants().len() != n {
            return Err(
                format!("discovered {} tenants, created {n}", listed.tenants().len()).into(),
            );
        }
        let t = Instant::now();
        let read = Postgres::signatures(&pool, &schemas, &contracts).await?;
        signature_reads.push(t.elapsed());
        if read.is_none_or(|s| s.len() != n) {
            return Err("the catalog signatures did not cover every tenant".into());
        }
        let t = Instant::now();
        let read = Postgres::signatures_since(&pool, &schemas, &contracts, Some(&mark)).await?;
        mark_reads.push(t.elapsed());
        match read {
            Some(SignatureRead::Unchanged(_)) => {}
            _ => return Err("the catalog mark moved on an unchanged database".into()),
        }
        let t = Instant::now();
        let pass = guard.revalidate().await?;
        fallback_unchanged.push(t.elapsed());
        if pass.signal != ChangeSignal::CatalogQuiet || pass.introspected != 0 {
            return Err(format!("an unchanged sweep did not keep the signatures: {pass:?}").into());
        }
        // DDL outside the tenants (not timed): the mark moves, the sweep reads every
        // signature, and none moved.
        let churn = format!("CREATE TABLE public.bench_churn_{round} (id int4)");
        pool.execute(AssertSqlSafe(churn)).await?;
        let t = Instant::now();
        let pass = guard.revalidate().await?;
        moved_elsewhere.push(t.elapsed());
        if pass.signal != ChangeSignal::CatalogSignature || pass.introspected != 0 {
            return Err(
                format!("a sweep after DDL elsewhere was not signature-only: {pass:?}").into(),
            );
        }
        mark = match Postgres::signatures_since(&pool, &schemas, &contracts, None).await? {
            Some(SignatureRead::Read(_, Some(mark))) => mark,
            _ => return Err("PostgreSQL read no catalog mark".into()),
        };
    }
    eprintln!("raw catalog query: {rows} rows");
    print_row("raw catalog query", &fallback_raw);
    print_row("tenant discovery alone", &discovery);
    print_row("catalog signatures alone", &signature_reads);
    print_row("catalog mark alone", &mark_reads);
    print_row("sweep, unchanged fleet, no trigger", &fallback_unchanged);
    print_row("sweep, DDL elsewhere, no trigger", &moved_elsewhere);

    // --- Detection by the fallback sweep. ------------------------------------------------
    let mut fallback = Vec::new();
    for round in 0..runs {
        let tenant = tenant_name(1 + round * 7 % n);
        let t = Instant::now();
        drift(&pool, &tenant, round, "fallback").await?;
        let pass = guard.revalidate().await?;
        if guard.gate(&tenant).is_open() || pass.introspected != 1 {
            return Err(format!("the sweep missed the DDL on {tenant}: {pass:?}").into());
        }
        fallback.push(t.elapsed());
    }
    print_row("DDL → gate closed, fallback sweep", &fallback);

    // --- Unchanged fleet with the event trigger: sweep vs raw query, interleaved. --------
    install_ddl_trigger(&pool).await?;
    // The first sweeps after the install see a new trigger and the DDL of the rounds
    // above: they fall back to the catalog signatures and record the versions.
    let mut settled = None;
    for _ in 0..5 {
        let pass = guard.revalidate().await?;
        if pass.signal == ChangeSignal::SchemaVersion && pass.introspected == 0 {
            settled = Some(pass.signal);
            break;
        }
    }
    let signal = settled.ok_or("sweeps with the trigger installed never used its versions")?;
    let mut unchanged = Vec::new();
    let mut raw_times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        raw().await?;
        raw_times.push(t.elapsed());
        let t = Instant::now();
        let pass = guard.revalidate().await?;
        unchanged.push(t.elapsed());
        if pass.signal != signal || pass.introspected != 0 {
            return Err(format!("an unchanged sweep was not version-only: {pass:?}").into());
        }
    }
    print_row("raw catalog query", &raw_times);
    print_row("sweep, unchanged fleet, trigger", &unchanged);

    // --- Detection with the event trigger. -----------------------------------------------
    let listener = guard.listen_for_ddl().await?;
    let task = guard.spawn();
    let mut trigger = Vec::new();
    for round in 0..runs {
        let tenant = tenant_name(n - round * 11 % n);
        let t = Instant::now();
        drift(&pool, &tenant, round, "trigger").await?;
        let deadline = t + Duration::from_secs(60);
        while guard.gate(&tenant).is_open() {
            if Instant::now() > deadline {
                return Err(format!("the trigger never closed {tenant}'s gate").into());
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        trigger.push(t.elapsed());
        // Let the pass finish before the next round.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Some(pass) = guard.last_pass() {
        eprintln!(
            "last triggered pass: {} tenant(s) introspected, signal: {}",
            pass.introspected, pass.signal
        );
    }
    print_row("DDL → gate closed, event trigger", &trigger);
    task.abort();
    listener.abort();
    pool.close().await;

    let (unchanged_ms, raw_ms) = (median_ms(&unchanged), median_ms(&raw_times));
    let (fallback_ms, fallback_raw_ms) = (median_ms(&fallback_unchanged), median_ms(&fallback_raw));
    let discovery_ms = median_ms(&discovery);
    let signatures_ms = median_ms(&signature_reads);
    let (mark_ms, elsewhere_ms) = (median_ms(&mark_reads), median_ms(&moved_elsewhere));
    let signal = match signal {
        ChangeSignal::SchemaVersion => "schema_version",
        _ => "other",
    };
    println!(
        "{{\"bench\":\"revalidate\",\"tenants\":{n},\"signal\":\"{signal}\",\"unchanged_ms\":{unchanged_ms:.1},\"raw_ms\":{raw_ms:.1},\"unchanged_vs_raw\":{:.3},\"fallback_unchanged_ms\":{fallback_ms:.1},\"fallback_raw_ms\":{fallback_raw_ms:.1},\"fallback_vs_raw\":{:.3},\"discovery_ms\":{discovery_ms:.1},\"discovery_vs_raw\":{:.3},\"signatures_ms\":{signatures_ms:.1},\"signatures_vs_raw\":{:.3},\"mark_ms\":{mark_ms:.1},\"mark_vs_raw\":{:.3},\"elsewhere_ms\":{elsewhere_ms:.1},\"elsewhere_vs_raw\":{:.3},\"detect_trigger_ms\":{:.1},\"detect_fallback_ms\":{:.1}}}",
        unchanged_ms / raw_ms,
        fallback_ms / fallback_raw_ms,
        discovery_ms / fallback_raw_ms,
        signatures_ms / fallback_raw_ms,
        mark_ms / fallback_raw_ms,
        elsewhere_ms / fallback_raw_ms,
        median_ms(&trigger),
        median_ms(&fallback)
    );
    Ok(())
}

/// A contracted column dropped (a new one each round), which pauses the tenant.
async fn drift(pool: &PgPool, tenant: &str, round: usize, phase: &str) -> Result<()> {
    let column = ["kind", "seq", "payload", "occurred_at", "account_id"][round % 5];
    let sql = format!("ALTER TABLE {tenant}.events DROP COLUMN {column} CASCADE");
    pool.execute(AssertSqlSafe(sql))
        .await
        .map_err(|e| format!("{phase} round {round}: {e}"))?;
    Ok(())
}

/// `n` tenant schemas in batches (one multi-statement string, one implicit transaction
/// each), two batches at a time, then fresh catalog statistics.
async fn create_fleet(pool: &PgPool, n: usize, batch: usize) -> Result<()> {
    let started = Instant::now();
    let mut next = 1;
    while next <= n {
        let mut handles = Vec::new();
        for _ in 0..2 {
            if next > n {
                break;
            }
            let last = (next + batch - 1).min(n);
            let mut sql = String::from("SET LOCAL synchronous_commit = off;");
            for i in next..=last {
                tenant_ddl(&mut sql, &tenant_name(i));
            }
            let pool = pool.clone();
            handles.push(tokio::spawn(async move {
                sqlx::raw_sql(AssertSqlSafe(sql)).execute(&pool).await
            }));
            next = last + 1;
        }
        for handle in handles {
            handle.await??;
        }
        if (next - 1) % (n / 10).max(batch) < batch {
            eprintln!(
                "  {}/{n} tenants created ({:.1} s)",
                next - 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    pool.execute(
        "VACUUM ANALYZE pg_catalog.pg_class, pg_catalog.pg_attribute, pg_catalog.pg_namespace, \
         pg_catalog.pg_constraint, pg_catalog.pg_attrdef, pg_catalog.pg_type",
    )
    .await?;
    eprintln!(
        "created {n} tenants in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn print_row(label: &str, samples: &[Duration]) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    println!(
        "{label:<40} min {:>9.1} ms  median {:>9.1} ms  max {:>9.1} ms  ({} runs)",
        ms(sorted[0]),
        median_ms(samples),
        ms(sorted[sorted.len() - 1]),
        samples.len()
    );
}

fn median_ms(samples: &[Duration]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        ms((sorted[mid - 1] + sorted[mid]) / 2)
    } else {
        ms(sorted[mid])
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
