//! The tenant lock on PostgreSQL and the re-check under it. A plan whose table changed after
//! it was made is skipped; a change to a contracted table its steps do not touch leaves it
//! applicable. A lock wait that times out hands back a connection fit for use. (The table
//! locks taken before the re-check: `pg_table_lock`.)

use crate::support;

use std::time::Duration;

use contract_sqlx::plan::Remediation;
use contract_sqlx::remediation::{ApplyOptions, RemediationRun};
use contract_sqlx::report::TenantOutcome;
use contract_sqlx::{Contract, TenantDirectory, check::ContractSet, remediate};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres};
use support::faults::nothing_left_open;
use support::{PgScratch, pg_tenant_directory};

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "accounts")]
#[allow(dead_code)]
struct Account {
    #[contract(primary_key)]
    id: i64,
    name: String,
    email: Option<String>,
}

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "sessions")]
#[allow(dead_code)]
struct Session {
    #[contract(primary_key)]
    id: i64,
    token: String,
}

/// `tenants`, each with an `accounts` that lacks `email` (a safe fix) and a `sessions`.
pub(crate) async fn seed(pool: &PgPool, tenants: &[&str]) {
    let ddl: String = tenants
        .iter()
        .map(|tenant| {
            format!(
                "CREATE SCHEMA {tenant}; \
                 CREATE TABLE {tenant}.accounts (id int8 PRIMARY KEY, name text NOT NULL); \
                 CREATE TABLE {tenant}.sessions (id int8 PRIMARY KEY, token text NOT NULL);"
            )
        })
        .collect();
    support::exec(pool, ddl).await;
}

pub(crate) fn contracts() -> ContractSet<Postgres> {
    ContractSet::new().with::<Account>().with::<Session>()
}

/// A transaction holding the remediation locks of `tenants` until it ends.
async fn hold_tenant_locks(
    pool: &PgPool,
    tenants: &[&str],
) -> sqlx::Transaction<'static, Postgres> {
    let mut blocker = pool.begin().await.expect("begin");
    for tenant in tenants {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(contract_sqlx::remediation::tenant_lock_key(tenant))
            .execute(&mut *blocker)
            .await
            .expect("hold the tenant lock");
    }
    blocker
}

/// Another run, with `options`, remediates tenant_1 (it adds `accounts.email`).
pub(crate) async fn next_run_adds_the_email(
    directory: &TenantDirectory<Postgres>,
    contracts: &ContractSet<Postgres>,
    options: ApplyOptions,
    pool: &PgPool,
) {
    let next = remediate(directory, contracts, Remediation::SafeOnly)
        .options(options)
        .run()
        .await
        .expect("next run");
    assert!(next.failed.is_empty(), "{:?}", next.failed);
    assert!(has_email(pool, "tenant_1").await);
}

/// What `run` did with `tenant`.
pub(crate) fn outcome(run: &RemediationRun, tenant: &str) -> Option<TenantOutcome> {
    run.log
        .tenants
        .iter()
        .find(|t| t.tenant == tenant)
        .map(|t| t.outcome)
}

/// A pool whose only connection every step shares: one left in a transaction shows.
async fn one_connection_pool(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .expect("one-connection pool")
}

/// Whether `tenant.accounts` has the `email` column.
pub(crate) async fn has_email(pool: &PgPool, tenant: &str) -> bool {
    has_column(pool, tenant, "accounts", "email").await
}

/// Whether `tenant.table` has the column `column`.
pub(crate) async fn has_column(pool: &PgPool, tenant: &str, table: &str, column: &str) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns \
         WHERE table_schema = $1 AND table_name = $2 AND column_name = $3)",
    )
    .bind(tenant)
    .bind(table)
    .bind(column)
    .fetch_one(pool)
    .await
    .expect("catalog")
}

/// Waits until `n` backends wait for an advisory lock.
async fn advisory_waiters(pool: &PgPool, n: i64) -> bool {
    lock_waiters(pool, "advisory", n).await
}

/// Waits until `n` backends wait for a lock of kind `wait_event` (`advisory`, `relation`).
pub(crate) async fn lock_waiters(pool: &PgPool, wait_event: &str, n: i64) -> bool {
    // Up to 30 s: a run checks and plans the fleet first, on a machine maybe loaded.
    for _ in 0..1200 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND wait_event = $1",
        )
        .bind(wait_event)
        .fetch_one(pool)
        .await
        .expect("activity");
        if waiting >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

#[tokio::test]
async fn a_plan_is_stale_only_when_a_table_it_changes_changed() {
    let scratch = PgScratch::create("contract_stale_plan").await;
    seed(&scratch.pool, &["tenant_1", "tenant_2"]).await;
    let directory = pg_tenant_directory(&scratch.pool).await;
    let contracts = contracts();

    // Hold both tenants' remediation locks, so the run plans and then waits.
    let blocker = hold_tenant_locks(&scratch.pool, &["tenant_1", "tenant_2"]).await;
    let run = {
        let (directory, contracts) = (directory.clone(), contracts.clone());
        tokio::spawn(async move {
            remediate(&directory, &contracts, Remediation::SafeOnly)
                .run()
                .await
        })
    };
    assert!(
        advisory_waiters(&scratch.pool, 2).await,
        "the run never waited for the tenant locks"
    );
    // Meanwhile: tenant_1's `sessions` (no step touches it) and tenant_2's `accounts` (the
    // table its step alters) change.
    support::exec(
        &scratch.pool,
        "ALTER TABLE tenant_1.sessions ALTER COLUMN token DROP NOT NULL; \
         ALTER TABLE tenant_2.accounts ALTER COLUMN name DROP NOT NULL;",
    )
    .await;
    blocker.commit().await.expect("release");
    let run = run.await.expect("task").expect("remediate");

    assert!(run.failed.is_empty(), "{:?}", run.failed);
    assert_eq!(outcome(&run, "tenant_1"), Some(TenantOutcome::Applied));
    assert_eq!(outcome(&run, "tenant_2"), Some(TenantOutcome::Stale));
    let audited: Vec<&str> = run.audits.iter().map(|a| a.tenant.as_str()).collect();
    assert_eq!(audited, ["tenant_1"]);
    assert!(has_email(&scratch.pool, "tenant_1").await);
    assert!(!has_email(&scratch.pool, "tenant_2").await);
    // `after` re-checked tenant_1 whole: its `sessions` change shows there.
    let after = run
        .after
        .tenants
        .iter()
        .find(|t| t.tenant == "tenant_1")
        .expect("tenant_1 in after");
    assert!(
        after.findings.iter().any(|f| f.table == "sessions"),
        "{}",
        run.after
    );
    assert!(
        !after.findings.iter().any(|f| f.table == "accounts"),
        "{}",
        run.after
    );
    scratch.drop_db().await;
}

/// A lock wait bounded by `advisory_lock_wait` that times out fails the tenant and leaves
/// nothing open: the pool's only connection serves the next query, and the next run, with
/// the lock free, remediates the tenant.
#[tokio::test]
async fn a_lock_wait_that_times_out_leaves_the_connection_usable() {
    let scratch = PgScratch::create("contract_lock_wait").await;
    seed(&scratch.pool, &["tenant_1"]).await;
    let pool = one_connection_pool(&scratch.url).await;
    let directory = pg_tenant_directory(&pool).await;
    let contracts = contracts();
    let options = ApplyOptions::default().with_advisory_lock_wait(Duration::from_millis(200));

    let blocker = hold_tenant_locks(&scratch.pool, &["tenant_1"]).await;
    let run = remediate(&directory, &contracts, Remediation::SafeOnly)
        .options(options.clone())
        .run()
        .await
        .expect("remediate");
    let failed: Vec<&str> = run.failed.iter().map(|f| f.tenant.as_str()).collect();
    assert_eq!(failed, ["tenant_1"], "{:?}", run.failed);
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&pool)
        .await
        .expect("the connection is usable after the lock wait timed out");
    assert_eq!(one, 1);
    blocker.rollback().await.expect("release");

    next_run_adds_the_email(&directory, &contracts, options, &scratch.pool).await;
    pool.close().await;
    scratch.drop_db().await;
}

/// A remediation dropped while it waits for its tenant's lock (its `BEGIN` and the lock
/// wait travel in one message) leaves nothing open: once the lock is free the server does
/// not keep a transaction holding it, and the pool's only connection serves the next run.
#[tokio::test]
async fn a_remediation_dropped_while_waiting_for_the_tenant_lock_leaves_nothing_open() {
    let scratch = PgScratch::create("contract_lock_drop").await;
    seed(&scratch.pool, &["tenant_1"]).await;
    let pool = one_connection_pool(&scratch.url).await;
    let directory = pg_tenant_directory(&pool).await;
    let contracts = contracts();

    let blocker = hold_tenant_locks(&scratch.pool, &["tenant_1"]).await;
    tokio::select! {
        run = remediate(&directory, &contracts, Remediation::SafeOnly).run() => {
            panic!("the run ended while the tenant lock was held: {:?}", run.map(|r| r.failed));
        }
        waiting = advisory_waiters(&scratch.pool, 1) => {
            assert!(waiting, "the run never waited for the tenant lock");
        }
    }
    // The run's future is dropped; now the lock it waited for is released.
    blocker.rollback().await.expect("release");
    assert!(
        nothing_left_open(&scratch.pool).await,
        "the dropped run left an advisory lock or a transaction open"
    );

    next_run_adds_the_email(
        &directory,
        &contracts,
        ApplyOptions::default(),
        &scratch.pool,
    )
    .await;
    pool.close().await;
    scratch.drop_db().await;
}
