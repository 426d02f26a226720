//! The seed scenario on PostgreSQL, end to end: 47 tenant schemas, two of them drifted;
//! `SafeOnly` fixes the safe one, the rewrite waits for approval, the approved plan is
//! applied, and the fleet is clean. Prints the execution log of each run.
//!
//! ```sh
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo run --example seed_scenario
//! ```
//!
//! It creates a scratch database next to the one in `DATABASE_URL` and drops it at the end.

use contract_sqlx::plan::Remediation;
use contract_sqlx::{
    Contract, TenantDirectory, Tenants, check::ContractSet, remediate, remediation::ApplyOptions,
};
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

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").map_err(|_| {
        "DATABASE_URL is not set: point it at a PostgreSQL server, e.g. postgres://postgres@127.0.0.1:5432/postgres"
    })?;
    let admin = PgPoolOptions::new().max_connections(1).connect(&url).await.map_err(|e| {
        format!("cannot connect to DATABASE_URL ({e}); check that PostgreSQL is running and the URL is right")
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
    println!(
        "\n{tenant} awaits approval of plan {} ({:?}):",
        plan.hash,
        plan.hazards()
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
async fn seed(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut ddl = String::new();
    for i in 1..=47 {
        ddl.push_str(&format!(
            "CREATE SCHEMA tenant_{i}; CREATE TABLE tenant_{i}.events (id int8 PRIMARY KEY, user_id int8 NOT NULL, \
             event_data jsonb NOT NULL, event_metadata jsonb);"
        ));
    }
    ddl.push_str("ALTER TABLE tenant_42.events DROP COLUMN event_metadata;");
    ddl.push_str("ALTER TABLE tenant_19.events ALTER COLUMN user_id TYPE int4;");
    sqlx::raw_sql(AssertSqlSafe(ddl))
        .execute(pool)
        .await
        .map(|_| ())
}
