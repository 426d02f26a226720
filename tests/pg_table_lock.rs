//! The table locks a PostgreSQL remediation takes before its re-check: a hand-run `ALTER`
//! that commits while the remediation waits for a table is seen by the re-check (a stale
//! plan, or an applicable one when it touched nothing contracted), in a plan of one
//! transaction and in a phased one; a table or schema gone is a stale plan; a lock held
//! past `lock_timeout`, or a deadlock with a hand-run migration, is retried, also in an
//! online type change's short transactions.

use std::time::Duration;

use contract_sqlx::plan::Remediation;
use contract_sqlx::remediation::{ApplyOptions, RemediationRun};
use contract_sqlx::report::TenantOutcome;
use contract_sqlx::{Contract, Result, TenantDirectory, check::ContractSet, remediate};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres};
use tokio::task::JoinHandle;

use crate::pg_online::Event;
use crate::pg_tenant_lock::{
    contracts, has_column, has_email, lock_waiters, next_run_adds_the_email, outcome, seed,
};
use crate::support;
use support::PgScratch;
use support::faults::nothing_left_open;

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(schema = "shared", table = "currencies")]
#[allow(dead_code)]
struct Currency {
    #[contract(primary_key)]
    code: String,
}

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "payments")]
#[allow(dead_code)]
struct Payment {
    #[contract(primary_key)]
    id: i64,
    #[contract(references = "shared.currencies(code)")]
    currency: String,
    memo: Option<String>,
}

/// A pool for the run alone, with room for `n` connections waiting at once.
async fn run_pool(url: &str, n: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(n + 2)
        .connect(url)
        .await
        .expect("the run's pool")
}

/// A transaction that ran `sql` and holds its locks until it ends.
async fn hold(pool: &PgPool, sql: &'static str) -> sqlx::Transaction<'static, Postgres> {
    let mut tx = pool.begin().await.expect("begin");
    sqlx::raw_sql(sql)
        .execute(&mut *tx)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    tx
}

/// A remediation run in a task of its own (it waits for a lock the test holds).
fn spawn_run(
    directory: &TenantDirectory<Postgres>,
    contracts: &ContractSet<Postgres>,
    policy: Remediation,
    options: ApplyOptions,
) -> JoinHandle<Result<RemediationRun>> {
    let (directory, contracts) = (directory.clone(), contracts.clone());
    tokio::spawn(async move {
        remediate(&directory, &contracts, policy)
            .options(options)
            .run()
            .await
    })
}

/// The hash of the fleet's one plan, a multi-transaction one.
async fn phased_plan_hash(
    directory: &TenantDirectory<Postgres>,
    contracts: &ContractSet<Postgres>,
) -> String {
    let dry = remediate(directory, contracts, Remediation::DryRun)
        .run()
        .await
        .expect("dry run");
    let plan = &dry.plans[0];
    assert!(
        plan.steps.iter().any(|s| s.phases.len() > 1),
        "a multi-transaction plan: {plan}"
    );
    plan.hash.clone()
}

/// The run's one tenant failed at its table lock, after two attempts.
fn assert_failed_at_the_table_lock_after_2_attempts(run: &RemediationRun) {
    assert_eq!(run.failed.len(), 1, "{:?}", run.failed);
    let error = &run.failed[0].error;
    assert!(
        error.contains("table lock") && error.contains("after 2 attempt"),
        "{error}"
    );
}

async fn assert_nothing_left_open(pool: &PgPool) {
    assert!(
        nothing_left_open(pool).await,
        "a lock or a transaction was left open"
    );
}

/// `tenant_1.events` with a nullable `user_id` (a `SET NOT NULL` in three transactions).
async fn phased_fleet(name: &str) -> (PgScratch, ContractSet<Postgres>) {
    let scratch = PgScratch::create(name).await;
    support::exec(
        &scratch.pool,
        "CREATE SCHEMA tenant_1; \
         CREATE TABLE tenant_1.events (id int8 PRIMARY KEY, user_id int8); \
         INSERT INTO tenant_1.events SELECT g, g FROM generate_series(1, 100) g",
    )
    .await;
    (scratch, ContractSet::<Postgres>::new().with::<Event>())
}

/// A hand-run `ALTER TABLE` (or `DROP`), open while the remediation starts and committed
/// while it waits for the table: the re-check runs after it, so a change to a contracted
/// column, a dropped table or a dropped schema makes the plan stale, and a change to
/// another column leaves it applicable. (Without the table locks the re-check ran before
/// the `ALTER` committed and the DDL after it: tenant_1's `ADD COLUMN email` failed on the
/// column the `ALTER` added, tenant_3's and tenant_4's on the table that was gone.)
#[tokio::test]
async fn an_alter_committed_while_the_remediation_waits_for_the_table_makes_the_plan_stale() {
    let scratch = PgScratch::create("contract_hand_alter").await;
    seed(
        &scratch.pool,
        &["tenant_1", "tenant_2", "tenant_3", "tenant_4"],
    )
    .await;
    let pool = run_pool(&scratch.url, 4).await;
    let directory = support::pg_tenant_directory(&pool).await;
    let contracts = contracts();
    let options = ApplyOptions::default()
        .with_lock_timeout(Duration::from_secs(60))
        .with_parallelism(4);

    let hand = hold(
        &scratch.pool,
        "ALTER TABLE tenant_1.accounts ADD COLUMN email int4; \
         ALTER TABLE tenant_2.accounts ADD COLUMN notes text; \
         DROP TABLE tenant_3.accounts; \
         DROP SCHEMA tenant_4 CASCADE;",
    )
    .await;
    let run = spawn_run(&directory, &contracts, Remediation::SafeOnly, options);
    assert!(
        lock_waiters(&scratch.pool, "relation", 4).await,
        "the run never waited for the tables"
    );
    hand.commit().await.expect("commit the ALTERs");
    let run = run.await.expect("task").expect("remediate");

    assert!(run.failed.is_empty(), "{:?}", run.failed);
    assert_eq!(outcome(&run, "tenant_1"), Some(TenantOutcome::Stale));
    assert_eq!(outcome(&run, "tenant_2"), Some(TenantOutcome::Applied));
    assert_eq!(outcome(&run, "tenant_3"), Some(TenantOutcome::Stale));
    assert_eq!(outcome(&run, "tenant_4"), Some(TenantOutcome::Stale));
    let audited: Vec<&str> = run.audits.iter().map(|a| a.tenant.as_str()).collect();
    assert_eq!(audited, ["tenant_2"]);
    assert!(has_email(&scratch.pool, "tenant_2").await);
    assert_nothing_left_open(&scratch.pool).await;
    pool.close().await;
    scratch.drop_db().await;
}

/// The same for a plan in several transactions (`SET NOT NULL`: a `NOT VALID` check,
/// `VALIDATE`, then `SET NOT NULL`), whose first transaction re-checks. (Without the table
/// locks the plan, approved for `user_id int8`, was applied to the `int4` column the hand
/// had made of it.)
#[tokio::test]
async fn an_alter_committed_while_a_phased_plan_waits_for_the_table_makes_it_stale() {
    let (scratch, contracts) = phased_fleet("contract_hand_alter_phased").await;
    let directory = support::pg_tenant_directory(&scratch.pool).await;
    let hash = phased_plan_hash(&directory, &contracts).await;

    let hand = hold(
        &scratch.pool,
        "ALTER TABLE tenant_1.events ALTER COLUMN user_id TYPE int4",
    )
    .await;
    let options = ApplyOptions::default().with_lock_timeout(Duration::from_secs(60));
    let run = spawn_run(&directory, &contracts, Remediation::Approved(hash), options);
    assert!(
        lock_waiters(&scratch.pool, "relation", 1).await,
        "the run never waited for the table"
    );
    hand.commit().await.expect("commit the ALTER");
    let run = run.await.expect("task").expect("remediate");

    assert!(run.failed.is_empty(), "{:?}", run.failed);
    let outcomes: Vec<TenantOutcome> = run.log.tenants.iter().map(|t| t.outcome).collect();
    assert_eq!(outcomes, [TenantOutcome::Stale]);
    assert!(run.audits.is_empty(), "{:?}", run.audits);
    let (nullable, checks): (bool, i64) = sqlx::query_as(
        "SELECT (SELECT NOT attnotnull FROM pg_attribute \
                 WHERE attrelid = 'tenant_1.events'::regclass AND attname = 'user_id'), \
                (SELECT count(*) FROM pg_constraint \
                 WHERE conrelid = 'tenant_1.events'::regclass AND contype = 'c')",
    )
    .fetch_one(&scratch.pool)
    .await
    .expect("catalog");
    assert!(nullable, "the stale plan set NOT NULL");
    assert_eq!(checks, 0, "the stale plan added its check");
    assert_nothing_left_open(&scratch.pool).await;
    scratch.drop_db().await;
}

/// A table held by someone else past `lock_timeout` fails the tenant at its table lock after
/// the configured attempts, and leaves nothing open; once free, the next run remediates.
#[tokio::test]
async fn a_table_held_past_the_lock_timeout_fails_the_tenant_at_the_table_lock() {
    let scratch = PgScratch::create("contract_table_lock_wait").await;
    seed(&scratch.pool, &["tenant_1"]).await;
    let directory = support::pg_tenant_directory(&scratch.pool).await;
    let contracts = contracts();
    let options = ApplyOptions::default()
        .with_lock_timeout(Duration::from_millis(100))
        .with_max_attempts(2);

    let holder = hold(
        &scratch.pool,
        "LOCK TABLE tenant_1.accounts IN SHARE UPDATE EXCLUSIVE MODE",
    )
    .await;
    let run = remediate(&directory, &contracts, Remediation::SafeOnly)
        .options(options.clone())
        .run()
        .await
        .expect("remediate");
    assert_failed_at_the_table_lock_after_2_attempts(&run);
    assert!(!has_email(&scratch.pool, "tenant_1").await);
    holder.rollback().await.expect("release");
    assert_nothing_left_open(&scratch.pool).await;

    next_run_adds_the_email(&directory, &contracts, options, &scratch.pool).await;
    scratch.drop_db().await;
}

/// In a phased plan the table lock is bounded by `lock_timeout` and retried, whatever
/// `advisory_lock_wait` (which bounds the tenant's lock only). (Before, the lock waited
/// under `statement_timeout = advisory_lock_wait`, whose cancel was not retried: one
/// attempt.)
#[tokio::test]
async fn a_phased_plan_s_table_lock_is_bounded_by_lock_timeout_and_retried() {
    let (scratch, contracts) = phased_fleet("contract_table_lock_phased").await;
    let directory = support::pg_tenant_directory(&scratch.pool).await;
    let hash = phased_plan_hash(&directory, &contracts).await;
    let options = ApplyOptions::default()
        .with_advisory_lock_wait(Duration::from_millis(50))
        .with_lock_timeout(Duration::from_millis(200))
        .with_base_backoff(Duration::from_millis(10))
        .with_max_attempts(2);

    let holder = hold(
        &scratch.pool,
        "LOCK TABLE tenant_1.events IN SHARE UPDATE EXCLUSIVE MODE",
    )
    .await;
    let run = remediate(&directory, &contracts, Remediation::Approved(hash))
        .options(options)
        .run()
        .await
        .expect("remediate");
    assert_failed_at_the_table_lock_after_2_attempts(&run);
    holder.rollback().await.expect("release");
    assert_nothing_left_open(&scratch.pool).await;
    scratch.drop_db().await;
}

/// The lock modes: the table a step changes `SHARE UPDATE EXCLUSIVE`, the shared table its
/// foreign key references `ACCESS SHARE`. A hand-run migration that holds the shared table
/// and then alters the tenant's deadlocks with the waiting remediation; the server fails
/// the remediation (it waited first), which is retried once the migration is done.
#[tokio::test]
async fn a_deadlock_with_a_hand_run_migration_is_retried() {
    let scratch = PgScratch::create("contract_table_lock_deadlock").await;
    support::exec(
        &scratch.pool,
        "CREATE SCHEMA shared; \
         CREATE TABLE shared.currencies (code text PRIMARY KEY); \
         CREATE SCHEMA tenant_1; \
         CREATE TABLE tenant_1.payments (id int8 PRIMARY KEY, \
             currency text NOT NULL REFERENCES shared.currencies (code));",
    )
    .await;
    let pool = run_pool(&scratch.url, 1).await;
    let directory = support::pg_tenant_directory(&pool).await;
    let contracts = ContractSet::<Postgres>::new()
        .with::<Currency>()
        .with::<Payment>();
    // A remediation that misses the cycle (see below) gives up at its lock timeout instead,
    // and is retried the same way.
    let options = ApplyOptions::default()
        .with_lock_timeout(Duration::from_secs(10))
        .with_base_backoff(Duration::from_millis(10))
        .with_max_attempts(3);

    // The migration's first half. The server looks for a cycle once per waiter, when its
    // `deadlock_timeout` (1 s) runs out, and fails the waiter that finds it: here always the
    // remediation's backend, as the migration's never looks (setting it takes a superuser,
    // as the default `CONTRACT_TEST_PG_URL` is). Should the second half start more than 1 s
    // after the remediation began to wait, the remediation's look finds no cycle yet and its
    // lock timeout ends the wait.
    let mut hand = hold(
        &scratch.pool,
        "SET LOCAL deadlock_timeout = '1h'; \
         ALTER TABLE shared.currencies ADD COLUMN name text",
    )
    .await;
    let run = spawn_run(&directory, &contracts, Remediation::SafeOnly, options);
    assert!(
        lock_waiters(&scratch.pool, "relation", 1).await,
        "the run never waited for the shared table"
    );
    let modes: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT l.relation::regclass::text, l.mode, l.granted FROM pg_locks l \
         JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'relation' AND a.wait_event = 'relation' \
           AND l.relation IN ('tenant_1.payments'::regclass, 'shared.currencies'::regclass) \
         ORDER BY 1",
    )
    .fetch_all(&scratch.pool)
    .await
    .expect("locks");
    assert_eq!(
        modes,
        [
            (
                "shared.currencies".to_owned(),
                "AccessShareLock".to_owned(),
                false
            ),
            (
                "tenant_1.payments".to_owned(),
                "ShareUpdateExclusiveLock".to_owned(),
                true
            ),
        ]
    );
    // The second half waits for the remediation's lock until the server ends the cycle.
    sqlx::raw_sql("ALTER TABLE tenant_1.payments ADD COLUMN note text")
        .execute(&mut *hand)
        .await
        .expect("the migration survives the deadlock");
    hand.commit().await.expect("commit the migration");
    let run = run.await.expect("task").expect("remediate");

    assert!(run.failed.is_empty(), "{:?}", run.failed);
    let attempts: Vec<u32> = run.audits.iter().map(|a| a.attempts).collect();
    assert_eq!(attempts, [2], "{:?}", run.audits);
    assert!(
        has_column(&scratch.pool, "tenant_1", "payments", "memo").await,
        "the retried remediation added memo"
    );
    assert_nothing_left_open(&scratch.pool).await;
    pool.close().await;
    scratch.drop_db().await;
}

/// A partitioned table is locked `ONLY`: the re-check reads the parent, and its partitions
/// stay free for maintenance until the DDL itself needs them. Here a reader holds a
/// partition: the remediation waits for it at its `ALTER`, holding nothing on the partition.
#[tokio::test]
async fn a_partitioned_table_is_locked_without_its_partitions() {
    let scratch = PgScratch::create("contract_table_lock_partitions").await;
    support::exec(
        &scratch.pool,
        "CREATE SCHEMA tenant_1; \
         CREATE TABLE tenant_1.accounts (id int8 PRIMARY KEY, name text NOT NULL) PARTITION BY RANGE (id); \
         CREATE TABLE tenant_1.accounts_p1 PARTITION OF tenant_1.accounts FOR VALUES FROM (0) TO (1000); \
         CREATE TABLE tenant_1.sessions (id int8 PRIMARY KEY, token text NOT NULL);",
    )
    .await;
    let pool = run_pool(&scratch.url, 1).await;
    let directory = support::pg_tenant_directory(&pool).await;
    let contracts = contracts();
    let options = ApplyOptions::default().with_lock_timeout(Duration::from_secs(60));

    let reader = hold(&scratch.pool, "SELECT * FROM tenant_1.accounts_p1").await;
    let run = spawn_run(&directory, &contracts, Remediation::SafeOnly, options);
    assert!(
        lock_waiters(&scratch.pool, "relation", 1).await,
        "the run never waited for the partition"
    );
    let on_partition: Vec<(String, bool)> = sqlx::query_as(
        "SELECT l.mode, l.granted FROM pg_locks l \
         JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'relation' AND a.wait_event = 'relation' \
           AND l.relation = 'tenant_1.accounts_p1'::regclass",
    )
    .fetch_all(&scratch.pool)
    .await
    .expect("locks");
    assert_eq!(on_partition, [("AccessExclusiveLock".to_owned(), false)]);
    reader.commit().await.expect("end the read");
    let run = run.await.expect("task").expect("remediate");
    assert!(run.failed.is_empty(), "{:?}", run.failed);
    assert!(has_email(&scratch.pool, "tenant_1").await);
    pool.close().await;
    scratch.drop_db().await;
}

/// An online type change's short transactions (expand, checks, swap) are retried after a
/// deadlock as after a lock timeout. Here a session holds the checkpoint table (`SHARE`,
/// as a `CREATE INDEX` on it would) and then reads the tenant's table: the expand, which
/// took the table and then waits to write its checkpoint, is failed by the server and
/// retried once the session is done.
#[tokio::test]
async fn an_online_type_change_s_deadlocked_transaction_is_retried() {
    use contract_sqlx::remediation::{OnlineProcedure, OnlineTypeChange, change_type_online};

    let scratch = PgScratch::create("contract_online_deadlock").await;
    support::exec(
        &scratch.pool,
        "CREATE SCHEMA tenant_1; \
         CREATE TABLE tenant_1.warmup (id int8 PRIMARY KEY, n int4 NOT NULL); \
         CREATE TABLE tenant_1.accounts (id int8 PRIMARY KEY, user_id int4 NOT NULL); \
         INSERT INTO tenant_1.accounts SELECT g, g * 3 FROM generate_series(1, 1000) g",
    )
    .await;
    // A change that misses the cycle (see the deadlock test above) gives up at its lock
    // timeout instead, and is retried the same way.
    let change = |table: &str, column: &str| {
        OnlineTypeChange::new("tenant_1", table, column, "int8")
            .procedure(OnlineProcedure::ShadowColumn)
            .lock(Duration::from_secs(10), 3)
    };
    // The first change creates the checkpoint table the session then holds.
    change_type_online(&scratch.pool, &change("warmup", "n"))
        .await
        .expect("the warm-up change");
    let mut hand = hold(
        &scratch.pool,
        "SET LOCAL deadlock_timeout = '1h'; \
         LOCK TABLE public.contract_online_progress IN SHARE MODE",
    )
    .await;
    let run = {
        let (pool, change) = (scratch.pool.clone(), change("accounts", "user_id"));
        tokio::spawn(async move { change_type_online(&pool, &change).await })
    };
    assert!(
        lock_waiters(&scratch.pool, "relation", 1).await,
        "the expand never waited for the checkpoint table"
    );
    sqlx::raw_sql("LOCK TABLE tenant_1.accounts IN ACCESS SHARE MODE")
        .execute(&mut *hand)
        .await
        .expect("the session survives the deadlock");
    hand.commit().await.expect("end the session");
    let report = run
        .await
        .expect("task")
        .unwrap_or_else(|e| panic!("the deadlocked expand was not retried: {e}"));
    assert_eq!(report.rows_backfilled, 1000, "{report:?}");
    let (kind, sum): (String, i64) = sqlx::query_as(
        "SELECT pg_typeof(user_id)::text, sum(user_id)::int8 FROM tenant_1.accounts GROUP BY 1",
    )
    .fetch_one(&scratch.pool)
    .await
    .expect("the changed column");
    assert_eq!((kind.as_str(), sum), ("bigint", 3 * 1000 * 1001 / 2));
    assert_nothing_left_open(&scratch.pool).await;
    scratch.drop_db().await;
}

/// An online type change whose expand never gets the tenant's table gives up after its
/// attempts, changes nothing, and says what held it up and what to do.
#[tokio::test]
async fn an_online_type_change_that_never_gets_its_lock_changes_nothing_and_says_why() {
    use contract_sqlx::remediation::{OnlineProcedure, OnlineTypeChange, change_type_online};

    let scratch = PgScratch::create("contract_online_lock_held").await;
    support::exec(
        &scratch.pool,
        "CREATE SCHEMA tenant_1; \
         CREATE TABLE tenant_1.accounts (id int8 PRIMARY KEY, user_id int4 NOT NULL); \
         INSERT INTO tenant_1.accounts SELECT g, g FROM generate_series(1, 10) g",
    )
    .await;
    let holder = hold(
        &scratch.pool,
        "LOCK TABLE tenant_1.accounts IN ACCESS SHARE MODE",
    )
    .await;
    let change = OnlineTypeChange::new("tenant_1", "accounts", "user_id", "int8")
        .procedure(OnlineProcedure::ShadowColumn)
        .lock(Duration::from_millis(50), 2);
    let error = change_type_online(&scratch.pool, &change)
        .await
        .expect_err("the table is held");
    let text = error.to_string();
    assert!(
        text.starts_with("expand failed for tenant `tenant_1`") && text.contains("`pg_locks`"),
        "{text}"
    );
    holder.rollback().await.expect("release");
    assert!(
        !has_column(
            &scratch.pool,
            "tenant_1",
            "accounts",
            "user_id_contract_new"
        )
        .await
    );
    let checkpoints: i64 =
        sqlx::query_scalar("SELECT count(*) FROM public.contract_online_progress")
            .fetch_one(&scratch.pool)
            .await
            .expect("checkpoints");
    assert_eq!(checkpoints, 0, "no checkpoint of a change that never began");
    assert_nothing_left_open(&scratch.pool).await;
    scratch.drop_db().await;
}

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(schema = "shared", table = "ledger")]
#[allow(dead_code)]
struct Ledger {
    #[contract(primary_key)]
    id: i64,
    amount: i64,
}

/// An online type change of a table in a contract's fixed schema, run by a tenant's
/// remediation, fails naming that tenant. It named the table's schema (`shared`) as the
/// tenant.
#[tokio::test]
async fn an_online_change_of_a_fixed_schema_table_fails_naming_the_tenant() {
    let scratch = PgScratch::create("contract_online_fixed_tenant").await;
    support::exec(
        &scratch.pool,
        "CREATE SCHEMA tenant_1; CREATE SCHEMA shared; \
         CREATE TABLE shared.ledger (id int8 PRIMARY KEY, amount int4 NOT NULL); \
         INSERT INTO shared.ledger SELECT g, g FROM generate_series(1, 10) g; \
         ANALYZE shared.ledger",
    )
    .await;
    let directory = support::pg_tenant_directory(&scratch.pool).await;
    let contracts = ContractSet::<Postgres>::new().with::<Ledger>();
    let options = ApplyOptions::default()
        .with_online_threshold(Some(1))
        .with_lock_timeout(Duration::from_millis(50))
        .with_max_attempts(2);
    let dry = remediate(&directory, &contracts, Remediation::DryRun)
        .options(options.clone())
        .run()
        .await
        .expect("dry run");
    let plan = dry.plans.first().expect("a plan");
    assert!(plan.steps.iter().any(|s| s.online.is_some()), "{plan}");
    let holder = hold(
        &scratch.pool,
        "LOCK TABLE shared.ledger IN ACCESS SHARE MODE",
    )
    .await;
    let run = remediate(
        &directory,
        &contracts,
        Remediation::Approved(plan.hash.clone()),
    )
    .options(options)
    .run()
    .await
    .expect("run");
    holder.rollback().await.expect("release");
    assert_eq!(run.failed.len(), 1, "{:?}", run.failed);
    let text = run.failed[0].error.to_string();
    assert!(text.contains(" failed for tenant `tenant_1`"), "{text}");
    scratch.drop_db().await;
}

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "alpha")]
#[allow(dead_code)]
struct Alpha {
    #[contract(primary_key)]
    id: i64,
    n: i64,
}

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "beta")]
#[allow(dead_code)]
struct Beta {
    #[contract(primary_key)]
    id: i64,
    n: i64,
}

/// `tenant_1.alpha` (10 rows) and `tenant_1.beta` (`beta_rows`), each with an `int4` the
/// contracts read as `i64`, and the hash of their one plan under `options`: two online
/// type changes, `alpha` first.
async fn alpha_and_beta(
    prefix: &str,
    beta_rows: i64,
    options: &ApplyOptions,
) -> (
    PgScratch,
    TenantDirectory<Postgres>,
    ContractSet<Postgres>,
    String,
) {
    let scratch = PgScratch::create(prefix).await;
    support::exec(
        &scratch.pool,
        format!(
            "CREATE SCHEMA tenant_1; \
             CREATE TABLE tenant_1.alpha (id int8 PRIMARY KEY, n int4 NOT NULL); \
             CREATE TABLE tenant_1.beta (id int8 PRIMARY KEY, n int4 NOT NULL); \
             INSERT INTO tenant_1.alpha SELECT g, g FROM generate_series(1, 10) g; \
             INSERT INTO tenant_1.beta SELECT g, g FROM generate_series(1, {beta_rows}) g; \
             ANALYZE tenant_1.alpha; ANALYZE tenant_1.beta"
        ),
    )
    .await;
    let directory = support::pg_tenant_directory(&scratch.pool).await;
    let contracts = ContractSet::<Postgres>::new()
        .with::<Alpha>()
        .with::<Beta>();
    let dry = remediate(&directory, &contracts, Remediation::DryRun)
        .options(options.clone())
        .run()
        .await
        .expect("dry run");
    let plan = dry.plans.first().expect("a plan");
    let online: Vec<&str> = plan
        .steps
        .iter()
        .filter(|s| s.online.is_some())
        .map(|s| s.table.as_str())
        .collect();
    assert_eq!(online, ["alpha", "beta"], "{plan}");
    let hash = plan.hash.clone();
    (scratch, directory, contracts, hash)
}

/// tenant_1's one audit row: its status and its evidence.
async fn the_audit_row(pool: &PgPool) -> (String, String) {
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT status, evidence FROM public.contract_audit WHERE tenant = 'tenant_1'",
    )
    .fetch_all(pool)
    .await
    .expect("audit rows");
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (status, evidence) = rows.into_iter().next().unwrap_or_default();
    (status, evidence.unwrap_or_default())
}

/// A plan of two online type changes whose second fails after the first swapped: the audit
/// row the first swap committed says `applied` for what it lists, and says that the plan
/// stopped and why. It said `applied` and nothing more, as if the plan had run whole.
#[tokio::test]
async fn an_online_plan_stopped_after_a_swap_says_so_in_its_audit_row() {
    let options = ApplyOptions::default()
        .with_online_threshold(Some(1))
        .with_lock_timeout(Duration::from_millis(50))
        .with_max_attempts(2);
    let (scratch, directory, contracts, hash) =
        alpha_and_beta("contract_online_stopped", 10, &options).await;
    let holder = hold(
        &scratch.pool,
        "LOCK TABLE tenant_1.beta IN ACCESS SHARE MODE",
    )
    .await;
    let run = remediate(&directory, &contracts, Remediation::Approved(hash))
        .options(options)
        .run()
        .await
        .expect("run");
    holder.rollback().await.expect("release");
    assert_eq!(run.failed.len(), 1, "{:?}", run.failed);
    let (status, evidence) = the_audit_row(&scratch.pool).await;
    assert_eq!(status, "applied");
    assert!(
        evidence.starts_with(
            "the plan stopped after the online type changes this row lists, of its 2: "
        ) && evidence.contains("lock"),
        "{evidence}"
    );
    scratch.drop_db().await;
}

/// A plan of two online type changes that completes leaves its audit row `applied` with
/// no evidence: the first swap's "under way" is cleared by the last.
#[tokio::test]
async fn an_online_plan_that_completes_clears_its_under_way_note() {
    let options = ApplyOptions::default().with_online_threshold(Some(1));
    let (scratch, directory, contracts, hash) =
        alpha_and_beta("contract_online_completes", 10, &options).await;
    let run = remediate(&directory, &contracts, Remediation::Approved(hash))
        .options(options)
        .run()
        .await
        .expect("run");
    assert!(run.failed.is_empty(), "{:?}", run.failed);
    assert_eq!(
        the_audit_row(&scratch.pool).await,
        ("applied".to_owned(), String::new())
    );
    scratch.drop_db().await;
}

/// A plan of two online type changes whose pass is cancelled during the second one's
/// backfill: the audit row the first swap committed says that the plan was under way (1 of
/// 2), which outlives the cancelled pass. It said `applied` and nothing more.
#[tokio::test]
async fn an_online_plan_cancelled_after_a_swap_says_so_in_its_audit_row() {
    let options = ApplyOptions::default()
        .with_online_threshold(Some(1))
        .with_online_batches(200, Duration::from_millis(50));
    let (scratch, directory, contracts, hash) =
        alpha_and_beta("contract_online_cancelled", 20000, &options).await;
    let run = spawn_run(&directory, &contracts, Remediation::Approved(hash), options);
    assert!(
        crate::pg_online::backfill_started(&scratch.pool, "%\"beta\"%")
            .await
            .is_some(),
        "the second change's backfill started"
    );
    run.abort();
    let _ = run.await;
    let (_, evidence) = the_audit_row(&scratch.pool).await;
    assert!(
        evidence.starts_with("under way: 1 of the plan's 2 online type changes swapped"),
        "{evidence}"
    );
    scratch.drop_db().await;
}

/// Two tenants' plans change the same table of a contract's fixed schema online at once:
/// one changes it, the other finds the column changed once it has the table's online lock
/// and stops as stale. It checked the column before waiting for the lock, then ran a
/// second full change (`int8` to `int8`: every row written again, and a second swap).
#[tokio::test]
async fn two_tenants_changing_a_fixed_schema_table_online_change_it_once() {
    let scratch = PgScratch::create("contract_online_fixed_twice").await;
    support::exec(
        &scratch.pool,
        "CREATE SCHEMA tenant_1; CREATE SCHEMA tenant_2; CREATE SCHEMA shared; \
         CREATE TABLE shared.ledger (id int8 PRIMARY KEY, amount int4 NOT NULL); \
         INSERT INTO shared.ledger SELECT g, g FROM generate_series(1, 20000) g; \
         ANALYZE shared.ledger",
    )
    .await;
    let directory = support::pg_tenant_directory(&scratch.pool).await;
    let contracts = ContractSet::<Postgres>::new().with::<Ledger>();
    let options = ApplyOptions::default()
        .with_online_threshold(Some(1))
        .with_online_batches(1000, Duration::from_millis(20))
        .with_parallelism(2);
    let dry = remediate(&directory, &contracts, Remediation::DryRun)
        .options(options.clone())
        .run()
        .await
        .expect("dry run");
    let shape = dry.plans.first().expect("a plan").shape.clone();
    let run = remediate(&directory, &contracts, Remediation::ApprovedShape(shape))
        .options(options)
        .run()
        .await
        .expect("run");
    let changes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM public.contract_audit, jsonb_array_elements_text(statements) s \
         WHERE s LIKE '-- online type change%'",
    )
    .fetch_one(&scratch.pool)
    .await
    .expect("audit rows");
    assert_eq!(
        changes, 1,
        "audits {:?}, failed {:?}",
        run.audits, run.failed
    );
    // Changed once, every row carried over.
    let after: (String, i64, i64) = sqlx::query_as(
        "SELECT format_type(a.atttypid, a.atttypmod), \
                (SELECT count(*) FROM shared.ledger WHERE amount = id), \
                (SELECT count(*) FROM shared.ledger) \
         FROM pg_attribute a WHERE a.attrelid = 'shared.ledger'::regclass AND a.attname = 'amount'",
    )
    .fetch_one(&scratch.pool)
    .await
    .expect("column");
    assert_eq!(
        (after.0.as_str(), after.1),
        ("bigint", after.2),
        "{after:?}"
    );
    assert!(after.2 > 0, "{after:?}");
    scratch.drop_db().await;
}
