//! Remediation on PostgreSQL: the seed scenario end to end, racing replicas, a backend
//! killed mid-transaction, and the statement cache after DDL.

use crate::support;

use std::time::Duration;

use contract_sqlx::plan::{Hazard, Remediation};
use contract_sqlx::report::{DriftKind, Severity};
use contract_sqlx::{
    Contract, SchemaEpoch, TenantDirectory, Tenants,
    check::ContractSet,
    remediate,
    remediation::{ApplyOptions, AuditConfig},
};
use sqlx::{AssertSqlSafe, PgPool, Postgres};
use support::{PgScratch, pg_tenant_directory};

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "events")]
#[allow(dead_code)]
struct Event {
    #[contract(primary_key)]
    id: i64,
    user_id: i64,
    event_data: serde_json::Value,
    #[contract(default = "'{}'")]
    event_metadata: Option<serde_json::Value>,
}

async fn seed(pool: &PgPool, tenants: usize, drop_metadata_in: &[usize], int4_user_in: &[usize]) {
    let mut ddl = String::new();
    for i in 1..=tenants {
        ddl.push_str(&format!(
            "CREATE SCHEMA tenant_{i}; CREATE TABLE tenant_{i}.events (id int8 PRIMARY KEY, user_id int8 NOT NULL, \
             event_data jsonb NOT NULL, event_metadata jsonb); INSERT INTO tenant_{i}.events VALUES (1, 7, '{{}}', NULL);"
        ));
    }
    for i in drop_metadata_in {
        ddl.push_str(&format!(
            "ALTER TABLE tenant_{i}.events DROP COLUMN event_metadata;"
        ));
    }
    for i in int4_user_in {
        ddl.push_str(&format!(
            "ALTER TABLE tenant_{i}.events ALTER COLUMN user_id TYPE int4;"
        ));
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
        .execute(pool)
        .await
        .expect("seed");
}

/// Audit rows; an absent audit table (no remediation ever started) reads as none, any
/// other failure fails the test.
async fn audit_rows(pool: &PgPool) -> Vec<(String, String, String)> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('public.contract_audit') IS NOT NULL")
            .fetch_one(pool)
            .await
            .expect("catalog");
    if !exists {
        return Vec::new();
    }
    sqlx::query_as("SELECT tenant, plan_hash, status FROM public.contract_audit ORDER BY tenant")
        .fetch_all(pool)
        .await
        .expect("audit table")
}

#[tokio::test]
async fn seed_scenario_safe_only_then_approved_plan() {
    let scratch = PgScratch::create("contract_remediate").await;
    seed(&scratch.pool, 47, &[42], &[19]).await;
    let contracts = ContractSet::<Postgres>::new().with::<Event>();
    let dir = pg_tenant_directory(&scratch.pool).await;
    let options = ApplyOptions::default();

    let safe = remediate(&dir, &contracts, Remediation::SafeOnly)
        .options(options.clone())
        .run()
        .await
        .expect("safe-only");
    assert_eq!(safe.audits.len(), 1);
    assert_eq!(safe.audits[0].tenant, "tenant_42");
    assert_eq!(
        safe.audits[0].statements,
        [r#"ALTER TABLE "tenant_42"."events" ADD COLUMN "event_metadata" jsonb DEFAULT '{}'"#]
    );
    let waiting = safe
        .awaiting_approval
        .get("tenant_19")
        .expect("tenant_19 waits");
    assert_eq!(
        waiting.hazards(),
        [Hazard::TableRewrite, Hazard::AccessExclusiveLock]
    );
    assert_eq!(safe.after.tenants_with("compliant").count(), 46);
    let user_type: String = sqlx::query_scalar(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'tenant_19.events'::regclass AND attname = 'user_id'",
    )
    .fetch_one(&scratch.pool)
    .await
    .expect("type");
    assert_eq!(user_type, "integer", "tenant_19 must be untouched");
    let log: serde_json::Value =
        serde_json::from_str(&safe.log.to_json_pretty()).expect("log json");
    assert_eq!(log["task"], "remediate");
    let awaiting: Vec<&str> = log["tenants"]
        .as_array()
        .expect("tenant entries")
        .iter()
        .filter(|t| t["outcome"] == "awaiting_approval")
        .filter_map(|t| t["tenant"].as_str())
        .collect();
    assert_eq!(awaiting, ["tenant_19"]);
    assert!(
        log["outcome"]
            .as_str()
            .unwrap_or("")
            .starts_with("46 of 47 tenants compliant; tenant_19 paused awaiting approval of plan")
    );

    // A stale or foreign hash applies nothing unsafe.
    let other = remediate(&dir, &contracts, Remediation::Approved("0".repeat(64)))
        .options(options.clone())
        .run()
        .await
        .expect("run");
    assert!(other.audits.is_empty());

    let approved = remediate(
        &dir,
        &contracts,
        Remediation::Approved(waiting.hash.clone()),
    )
    .options(options.clone())
    .run()
    .await
    .expect("approved");
    assert_eq!(approved.audits.len(), 1);
    assert_eq!(
        approved.audits[0].statements[0],
        r#"ALTER TABLE "tenant_19"."events" ALTER COLUMN "user_id" TYPE int8 USING "user_id"::int8"#
    );
    assert!(approved.after.is_clean(), "{}", approved.after);
    assert!(approved.awaiting_approval.is_empty());
    let rows = audit_rows(&scratch.pool).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0].0.as_str(), rows[0].1.as_str(), rows[0].2.as_str()),
        ("tenant_19", waiting.hash.as_str(), "applied")
    );
    assert_eq!(rows[1].0, "tenant_42");
    scratch.drop_db().await;
}

#[tokio::test]
async fn eight_racing_guards_remediate_each_tenant_exactly_once() {
    let scratch = PgScratch::create("contract_race").await;
    let drifted: Vec<usize> = (1..=12).collect();
    seed(&scratch.pool, 16, &drifted, &[]).await;
    let contracts = ContractSet::<Postgres>::new().with::<Event>();
    // Each replica has its own pool, like a separate process; all are connected and
    // discovered before a barrier releases them together.
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(8));
    let mut runs = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&scratch.url)
            .await
            .expect("pool");
        let dir = pg_tenant_directory(&pool).await;
        let (contracts, barrier) = (contracts.clone(), barrier.clone());
        runs.spawn(async move {
            barrier.wait().await;
            remediate(&dir, &contracts, Remediation::SafeOnly)
                .run()
                .await
        });
    }
    let (mut total_audits, mut total_planned) = (0, 0);
    while let Some(run) = runs.join_next().await {
        let run = run.expect("task").expect("remediate");
        assert!(run.failed.is_empty(), "{:?}", run.failed);
        assert!(run.after.is_clean(), "{}", run.after);
        total_audits += run.audits.len();
        total_planned += run.plans.len();
    }
    assert!(
        total_planned > 12,
        "replicas really raced: {total_planned} plans for 12 drifted tenants"
    );
    let rows = audit_rows(&scratch.pool).await;
    assert_eq!(rows.len(), 12, "{rows:?}");
    assert_eq!(total_audits, 12);
    let mut tenants: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    tenants.dedup();
    assert_eq!(tenants.len(), 12, "one audit row per tenant");
    scratch.drop_db().await;
}

#[tokio::test]
async fn killed_backend_mid_transaction_leaves_tenant_unchanged_and_next_run_succeeds() {
    let scratch = PgScratch::create("contract_kill").await;
    seed(&scratch.pool, 2, &[1], &[]).await;
    let contracts = ContractSet::<Postgres>::new().with::<Event>();
    let dir = pg_tenant_directory(&scratch.pool).await;
    // Audit table first, so the blocked statement is the remediation DDL itself.
    let mut blocker = scratch.pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE tenant_1.events IN ACCESS SHARE MODE")
        .execute(&mut *blocker)
        .await
        .expect("lock");
    let options = ApplyOptions::default().with_lock_timeout(Duration::from_secs(60));
    let run = {
        let (dir, contracts, options) = (dir.clone(), contracts.clone(), options.clone());
        tokio::spawn(async move {
            remediate(&dir, &contracts, Remediation::SafeOnly)
                .options(options.clone())
                .run()
                .await
        })
    };
    // Find the remediation backend waiting on the lock and kill it.
    let mut killed = false;
    for _ in 0..200 {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' \
             AND query LIKE '%ALTER TABLE \"tenant_1\"%'",
        )
        .fetch_optional(&scratch.pool)
        .await
        .expect("activity");
        if let Some(pid) = pid {
            sqlx::query("SELECT pg_terminate_backend($1)")
                .bind(pid)
                .execute(&scratch.pool)
                .await
                .expect("kill");
            killed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(killed, "the remediation never reached its DDL");
    let run = run.await.expect("task").expect("remediate");
    assert_eq!(run.failed.len(), 1, "{:?}", run.failed);
    assert!(
        run.failed[0].error.contains("rolled back"),
        "{}",
        run.failed[0].error
    );
    blocker.rollback().await.expect("release");
    let has_column: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'tenant_1.events'::regclass AND attname = 'event_metadata' AND NOT attisdropped)",
    )
    .fetch_one(&scratch.pool)
    .await
    .expect("check");
    assert!(!has_column, "no partial change");
    assert!(audit_rows(&scratch.pool).await.is_empty(), "no audit row");

    let retry = remediate(&dir, &contracts, Remediation::SafeOnly)
        .run()
        .await
        .expect("retry");
    assert_eq!(retry.audits.len(), 1);
    assert!(retry.after.is_clean());
    scratch.drop_db().await;
}

async fn read_all(pool: &PgPool) -> Result<usize, String> {
    // A persistent (cached, named) prepared statement, like a consumer's hot query.
    sqlx::query("SELECT * FROM tenant_1.events")
        .fetch_all(pool)
        .await
        .map(|rows| rows.len())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn consumer_pool_with_epoch_hook_survives_remediation_ddl() {
    let scratch = PgScratch::create("contract_epoch").await;
    seed(&scratch.pool, 1, &[], &[1]).await;
    let contracts = ContractSet::<Postgres>::new().with::<Event>();
    let dir = pg_tenant_directory(&scratch.pool).await;
    let epoch = SchemaEpoch::new();
    let guarded = epoch
        .install(sqlx::postgres::PgPoolOptions::new().max_connections(1))
        .connect(&scratch.url)
        .await
        .expect("pool");
    let unguarded = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&scratch.url)
        .await
        .expect("pool");
    assert_eq!(read_all(&guarded).await, Ok(1));
    assert_eq!(read_all(&unguarded).await, Ok(1));

    let plan = remediate(&dir, &contracts, Remediation::DryRun)
        .run()
        .await
        .expect("dry run");
    let hash = plan.awaiting_approval["tenant_1"].hash.clone();
    let run = remediate(&dir, &contracts, Remediation::Approved(hash))
        .epoch(&epoch)
        .run()
        .await
        .expect("approved");
    assert_eq!(run.audits.len(), 1);
    assert_eq!(epoch.current(), 1);

    // Without the hook the stale cached statement fails (the hazard is real)...
    let stale = read_all(&unguarded).await;
    assert!(
        stale
            .as_ref()
            .is_err_and(|e| e.contains("cached plan must not change result type")),
        "{stale:?}"
    );
    // ...with it, the consumer never sees that error.
    for _ in 0..3 {
        assert_eq!(read_all(&guarded).await, Ok(1));
    }
    guarded.close().await;
    unguarded.close().await;
    scratch.drop_db().await;
}

#[derive(Debug, sqlx::Type)]
#[sqlx(type_name = "tenant_1.mood", rename_all = "lowercase")]
#[allow(dead_code)] // Happy and Sad are only decoded
enum Mood {
    Happy,
    Sad,
    Meh,
}

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "moods", backends(postgres))]
#[allow(dead_code)]
struct MoodRow {
    id: i64,
    #[contract(enum_labels = "happy, sad, meh")]
    mood: Mood,
}

#[tokio::test]
async fn missing_enum_labels_are_added_by_safe_only() {
    let scratch = PgScratch::create("contract_enum").await;
    sqlx::raw_sql(
        "CREATE SCHEMA tenant_1; CREATE TYPE tenant_1.mood AS ENUM ('happy', 'sad'); \
         CREATE TABLE tenant_1.moods (id int8 NOT NULL, mood tenant_1.mood NOT NULL); \
         INSERT INTO tenant_1.moods VALUES (1, 'sad');",
    )
    .execute(&scratch.pool)
    .await
    .expect("seed");
    let contracts = ContractSet::<Postgres>::new().with::<MoodRow>();
    let dir = pg_tenant_directory(&scratch.pool).await;
    let run = remediate(&dir, &contracts, Remediation::SafeOnly)
        .run()
        .await
        .expect("run");
    let finding = run.before.findings().next().expect("finding");
    assert_eq!(finding.actual, "missing labels: meh");
    assert_eq!(run.audits.len(), 1, "{:?}", run.failed);
    assert_eq!(
        run.audits[0].statements,
        [r#"ALTER TYPE "tenant_1"."mood" ADD VALUE IF NOT EXISTS 'meh'"#]
    );
    assert!(run.after.is_clean(), "{}", run.after);
    sqlx::query("INSERT INTO tenant_1.moods VALUES (2, $1)")
        .bind(Mood::Meh)
        .execute(&scratch.pool)
        .await
        .expect("write meh");
    let rows: Vec<MoodRow> = sqlx::query_as("SELECT id, mood FROM tenant_1.moods ORDER BY id")
        .fetch_all(&scratch.pool)
        .await
        .expect("read");
    assert!(matches!(rows[1].mood, Mood::Meh));
    scratch.drop_db().await;
}

/// A label missing from the enum that an array column's elements and a domain column's
/// base are is added to that enum by SafeOnly (one step per column, each `IF NOT EXISTS`),
/// and rows holding it then decode. The planner must name the enum, not the column's own
/// type (`"tenant_1"."mood[]"`, the domain). Before, neither column had a finding and
/// nothing was added.
#[tokio::test]
async fn a_missing_label_of_an_enum_behind_an_array_or_a_domain_is_added_to_the_enum() {
    use crate::pg_drift::{Mood, Moods, moods_setup};

    let scratch = PgScratch::create("contract_enum_wrapped_fix").await;
    support::exec(&scratch.pool, moods_setup("'happy', 'sad'")).await;
    let contracts = ContractSet::<Postgres>::new().with::<Moods>();
    let dir = pg_tenant_directory(&scratch.pool).await;
    let run = remediate(&dir, &contracts, Remediation::SafeOnly)
        .run()
        .await
        .expect("run");
    assert_eq!(run.audits.len(), 1, "{:?}", run.failed);
    let statements: std::collections::BTreeSet<&str> = run.audits[0]
        .statements
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(
        statements,
        [r#"ALTER TYPE "tenant_1"."mood" ADD VALUE IF NOT EXISTS 'meh'"#].into(),
        "{:?}",
        run.audits[0].statements
    );
    assert!(run.after.is_clean(), "{}", run.after);
    sqlx::query("INSERT INTO tenant_1.moods VALUES (1, $1, $2)")
        .bind(vec![Mood::Happy, Mood::Meh])
        .bind(Mood::Meh)
        .execute(&scratch.pool)
        .await
        .expect("write meh");
    let row: Moods = sqlx::query_as("SELECT id, history, today FROM tenant_1.moods")
        .fetch_one(&scratch.pool)
        .await
        .expect("read");
    assert_eq!(
        (row.history, row.today),
        (vec![Mood::Happy, Mood::Meh], Mood::Meh)
    );
    scratch.drop_db().await;
}

#[derive(Debug, sqlx::Type)]
#[sqlx(type_name = "tenant_1.mark")]
#[allow(dead_code)] // only its contract is used
enum Mark {
    #[sqlx(rename = "plain")]
    Plain,
    #[sqlx(rename = r"back\slash")]
    BackSlash,
}

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "marks", backends(postgres))]
#[allow(dead_code)]
struct MarkRow {
    id: i64,
    #[contract(enum_labels = r"plain, back\slash")]
    mark: Mark,
}

/// A label with a backslash is added as written, also where the database reads plain
/// string literals the old way (`standard_conforming_strings = off`): the DDL must not
/// lose the backslash, nor let it escape the quote that follows.
#[tokio::test]
async fn an_enum_label_with_a_backslash_is_added_as_written_without_standard_conforming_strings() {
    let scratch = PgScratch::create("contract_enum_bs").await;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "ALTER DATABASE \"{}\" SET standard_conforming_strings = off; \
         CREATE SCHEMA tenant_1; CREATE TYPE tenant_1.mark AS ENUM ('plain'); \
         CREATE TABLE tenant_1.marks (id int8 NOT NULL, mark tenant_1.mark NOT NULL);",
        scratch.name
    )))
    .execute(&scratch.pool)
    .await
    .expect("seed");
    // New connections take the database's setting.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&scratch.url)
        .await
        .expect("connect");
    let scs: String = sqlx::query_scalar("SHOW standard_conforming_strings")
        .fetch_one(&pool)
        .await
        .expect("setting");
    assert_eq!(scs, "off");
    let contracts = ContractSet::<Postgres>::new().with::<MarkRow>();
    let dir = pg_tenant_directory(&pool).await;
    let run = remediate(&dir, &contracts, Remediation::SafeOnly)
        .run()
        .await
        .expect("run");
    assert_eq!(run.audits.len(), 1, "{:?}", run.failed);
    let labels: Vec<String> = sqlx::query_scalar(
        "SELECT enumlabel::text FROM pg_enum WHERE enumtypid = 'tenant_1.mark'::regtype ORDER BY enumsortorder",
    )
    .fetch_all(&pool)
    .await
    .expect("labels");
    assert_eq!(labels, ["plain", r"back\slash"]);
    assert!(run.after.is_clean(), "{}", run.after);
    pool.close().await;
    scratch.drop_db().await;
}

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "notes")]
#[allow(dead_code)]
struct Note {
    id: i64,
    #[contract(sql_type = "varchar(100)")]
    body: String,
}

#[tokio::test]
async fn a_column_narrower_than_the_declared_sql_type_is_widened_in_place() {
    let scratch = PgScratch::create("contract_widen").await;
    sqlx::raw_sql(
        "CREATE SCHEMA tenant_1; CREATE TABLE tenant_1.notes (id int8 NOT NULL, body varchar(50) NOT NULL); \
         CREATE SCHEMA tenant_2; CREATE TABLE tenant_2.notes (id int8 NOT NULL, body varchar(100) NOT NULL);",
    )
    .execute(&scratch.pool)
    .await
    .expect("seed");
    let contracts = ContractSet::<Postgres>::new().with::<Note>();
    let dir = pg_tenant_directory(&scratch.pool).await;
    let filenode = || async {
        sqlx::query_scalar::<_, sqlx::postgres::types::Oid>(
            "SELECT relfilenode FROM pg_class WHERE oid = 'tenant_1.notes'::regclass",
        )
        .fetch_one(&scratch.pool)
        .await
        .expect("relfilenode")
    };
    let before = filenode().await;
    let run = remediate(&dir, &contracts, Remediation::SafeOnly)
        .run()
        .await
        .expect("run");
    assert_eq!(run.audits.len(), 1, "{:?}", run.failed);
    assert_eq!(
        filenode().await,
        before,
        "widened in place: the table was not rewritten"
    );
    let findings: Vec<_> = run
        .before
        .findings()
        .map(|f| (f.tenant.as_str(), f.kind, f.actual.as_str()))
        .collect();
    assert_eq!(
        findings,
        [(
            "tenant_1",
            contract_sqlx::report::DriftKind::Width,
            "character varying(50) (the contract declares varchar(100))"
        )]
    );
    assert_eq!(
        run.audits[0].statements,
        [
            r#"ALTER TABLE "tenant_1"."notes" ALTER COLUMN "body" TYPE varchar(100) USING "body"::varchar(100)"#
        ]
    );
    assert!(run.after.is_clean(), "{}", run.after);
    scratch.drop_db().await;
}

/// Two tenants whose remediation-lock names share a 32-bit `hashtext` value (found with
/// `generate_series` over `tenant_1..200000`; the test checks it on the server).
const COLLIDING_TENANTS: [&str; 2] = ["tenant_1754", "tenant_128957"];

async fn list_directory(pool: &PgPool, tenant: &str) -> TenantDirectory<Postgres> {
    TenantDirectory::new()
        .discover(pool, &Tenants::list([tenant]))
        .await
        .expect("discover")
}

#[tokio::test]
async fn advisory_lock_keys_collide_across_tenants() {
    let scratch = PgScratch::create("contract_lock_keys").await;
    let [held, other] = COLLIDING_TENANTS;
    let collide: bool = sqlx::query_scalar("SELECT hashtext($1) = hashtext($2)")
        .bind(format!("contract:tenant:{held}"))
        .bind(format!("contract:tenant:{other}"))
        .fetch_one(&scratch.pool)
        .await
        .expect("hashtext");
    assert!(collide, "the pair must collide under a 32-bit hashtext key");
    for tenant in COLLIDING_TENANTS {
        // `event_metadata` is missing: a safe ADD COLUMN.
        support::exec(
            &scratch.pool,
            format!(
                "CREATE SCHEMA {tenant}; CREATE TABLE {tenant}.events (id int8 PRIMARY KEY, \
                 user_id int8 NOT NULL, event_data jsonb NOT NULL);"
            ),
        )
        .await;
    }
    let contracts = ContractSet::<Postgres>::new().with::<Event>();

    // Replica A remediates `held` and stalls on a reader's table lock, holding `held`'s
    // remediation lock all the while.
    let mut reader = scratch.pool.begin().await.expect("begin");
    sqlx::query(AssertSqlSafe(format!(
        "LOCK TABLE {held}.events IN ACCESS SHARE MODE"
    )))
    .execute(&mut *reader)
    .await
    .expect("lock");
    let replica_a = {
        let (dir, contracts) = (list_directory(&scratch.pool, held).await, contracts.clone());
        let options = ApplyOptions::default().with_lock_timeout(Duration::from_secs(60));
        tokio::spawn(async move {
            remediate(&dir, &contracts, Remediation::SafeOnly)
                .options(options)
                .run()
                .await
        })
    };
    let mut stalled = false;
    for _ in 0..200 {
        let waiting: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query LIKE '%ALTER TABLE \"tenant_1754\"%'",
        )
        .fetch_optional(&scratch.pool)
        .await
        .expect("activity");
        if waiting.is_some() {
            stalled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stalled, "replica A never reached its DDL");

    // Replica B remediates `other` meanwhile: a different tenant, so it must not wait for A.
    let dir = list_directory(&scratch.pool, other).await;
    let options = ApplyOptions::default().with_advisory_lock_wait(Duration::from_secs(3));
    let run = remediate(&dir, &contracts, Remediation::SafeOnly)
        .options(options)
        .run()
        .await
        .expect("remediate");
    let failures: Vec<String> = run
        .failed
        .iter()
        .map(|f| format!("{}: {}", f.tenant, f.error))
        .collect();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(run.audits.len(), 1);
    assert_eq!(run.audits[0].tenant, other);
    assert!(run.after.is_clean(), "{}", run.after);

    reader.rollback().await.expect("release");
    let run_a = replica_a.await.expect("task").expect("remediate");
    assert!(run_a.failed.is_empty(), "{:?}", run_a.failed);
    assert_eq!(run_a.audits.len(), 1);
    scratch.drop_db().await;
}

#[tokio::test]
async fn a_not_null_fix_is_planned_on_a_view() {
    let scratch = PgScratch::create("contract_view_plan").await;
    // tenant_1: every contracted column of the view is a NOT NULL base column.
    // tenant_2: user_id comes from a nullable base column: drift, but not a table to alter.
    support::exec(
        &scratch.pool,
        "CREATE SCHEMA tenant_1; CREATE TABLE tenant_1.base (id int8 PRIMARY KEY, \
         user_id int8 NOT NULL, event_data jsonb NOT NULL, event_metadata jsonb); \
         CREATE VIEW tenant_1.events AS SELECT * FROM tenant_1.base; \
         CREATE SCHEMA tenant_2; CREATE TABLE tenant_2.base (id int8 PRIMARY KEY, \
         user_id int8, event_data jsonb NOT NULL, event_metadata jsonb); \
         CREATE VIEW tenant_2.events AS SELECT * FROM tenant_2.base;",
    )
    .await;
    let contracts = ContractSet::<Postgres>::new().with::<Event>();
    let dir = pg_tenant_directory(&scratch.pool).await;
    let dry = remediate(&dir, &contracts, Remediation::DryRun)
        .run()
        .await
        .expect("dry run");
    // A view has no primary key: an info finding, the only one of tenant_1.
    let at_risk = |tenant| {
        support::findings(&dry.before, tenant)
            .into_iter()
            .filter(|(_, _, severity)| *severity >= Severity::AtRisk)
            .map(|(column, kind, _)| (column.unwrap_or_default(), kind))
            .collect::<Vec<_>>()
    };
    assert_eq!(at_risk("tenant_1"), [], "{}", dry.before);
    assert_eq!(
        at_risk("tenant_2"),
        [("user_id".to_owned(), DriftKind::Nullability)],
        "{}",
        dry.before
    );
    let plan = dry
        .plans
        .iter()
        .find(|p| p.tenant == "tenant_2")
        .expect("tenant_2 plan");
    assert_eq!(plan.statements().count(), 0, "{:?}", plan.steps);
    assert_eq!(plan.refusals.len(), 1);
    assert!(
        plan.refusals[0]
            .reason
            .starts_with("not remediable: relation `tenant_2.events` is a view"),
        "{}",
        plan.refusals[0].reason
    );
    // Approving what was planned changes nothing and fails nothing.
    let approved = remediate(&dir, &contracts, Remediation::Approved(plan.hash.clone()))
        .run()
        .await
        .expect("approved");
    assert!(approved.failed.is_empty(), "{:?}", approved.failed);
    assert!(approved.audits.is_empty());
    scratch.drop_db().await;
}

/// An enum type the fleet has under an unqualified name (in `public`, or a tenant's own).
#[derive(Debug, sqlx::Type)]
#[sqlx(type_name = "mood", rename_all = "lowercase")]
#[allow(dead_code)] // only decoded
enum SharedMood {
    Happy,
    Sad,
    Meh,
}

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "diary", backends(postgres))]
#[allow(dead_code)]
struct DiaryEntry {
    #[contract(primary_key)]
    id: i64,
    #[contract(enum_labels = "happy, sad, meh")]
    mood: SharedMood,
    #[contract(enum_labels = "happy, sad, meh")]
    previous_mood: Option<SharedMood>,
}

/// An enum type no schema has until the test creates it.
#[derive(Debug, sqlx::Type)]
#[sqlx(type_name = "weather", rename_all = "lowercase")]
#[allow(dead_code)] // only decoded
enum Weather {
    Sun,
    Rain,
}

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "forecast", backends(postgres))]
#[allow(dead_code)]
struct Forecast {
    id: i64,
    #[contract(enum_labels = "sun, rain")]
    weather: Weather,
}

const MOOD_TYPE: &str = "CREATE TYPE {s}.mood AS ENUM ('happy', 'sad', 'meh');";

#[tokio::test]
async fn safe_only_cannot_create_a_missing_table_whose_columns_use_a_custom_type() {
    let scratch = PgScratch::create("contract_custom_type").await;
    // `public.mood` is the fleet's type. tenant_1: no `diary`. tenant_2: a `diary` without
    // `previous_mood`. tenant_3: no `diary`, and a `mood` of its own. No `weather` anywhere.
    support::exec(
        &scratch.pool,
        format!(
            "{} CREATE SCHEMA tenant_1; CREATE SCHEMA tenant_2; \
             CREATE TABLE tenant_2.diary (id int8 PRIMARY KEY, mood public.mood NOT NULL); \
             CREATE SCHEMA tenant_3; {}",
            MOOD_TYPE.replace("{s}", "public"),
            MOOD_TYPE.replace("{s}", "tenant_3"),
        ),
    )
    .await;
    let contracts = ContractSet::<Postgres>::new()
        .with::<DiaryEntry>()
        .with::<Forecast>();
    let dir = pg_tenant_directory(&scratch.pool).await;
    let run = remediate(&dir, &contracts, Remediation::SafeOnly)
        .run()
        .await
        .expect("run");
    let failures: Vec<String> = run
        .failed
        .iter()
        .map(|f| format!("{}: {}", f.tenant, f.error))
        .collect();
    assert!(failures.is_empty(), "{failures:?}");
    let statements: Vec<(&str, Vec<&str>)> = run
        .audits
        .iter()
        .map(|a| {
            let statements = a.statements.iter().map(String::as_str).collect();
            (a.tenant.as_str(), statements)
        })
        .collect();
    assert_eq!(
        statements,
        [
            (
                "tenant_1",
                vec![
                    r#"CREATE TABLE "tenant_1"."diary" ("id" int8 NOT NULL, "mood" "public"."mood" NOT NULL, "previous_mood" "public"."mood", PRIMARY KEY ("id"))"#
                ]
            ),
            (
                "tenant_2",
                vec![
                    r#"ALTER TABLE "tenant_2"."diary" ADD COLUMN "previous_mood" "public"."mood""#
                ]
            ),
            // The tenant's own type comes first.
            (
                "tenant_3",
                vec![
                    r#"CREATE TABLE "tenant_3"."diary" ("id" int8 NOT NULL, "mood" "tenant_3"."mood" NOT NULL, "previous_mood" "tenant_3"."mood", PRIMARY KEY ("id"))"#
                ]
            ),
        ]
    );
    for plan in &run.plans {
        let refused: Vec<&str> = plan.refusals.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            refused[0].contains(&format!(
                "has type `weather`, which exists in none of the schemas `{}`, `public`",
                plan.tenant
            )) && refused[0].contains("create the type there"),
            "{}",
            refused[0]
        );
    }
    let compliant_diaries = |report: &contract_sqlx::FleetReport| {
        ["tenant_1", "tenant_2"].map(|tenant| {
            support::findings(report, tenant)
                .iter()
                .all(|(_, kind, _)| *kind == DriftKind::MissingTable)
        })
    };
    assert_eq!(compliant_diaries(&run.after), [true, true], "{}", run.after);

    // Once `public` has the type, the `forecast` tables are created with it.
    support::exec(
        &scratch.pool,
        "CREATE TYPE public.weather AS ENUM ('sun', 'rain')",
    )
    .await;
    let run = remediate(&dir, &contracts, Remediation::SafeOnly)
        .run()
        .await
        .expect("run");
    assert!(run.failed.is_empty(), "{:?}", run.failed);
    assert_eq!(run.audits.len(), 3);
    for audit in &run.audits {
        assert_eq!(
            audit.statements,
            [format!(
                r#"CREATE TABLE "{}"."forecast" ("id" int8 NOT NULL, "weather" "public"."weather" NOT NULL)"#,
                audit.tenant
            )]
        );
    }
    assert_eq!(compliant_diaries(&run.after), [true, true], "{}", run.after);
    assert!(
        support::findings(&run.after, "tenant_1").is_empty(),
        "{}",
        run.after
    );
    scratch.drop_db().await;
}

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "odd_notes")]
#[allow(dead_code)]
struct OddNote {
    #[contract(primary_key)]
    id: i64,
    #[contract(default = "'it''s'")]
    body: Option<String>,
    #[contract(default = "'x' -- a comment ends the default")]
    tag: Option<String>,
}

/// The audit row travels with the DDL as literals (one round trip, no bound parameters):
/// quotes and backslashes in its values read back exactly, whatever the session's string
/// settings are, and a default ending in a `--` comment does not swallow what follows.
#[tokio::test]
async fn audit_values_with_quotes_and_backslashes_read_back_exactly() {
    let scratch = PgScratch::create("contract_audit_literals").await;
    let settings: [&[(&str, &str)]; 3] = [
        &[],
        &[("standard_conforming_strings", "off")],
        &[("backslash_quote", "off")],
    ];
    let contracts = ContractSet::<Postgres>::new().with::<OddNote>();
    for (i, setting) in settings.iter().enumerate() {
        let tenant = format!("tenant_{i}");
        support::exec(
            &scratch.pool,
            format!(
                "CREATE SCHEMA {tenant}; CREATE TABLE {tenant}.odd_notes (id int8 PRIMARY KEY)"
            ),
        )
        .await;
        let options: sqlx::postgres::PgConnectOptions = scratch.url.parse().expect("scratch url");
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options.options(setting.iter().copied()))
            .await
            .expect("pool with the string settings");
        let actor = format!(r"o'brien \ c:\new\'{i}'' \\");
        let dir = list_directory(&pool, &tenant).await;
        let run = remediate(&dir, &contracts, Remediation::SafeOnly)
            .options(ApplyOptions::default().with_audit(AuditConfig::default().with_actor(&actor)))
            .run()
            .await
            .expect("remediate");
        assert!(run.failed.is_empty(), "{setting:?}: {:?}", run.failed);
        let [record] = run.audits.as_slice() else {
            panic!("{setting:?}: one audit record expected: {:?}", run.audits);
        };
        let (stored_actor, statements): (String, sqlx::types::Json<Vec<String>>) =
            sqlx::query_as("SELECT actor, statements FROM public.contract_audit WHERE tenant = $1")
                .bind(&tenant)
                .fetch_one(&scratch.pool)
                .await
                .expect("the audit row");
        assert_eq!(stored_actor, actor, "{setting:?}");
        assert_eq!(statements.0, record.statements, "{setting:?}");
        assert!(
            record.statements.iter().any(|s| s.contains("'it''s'")),
            "{:?}",
            record.statements
        );
        pool.close().await;
    }
    scratch.drop_db().await;
}

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "typo_notes")]
#[allow(dead_code)]
struct TypoNote {
    #[contract(primary_key)]
    id: i64,
    #[contract(default = "now( +")]
    stamp: Option<String>,
}

/// The DDL, its bounds and the audit row go in one message, which PostgreSQL parses whole
/// before running any of it: a syntax error is still reported at the statement that holds
/// it, and nothing is applied.
#[tokio::test]
async fn a_statement_that_does_not_parse_is_named_in_the_failure() {
    let scratch = PgScratch::create("contract_typo_ddl").await;
    support::exec(
        &scratch.pool,
        "CREATE SCHEMA tenant_1; CREATE TABLE tenant_1.typo_notes (id int8 PRIMARY KEY)",
    )
    .await;
    let contracts = ContractSet::<Postgres>::new().with::<TypoNote>();
    let dir = pg_tenant_directory(&scratch.pool).await;
    let run = remediate(&dir, &contracts, Remediation::SafeOnly)
        .run()
        .await
        .expect("remediate");
    let [failure] = run.failed.as_slice() else {
        panic!("one failure expected: {:?}", run.failed);
    };
    assert_eq!(failure.tenant, "tenant_1");
    assert!(
        failure
            .error
            .contains("at `ALTER TABLE \"tenant_1\".\"typo_notes\" ADD COLUMN \"stamp\""),
        "{}",
        failure.error
    );
    assert!(failure.error.contains("rolled back"), "{}", failure.error);
    assert!(audit_rows(&scratch.pool).await.is_empty());
    scratch.drop_db().await;
}
