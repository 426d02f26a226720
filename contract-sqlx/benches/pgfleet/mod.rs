//! Shared by the `remediate` and `memory` benches: a scratch PostgreSQL database holding a
//! fleet of tenant schemas (5 contracted tables each, the `fleet` bench's contracts), created
//! and dropped around the measurement, and min/median/max timing.
#![allow(dead_code)]

pub mod latency;

use std::fmt::Write as _;
use std::future::Future;
use std::str::FromStr;
use std::time::{Duration, Instant};

use contract_sqlx::Contract;
use contract_sqlx::check::ContractSet;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor, PgPool, Postgres};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T, E = BoxError> = std::result::Result<T, E>;

pub const URL_VAR: &str = "CONTRACT_TEST_PG_URL";
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[allow(dead_code)]
#[derive(sqlx::FromRow, Contract)]
#[contract(table = "accounts")]
pub struct Account {
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
pub struct Event {
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
pub struct Order {
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
pub struct Invoice {
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
pub struct Session {
    #[contract(primary_key)]
    id: i64,
    #[contract(references = "accounts(id)")]
    account_id: i64,
    token: String,
    expires_at: DateTime<Utc>,
    attempts: i32,
    meta: Option<serde_json::Value>,
}

/// The 5 contracts every tenant is checked against.
pub fn contracts() -> ContractSet<Postgres> {
    ContractSet::<Postgres>::new()
        .with::<Account>()
        .with::<Event>()
        .with::<Order>()
        .with::<Invoice>()
        .with::<Session>()
}

/// One tenant: the 5 contracted tables (compliant, plus an uncontracted column or two) and
/// a few rows in `accounts` and `orders`.
pub fn tenant_ddl(sql: &mut String, schema: &str) {
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
INSERT INTO {schema}.accounts (id, name) SELECT g, 'account ' || g FROM generate_series(1, 5) g;
INSERT INTO {schema}.orders (id, account_id, total_cents, placed_at)
    SELECT g, 1 + g % 5, g * 100, now() FROM generate_series(1, 20) g;
"#
    );
}

pub fn tenant_name(index: usize, width: usize) -> String {
    format!("tenant_{index:0width$}")
}

/// The tenant schema names of a fleet of `n`.
pub fn tenant_names(n: usize) -> Vec<String> {
    let width = n.to_string().len().max(5);
    (1..=n).map(|i| tenant_name(i, width)).collect()
}

/// Runs `sql_of(schema)` for every tenant, `batch` tenants per multi-statement string.
pub async fn for_each_batch(
    pool: &PgPool,
    schemas: &[String],
    batch: usize,
    sql_of: impl Fn(&mut String, &str),
) -> Result<()> {
    for chunk in schemas.chunks(batch.max(1)) {
        let mut sql = String::new();
        for schema in chunk {
            sql_of(&mut sql, schema);
        }
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(pool).await?;
    }
    Ok(())
}

/// Creates the fleet (`n` tenants, `tenant_ddl` plus `extra` per tenant) in batches of 50
/// over two connections, then refreshes the catalog statistics.
pub async fn create_fleet(
    scratch: &PgConnectOptions,
    n: usize,
    extra: fn(&mut String, &str),
) -> Result<Vec<String>> {
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(scratch.clone())
        .await?;
    let started = Instant::now();
    let schemas = tenant_names(n);
    let halves: Vec<Vec<String>> = schemas
        .chunks(schemas.len().div_ceil(2).max(1))
        .map(<[String]>::to_vec)
        .collect();
    let mut workers = Vec::new();
    for half in halves {
        let pool = pool.clone();
        workers.push(tokio::spawn(async move {
            for_each_batch(&pool, &half, 50, |sql, schema| {
                tenant_ddl(sql, schema);
                extra(sql, schema);
            })
            .await
        }));
    }
    for worker in workers {
        worker.await??;
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
    pool.close().await;
    Ok(schemas)
}

/// Creates a uniquely named scratch database, runs `body` on it, and drops it again (also
/// when `body` fails or panics).
pub async fn with_scratch_db<F, Fut>(prefix: &str, body: F) -> Result<()>
where
    F: FnOnce(PgConnectOptions) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
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
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let db_name = format!("{prefix}_{}_{nanos}", std::process::id());
    admin
        .execute(AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
        .await
        .map_err(|e| format!("creating scratch database {db_name}: {e}"))?;
    eprintln!("scratch database {db_name} created");
    let outcome = match tokio::spawn(body(admin_options.clone().database(&db_name))).await {
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
        Err(e) => {
            eprintln!("WARNING: could not drop scratch database {db_name}: {e}; drop it by hand")
        }
    }
    outcome
}

/// Parses `--name N` options (N ≥ 1) into `defaults`; `cargo bench` passes `--bench`.
pub fn parse_args(usage: &str, defaults: &mut [(&str, usize)]) -> Result<()> {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--bench" {
            continue;
        }
        let Some(slot) = defaults.iter_mut().find(|(name, _)| *name == arg) else {
            return Err(format!("unknown argument `{arg}`; usage: {usage}").into());
        };
        let text = args.next().ok_or_else(|| format!("{arg} needs a number"))?;
        let n: usize = text.parse().map_err(|e| format!("{arg} {text}: {e}"))?;
        if n == 0 {
            return Err(format!("{arg} must be at least 1").into());
        }
        slot.1 = n;
    }
    Ok(())
}

/// Min, median and max of some samples.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub min: Duration,
    pub median: Duration,
    pub max: Duration,
}

impl Timing {
    pub fn of(samples: &[Duration]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort();
        let mid = sorted.len() / 2;
        let median = if sorted.len().is_multiple_of(2) {
            (sorted[mid - 1] + sorted[mid]) / 2
        } else {
            sorted[mid]
        };
        Timing {
            min: sorted[0],
            median,
            max: sorted[sorted.len() - 1],
        }
    }

    pub fn print(&self, label: &str, runs: usize) {
        println!(
            "{label:<48} {:>10.1} {:>10.1} {:>10.1}  {runs}",
            ms(self.min),
            ms(self.median),
            ms(self.max)
        );
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A multi-threaded runtime with 2 workers (the machine's cores), running `main`; exits
/// non-zero with the error.
pub fn run_main(name: &str, main: impl Future<Output = Result<()>>) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name} bench: cannot start the tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(main) {
        eprintln!("{name} bench FAILED: {e}");
        std::process::exit(1);
    }
}
