//! A tenant name reached twice (two SQLite files with one stem, one schema on two
//! PostgreSQL servers) is a configuration error: reported once with both places, its gate
//! closed, nothing remediated through either — never last-wins.

use crate::support;

use std::path::Path;

use contract_sqlx::plan::Remediation;
use contract_sqlx::report::Verdict;
use contract_sqlx::{
    Contract, FleetReport, Gate, Guard, TenantDirectory, Tenants, check::ContractSet, check_fleet,
    remediate, sqlite_tenant_files,
};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Postgres, Sqlite};
use support::{PgScratch, exec};

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "events")]
#[allow(dead_code)]
struct Event {
    id: i64,
    #[contract(default = "0")]
    user_id: i64,
}

async fn sqlite_tenant(dir: &Path, file: &str, ddl: &str) {
    let mut conn = SqliteConnectOptions::new()
        .filename(dir.join(file))
        .create_if_missing(true)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("create {file}: {e}"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(ddl.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{ddl}: {e}"));
    conn.close().await.expect("close");
}

/// The one report of `tenant`: unreachable, naming both places it was found in.
fn assert_reported_once_as_duplicate(report: &FleetReport, tenant: &str, places: [&str; 2]) {
    let reports: Vec<_> = report
        .tenants
        .iter()
        .filter(|t| t.tenant == tenant)
        .collect();
    assert_eq!(
        reports.len(),
        1,
        "{tenant} reported {} times",
        reports.len()
    );
    let Verdict::Unreachable { error } = &reports[0].verdict else {
        panic!("{tenant}: {:?}", reports[0].verdict);
    };
    assert!(error.contains("duplicate tenant"), "{error}");
    for place in places {
        assert!(error.contains(place), "{error} does not name {place}");
    }
}

fn assert_closed_as_duplicate<DB: contract_sqlx::control::ControlStore>(
    guard: &Guard<DB>,
    tenant: &str,
) {
    match guard.gate(tenant) {
        Gate::Open(_) => panic!("{tenant}'s gate is open"),
        Gate::Paused(why) => assert!(why.reason.contains("duplicate tenant"), "{}", why.reason),
    }
}

#[tokio::test]
async fn duplicate_sqlite_tenant_files_close_the_gate_instead_of_last_wins() {
    let scratch = support::TempDir::new("contract_duplicates");
    let drifted = "CREATE TABLE events (id INTEGER NOT NULL)";
    let healthy = "CREATE TABLE events (id INTEGER NOT NULL, user_id INTEGER NOT NULL)";
    sqlite_tenant(&scratch.0, "tenant_1.db", drifted).await;
    sqlite_tenant(&scratch.0, "tenant_1.sqlite", healthy).await;
    sqlite_tenant(&scratch.0, "tenant_2.db", healthy).await;
    let contracts = ContractSet::<Sqlite>::new().with::<Event>();
    let directory = sqlite_tenant_files(&scratch.0).await.expect("tenant files");
    assert_eq!(directory.tenants().len(), 1, "only tenant_2 is checkable");

    let report = check_fleet(&directory, &contracts).await.expect("check");
    assert_reported_once_as_duplicate(&report, "tenant_1", ["tenant_1.db", "tenant_1.sqlite"]);
    assert_eq!(report.tenants_with("compliant").count(), 1);

    let control = scratch.0.join("control.db");
    let control = sqlx::SqlitePool::connect_with(
        SqliteConnectOptions::new()
            .filename(&control)
            .create_if_missing(true),
    )
    .await
    .expect("control pool");
    let guard = Guard::<Sqlite>::builder()
        .contracts(contracts.clone())
        .directory(directory.clone())
        .remediation(Remediation::SafeOnly)
        .start(&control)
        .await
        .expect("guard start");
    assert_closed_as_duplicate(&guard, "tenant_1");
    assert!(guard.gate("tenant_2").is_open());
    guard.revalidate().await.expect("pass");
    assert_closed_as_duplicate(&guard, "tenant_1");
    assert_reported_once_as_duplicate(
        &guard.report(),
        "tenant_1",
        ["tenant_1.db", "tenant_1.sqlite"],
    );

    // Neither file was remediated through the other's name.
    let run = remediate(&directory, &contracts, Remediation::SafeOnly)
        .run()
        .await
        .expect("remediate");
    assert!(run.audits.is_empty(), "{:?}", run.audits);
    let mut conn = SqliteConnectOptions::new()
        .filename(scratch.0.join("tenant_1.db"))
        .connect()
        .await
        .expect("open tenant_1.db");
    let columns: i64 = sqlx::query_scalar("SELECT count(*) FROM pragma_table_info('events')")
        .fetch_one(&mut conn)
        .await
        .expect("columns");
    assert_eq!(columns, 1, "tenant_1.db was changed");
    conn.close().await.expect("close");
    drop(guard);
    control.close().await;
}

#[tokio::test]
async fn one_schema_on_two_postgres_servers_closes_the_gate_instead_of_last_wins() {
    let (first, second) = (
        PgScratch::create("contract_duplicate_a").await,
        PgScratch::create("contract_duplicate_b").await,
    );
    exec(
        &first.pool,
        "CREATE SCHEMA tenant_1; CREATE TABLE tenant_1.events (id int8 NOT NULL); \
         CREATE SCHEMA tenant_2; CREATE TABLE tenant_2.events (id int8 NOT NULL, user_id int8 NOT NULL)",
    )
    .await;
    exec(
        &second.pool,
        "CREATE SCHEMA tenant_1; CREATE TABLE tenant_1.events (id int8 NOT NULL, user_id int8 NOT NULL)",
    )
    .await;
    let tenants = Tenants::schemas_like("tenant_%");
    let directory = TenantDirectory::<Postgres>::new()
        .discover(&first.pool, &tenants)
        .await
        .expect("discover first")
        .discover(&second.pool, &tenants)
        .await
        .expect("discover second");
    let contracts = ContractSet::<Postgres>::new().with::<Event>();
    let report = check_fleet(&directory, &contracts).await.expect("check");
    assert_reported_once_as_duplicate(&report, "tenant_1", [&first.name, &second.name]);
    assert_eq!(report.tenants_with("compliant").count(), 1);

    let guard = Guard::<Postgres>::builder()
        .contracts(contracts)
        .directory(directory)
        .in_memory_control()
        .start(&first.pool)
        .await
        .expect("guard start");
    assert_closed_as_duplicate(&guard, "tenant_1");
    assert!(guard.gate("tenant_2").is_open());
    drop(guard);
    first.drop_db().await;
    second.drop_db().await;
}
