//! The seed scenario on PostgreSQL, end to end: 47 tenant schemas, two of them drifted;
//! `SafeOnly` fixes the safe one, the rewrite waits for approval, the approved plan is
//! applied, and the fleet is clean. Prints the execution log of each run.
//!
//! ```sh
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo run --example seed_scenario
//! ```
//!
//! It creates a scratch database next to the one in `DATABASE_URL` and drops it at the end.
//! A server that does not answer within 5 seconds is reported with its URL.

use contract_sqlx::plan::Remediation;
use contract_sqlx::{
    Contract, TenantDirectory, Tenants, check::ContractSet, remediate, remediation::ApplyOptions,
};
use std::time::Duration;

use contract_examples::{Progress, redact_url};
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgPool, Postgres};

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct EventPayload {
    kind: String,
}

/// The consumer's row type.
#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "events")]
#[allow(dead_code)]
struct Event {
    #[contract(primary_key)]
    id: i64,
    user_id: i64,
    event_data: sqlx::types::Json<EventPayload>,
    #[contract(default = "'{}'")]
    event_metadata: Option<serde_json::Value>,
}

/// How long a server may take to answer before the run gives up, naming the URL.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Tenant schemas the scenario creates.
const TENANTS: usize = 47;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // Printed with `Display`: a `Result` returned from `main` would show the error's debug
    // form (`Error: "…"`).
    if let Err(e) = seed_and_clean_up().await {
        eprintln!("seed_scenario: {e}");
        std::process::exit(1);
    }
}

/// Creates a scratch database, seeds and checks the scenario in it, then drops it.
async fn seed_and_clean_up() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").map_err(|_| {
        "DATABASE_URL is not set: point it at a PostgreSQL server, e.g. postgres://postgres@127.0.0.1:5432/postgres"
    })?;
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect(&url)
        .await
        .map_err(|e| {
            format!(
                "cannot connect to {} within {} s ({e}); check that PostgreSQL is running and DATABASE_URL is right",
                redact_url(&url),
                CONNECT_TIMEOUT.as_secs()
            )
        })?;
    let scratch = format!("contract_seed_{}", std::process::id());
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{scratch}\"")))
        .execute(&admin)
        .await?;
    let result = run(&url, &scratch).await;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{scratch}\" WITH (FORCE)"
    )))
    .execute(&admin)
    .await?;
    println!("scratch database {scratch} dropped");
    result
}

async fn run(url: &str, scratch: &str) -> Result<(), Box<dyn std::error::Error>> {
    let base = url.rsplit_once('/').map_or(url, |(base, _)| base);
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect(&format!("{base}/{scratch}"))
        .await?;
    seed(&pool).await?;

    let contracts = ContractSet::<Postgres>::new().with::<Event>();
    let tenants = TenantDirectory::new()
        .discover(&pool, &Tenants::schemas_like("tenant_%"))
        .await?;
    let options = ApplyOptions::default();

    let safe = remediate(&tenants, &contracts, Remediation::SafeOnly)
        .options(options.clone())
        .run()
        .await?;
    println!("{}", safe.before);
    println!("{}", safe.log.to_json_pretty());
    let Some((tenant, plan)) = safe.awaiting_approval.iter().next() else {
        println!("nothing awaits approval");
        return Ok(());
    };
    let hazards: Vec<&str> = plan.hazards().iter().map(|h| h.as_str()).collect();
    println!(
        "\n{tenant} awaits approval of plan {} ({}):",
        plan.hash,
        hazards.join(", ")
    );
    for statement in plan.statements() {
        println!("  {statement}");
    }

    // An operator reviewed the plan above and approves exactly that hash.
    let approved = remediate(
        &tenants,
        &contracts,
        Remediation::Approved(plan.hash.clone()),
    )
    .options(options.clone())
    .run()
    .await?;
    println!("{}", approved.log.to_json_pretty());
    println!("{}", approved.after.summary());
    let audit_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM public.contract_audit")
        .fetch_one(&pool)
        .await?;
    println!("audit rows: {audit_rows}");
    pool.close().await;
    Ok(())
}

/// 47 tenants; `tenant_42.events` lacks `event_metadata`, `tenant_19.events.user_id` is int4.
/// Created ten at a time, with a progress line.
async fn seed(pool: &PgPool) -> Result<(), sqlx::Error> {
    let tenants: Vec<usize> = (1..=TENANTS).collect();
    let mut progress = Progress::new("creating tenant schemas", TENANTS);
    for chunk in tenants.chunks(10) {
        let mut ddl = String::new();
        for i in chunk {
            ddl.push_str(&format!(
                "CREATE SCHEMA tenant_{i}; CREATE TABLE tenant_{i}.events (id int8 PRIMARY KEY, user_id int8 NOT NULL, \
                 event_data jsonb NOT NULL, event_metadata jsonb);"
            ));
        }
        sqlx::raw_sql(AssertSqlSafe(ddl)).execute(pool).await?;
        progress.advance(chunk.len());
    }
    progress.finish();
    let drift = "ALTER TABLE tenant_42.events DROP COLUMN event_metadata;
                 ALTER TABLE tenant_19.events ALTER COLUMN user_id TYPE int4;";
    sqlx::raw_sql(drift).execute(pool).await.map(|_| ())
}
