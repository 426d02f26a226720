//! Remediation on SQLite (one database file per tenant): safe-only apply inside one
//! `BEGIN IMMEDIATE` transaction with the audit row, a no-op second run, racing replicas,
//! a failing statement that rolls everything back, and type changes by table rebuild
//! (approved by hash; a value that does not convert or a dangling foreign key fails the
//! whole transaction).

use crate::support;

use std::path::Path;

use contract_sqlx::plan::{Hazard, Remediation};
use contract_sqlx::{
    Contract, check::ContractSet, remediate, remediation::ApplyOptions, report::DriftKind,
    sqlite_tenant_files,
};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Sqlite, SqliteConnection};

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "events")]
#[allow(dead_code)]
struct Event {
    #[contract(primary_key)]
    id: i64,
    user_id: i64,
    score: f64,
    note: Option<String>,
    #[contract(default = "'new'")]
    status: String,
}

/// A contract whose second new column cannot be added (SQLite refuses a non-constant
/// default in `ADD COLUMN`).
#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "levels")]
#[allow(dead_code)]
struct Level {
    #[contract(primary_key)]
    id: i64,
    label: Option<String>,
    #[contract(default = "(CURRENT_TIMESTAMP)")]
    seen_at: Option<String>,
}

const FULL: &str = "CREATE TABLE events (id INTEGER PRIMARY KEY, user_id BIGINT NOT NULL, score REAL NOT NULL, \
                    note TEXT, status TEXT NOT NULL DEFAULT 'new')";

async fn open(dir: &Path, tenant: &str) -> SqliteConnection {
    SqliteConnectOptions::new()
        .filename(dir.join(format!("{tenant}.db")))
        .create_if_missing(true)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("open {tenant}: {e}"))
}

async fn create_tenant(dir: &Path, tenant: &str, ddl: &str) {
    let mut conn = open(dir, tenant).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(ddl.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{ddl}: {e}"));
    conn.close().await.expect("close");
}

async fn seed_events(dir: &Path, tenant: &str, create: &str) {
    create_tenant(
        dir,
        tenant,
        &format!("{create}; INSERT INTO events (id, user_id, score) VALUES (1, 7, 0.5)"),
    )
    .await;
}

/// `(status, attempts, statements)` of every audit row of `tenant`.
/// An absent audit table reads as no rows; any other failure fails the test.
async fn audit(dir: &Path, tenant: &str) -> Vec<(String, i64, String)> {
    let mut conn = open(dir, tenant).await;
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'contract_audit')",
    )
    .fetch_one(&mut conn)
    .await
    .expect("catalog");
    let rows = if exists {
        sqlx::query_as(
            "SELECT status, attempts, statements FROM contract_audit ORDER BY started_at",
        )
        .fetch_all(&mut conn)
        .await
        .expect("audit table")
    } else {
        Vec::new()
    };
    conn.close().await.expect("close");
    rows
}

async fn columns(dir: &Path, tenant: &str, table: &str) -> Vec<String> {
    let mut conn = open(dir, tenant).await;
    let names = sqlx::query_scalar("SELECT name FROM pragma_table_info(?) ORDER BY cid")
        .bind(table)
        .fetch_all(&mut conn)
        .await
        .expect("columns");
    conn.close().await.expect("close");
    names
}

#[tokio::test]
async fn safe_only_adds_missing_columns_holds_type_change_and_audits_once() {
    let scratch = support::TempDir::new("contract_sqlite_remediate");
    seed_events(&scratch.0, "tenant_1", FULL).await;
    seed_events(
        &scratch.0,
        "tenant_2",
        "CREATE TABLE events (id INTEGER PRIMARY KEY, user_id BIGINT NOT NULL, score REAL NOT NULL)",
    )
    .await;
    seed_events(
        &scratch.0,
        "tenant_3",
        "CREATE TABLE events (id INTEGER PRIMARY KEY, user_id BIGINT NOT NULL, score REAL NOT NULL, note TEXT)",
    )
    .await;
    // An incompatible type: TEXT where f64 is read.
    seed_events(
        &scratch.0,
        "tenant_4",
        &FULL.replace("score REAL", "score TEXT"),
    )
    .await;
    let dir = sqlite_tenant_files(&scratch.0).await.expect("tenants");
    let contracts = ContractSet::<Sqlite>::new().with::<Event>();
    let options = ApplyOptions::default();

    let run = remediate(&dir, &contracts, Remediation::SafeOnly)
        .options(options.clone())
        .run()
        .await
        .expect("remediate");
    assert!(run.failed.is_empty(), "{:?}", run.failed);
    let mut remediated: Vec<&str> = run.audits.iter().map(|a| a.tenant.as_str()).collect();
    remediated.sort_unstable();
    assert_eq!(remediated, ["tenant_2", "tenant_3"]);
    let t2 = run
        .audits
        .iter()
        .find(|a| a.tenant == "tenant_2")
        .expect("t2");
    assert_eq!(
        t2.statements,
        [
            r#"ALTER TABLE "events" ADD COLUMN "note" TEXT"#,
            r#"ALTER TABLE "events" ADD COLUMN "status" TEXT NOT NULL DEFAULT 'new'"#,
        ]
    );
    // The type change is a table rebuild: planned, but it waits for an approval.
    let t4 = run
        .plans
        .iter()
        .find(|p| p.tenant == "tenant_4")
        .expect("t4 plan");
    assert!(t4.refusals.is_empty(), "{:?}", t4.refusals);
    assert_eq!(t4.steps.len(), 1, "{:?}", t4.steps);
    assert_eq!(t4.steps[0].fixes, DriftKind::TypeMismatch);
    assert_eq!(t4.hazards(), [Hazard::ValidatesRows, Hazard::TableRebuild]);
    assert!(run.awaiting_approval.contains_key("tenant_4"));
    assert_eq!(
        run.after.tenants_with("compliant").count(),
        3,
        "{}",
        run.after
    );

    for tenant in ["tenant_2", "tenant_3"] {
        let names = columns(&scratch.0, tenant, "events").await;
        assert!(
            names.iter().any(|n| n == "note") && names.iter().any(|n| n == "status"),
            "{tenant}: {names:?}"
        );
        let mut conn = open(&scratch.0, tenant).await;
        let rows: Vec<Event> = sqlx::query_as("SELECT * FROM events")
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("decode {tenant}: {e}"));
        conn.close().await.expect("close");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].status, "new");
        assert_eq!(rows[0].note, None);
        let rows = audit(&scratch.0, tenant).await;
        assert_eq!(rows.len(), 1, "{tenant}: {rows:?}");
        assert_eq!((rows[0].0.as_str(), rows[0].1), ("applied", 1));
    }
    assert!(audit(&scratch.0, "tenant_1").await.is_empty());
    assert!(audit(&scratch.0, "tenant_4").await.is_empty());
    assert_eq!(
        columns(&scratch.0, "tenant_4", "events").await.len(),
        5,
        "tenant_4 untouched"
    );

    let again = remediate(&dir, &contracts, Remediation::SafeOnly)
        .options(options.clone())
        .run()
        .await
        .expect("second run");
    assert!(again.audits.is_empty(), "{:?}", again.audits);
    assert!(again.failed.is_empty(), "{:?}", again.failed);
    assert_eq!(again.plans.len(), 1, "only tenant_4 is still drifted");
    for tenant in ["tenant_2", "tenant_3"] {
        assert_eq!(audit(&scratch.0, tenant).await.len(), 1);
    }
    // The audit log reads the row back: applied, nothing settled.
    let pool = sqlx::SqlitePool::connect_with(
        SqliteConnectOptions::new().filename(scratch.0.join("tenant_2.db")),
    )
    .await
    .expect("tenant_2");
    let entries = contract_sqlx::remediation::AuditEntry::read_sqlite(
        &pool,
        &contract_sqlx::remediation::AuditConfig::default(),
        &contract_sqlx::remediation::AuditQuery::default(),
    )
    .await
    .expect("audit log");
    pool.close().await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(
        (entries[0].status.as_str(), &entries[0].evidence),
        ("applied", &None),
        "{}",
        entries[0]
    );
}

#[tokio::test]
async fn four_racing_replicas_remediate_each_tenant_once() {
    let scratch = support::TempDir::new("contract_sqlite_race");
    for i in 1..=6 {
        let create = if i <= 4 {
            "CREATE TABLE events (id INTEGER PRIMARY KEY, user_id BIGINT NOT NULL, score REAL NOT NULL)"
        } else {
            FULL
        };
        seed_events(&scratch.0, &format!("tenant_{i}"), create).await;
    }
    let contracts = ContractSet::<Sqlite>::new().with::<Event>();
    let mut runs = tokio::task::JoinSet::new();
    for _ in 0..4 {
        // Each replica opens its own pools, like a separate process.
        let dir = sqlite_tenant_files(&scratch.0).await.expect("tenants");
        let contracts = contracts.clone();
        runs.spawn(async move {
            remediate(&dir, &contracts, Remediation::SafeOnly)
                .run()
                .await
        });
    }
    let mut total = 0;
    while let Some(run) = runs.join_next().await {
        let run = run.expect("task").expect("remediate");
        assert!(run.failed.is_empty(), "{:?}", run.failed);
        assert!(run.after.is_clean(), "{}", run.after);
        total += run.audits.len();
    }
    assert_eq!(total, 4);
    for i in 1..=6 {
        let rows = audit(&scratch.0, &format!("tenant_{i}")).await;
        assert_eq!(rows.len(), usize::from(i <= 4), "tenant_{i}: {rows:?}");
    }
}

#[tokio::test]
async fn failing_statement_rolls_back_the_whole_tenant() {
    let scratch = support::TempDir::new("contract_sqlite_fail");
    create_tenant(
        &scratch.0,
        "tenant_1",
        "CREATE TABLE levels (id INTEGER PRIMARY KEY); INSERT INTO levels (id) VALUES (1)",
    )
    .await;
    let dir = sqlite_tenant_files(&scratch.0).await.expect("tenants");
    let contracts = ContractSet::<Sqlite>::new().with::<Level>();
    let run = remediate(&dir, &contracts, Remediation::SafeOnly)
        .run()
        .await
        .expect("remediate");
    assert!(run.audits.is_empty(), "{:?}", run.audits);
    assert_eq!(run.failed.len(), 1, "{:?}", run.failed);
    let error = &run.failed[0].error;
    assert!(
        error.contains("rolled back") && error.contains("seen_at"),
        "{error}"
    );
    // The first ADD COLUMN ran in the same transaction: it is gone too, and so is the row.
    assert_eq!(columns(&scratch.0, "tenant_1", "levels").await, ["id"]);
    assert!(audit(&scratch.0, "tenant_1").await.is_empty());
    assert_eq!(run.after.tenants_with("drifted").count(), 1);
}

/// `(type, name, sql)` of every schema object of `tenant` but the audit table.
async fn schema(dir: &Path, tenant: &str) -> Vec<(String, String, String)> {
    let mut conn = open(dir, tenant).await;
    let rows = sqlx::query_as(
        "SELECT type, name, sql FROM sqlite_schema WHERE sql IS NOT NULL AND tbl_name <> 'contract_audit' ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .expect("sqlite_schema");
    conn.close().await.expect("close");
    rows
}

/// `events` with `user_id` declared TEXT (the contract reads `i64`), an index and a
/// trigger on it, and a child table whose rows a cascading DELETE would remove.
const TEXT_USER_ID: &str = "\
    CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, score REAL NOT NULL, \
        note TEXT, status TEXT NOT NULL DEFAULT 'new' CHECK (status <> '(none)'));
    CREATE INDEX events_user ON events (user_id);
    CREATE TRIGGER events_note AFTER INSERT ON Events WHEN new.note IS NULL
        BEGIN UPDATE events SET note = 'auto; (trigger)' WHERE id = new.id; END;
    CREATE TABLE children (id INTEGER PRIMARY KEY, event_id INTEGER NOT NULL REFERENCES events (id) ON DELETE CASCADE);";

async fn seed_text_user_ids(dir: &Path, tenant: &str, user_ids: &[&str], extra: &str) {
    let values: Vec<String> = user_ids
        .iter()
        .enumerate()
        .map(|(i, u)| format!("({}, '{u}', {i}.5)", i + 1))
        .collect();
    create_tenant(
        dir,
        tenant,
        &format!(
            "{TEXT_USER_ID}
             INSERT INTO events (id, user_id, score) VALUES {}, (99, '0', 0);
             DELETE FROM events WHERE id = 99;
             INSERT INTO children (id, event_id) VALUES (1, 1), (2, 1);
             {extra}",
            values.join(", ")
        ),
    )
    .await;
}

#[tokio::test]
async fn approved_rebuild_changes_a_column_type_and_keeps_everything_else() {
    let scratch = support::TempDir::new("contract_sqlite_rebuild");
    seed_text_user_ids(&scratch.0, "tenant_1", &["7", "42", "9000000000"], "").await;
    let before = schema(&scratch.0, "tenant_1").await;
    let dir = sqlite_tenant_files(&scratch.0).await.expect("tenants");
    let contracts = ContractSet::<Sqlite>::new().with::<Event>();
    let options = ApplyOptions::default();

    // SafeOnly never rebuilds: the plan waits for an approval of its hash.
    let run = remediate(&dir, &contracts, Remediation::SafeOnly)
        .options(options.clone())
        .run()
        .await
        .expect("safe only");
    assert!(run.audits.is_empty(), "{:?}", run.audits);
    let plan = run.awaiting_approval.get("tenant_1").expect("awaiting");
    assert!(plan.refusals.is_empty(), "{:?}", plan.refusals);
    assert_eq!(
        plan.hazards(),
        [Hazard::ValidatesRows, Hazard::TableRebuild]
    );
    let statements: Vec<&str> = plan.statements().collect();
    assert_eq!(
        statements[0],
        "CREATE TABLE \"events__contract_rebuild\" (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id INTEGER NOT NULL, \
         score REAL NOT NULL, note TEXT, status TEXT NOT NULL DEFAULT 'new' CHECK (status <> '(none)'))"
    );
    let sql_of = |name: &str| {
        before
            .iter()
            .find(|(_, n, _)| n == name)
            .map(|(_, _, sql)| sql.as_str())
            .unwrap_or_default()
    };
    // Dependents in name order, verbatim.
    assert_eq!(
        &statements[statements.len() - 2..],
        [sql_of("events_note"), sql_of("events_user")],
        "the trigger and the index, verbatim"
    );
    assert_eq!(schema(&scratch.0, "tenant_1").await, before);

    let run = remediate(&dir, &contracts, Remediation::Approved(plan.hash.clone()))
        .options(options.clone())
        .run()
        .await
        .expect("approved");
    assert!(run.failed.is_empty(), "{:?}", run.failed);
    assert_eq!(run.audits.len(), 1, "{:?}", run.audits);
    assert_eq!(run.audits[0].plan_hash, plan.hash);
    assert!(run.after.is_clean(), "{}", run.after);

    // The type changed; the index, trigger and child table are as they were.
    let after = schema(&scratch.0, "tenant_1").await;
    let names = |s: &[(String, String, String)]| {
        s.iter()
            .map(|(t, n, _)| format!("{t} {n}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&after), names(&before));
    for (object, was) in after.iter().zip(&before) {
        if object.1 == "events" {
            assert!(
                object.2.contains("user_id INTEGER NOT NULL"),
                "{}",
                object.2
            );
            // Only the type differs (the RENAME writes the table name quoted).
            assert_eq!(
                object.2,
                was.2
                    .replace("user_id TEXT", "user_id INTEGER")
                    .replace("CREATE TABLE events", "CREATE TABLE \"events\"")
            );
        } else {
            assert_eq!(object, was);
        }
    }
    let mut conn = open(&scratch.0, "tenant_1").await;
    let rows: Vec<Event> = sqlx::query_as("SELECT * FROM events ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .expect("decode with FromRow");
    assert_eq!(
        rows.iter().map(|e| e.user_id).collect::<Vec<_>>(),
        [7, 42, 9_000_000_000]
    );
    assert_eq!(rows[1].score, 1.5);
    assert_eq!(rows[0].note.as_deref(), Some("auto; (trigger)"));
    let classes: Vec<String> = sqlx::query_scalar("SELECT DISTINCT typeof(user_id) FROM events")
        .fetch_all(&mut conn)
        .await
        .expect("typeof");
    assert_eq!(classes, ["integer"]);
    let children: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM children")
        .fetch_one(&mut conn)
        .await
        .expect("children");
    assert_eq!(children, 2, "the DROP TABLE did not cascade");
    // AUTOINCREMENT keeps its high-water mark (id 99 was used and deleted) ...
    let seq: i64 = sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
        .fetch_one(&mut conn)
        .await
        .expect("sqlite_sequence");
    assert_eq!(seq, 99);
    // ... and the re-created trigger still fires.
    sqlx::query("INSERT INTO events (user_id, score) VALUES (5, 0.0)")
        .execute(&mut conn)
        .await
        .expect("insert");
    let (id, note): (i64, String) = sqlx::query_as("SELECT id, note FROM events WHERE user_id = 5")
        .fetch_one(&mut conn)
        .await
        .expect("new row");
    assert_eq!((id, note.as_str()), (100, "auto; (trigger)"));
    conn.close().await.expect("close");
    let rows = audit(&scratch.0, "tenant_1").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0].0.as_str(), rows[0].1), ("applied", 1));
    assert!(
        rows[0].2.contains("events__contract_rebuild"),
        "{}",
        rows[0].2
    );

    // The pool's connections got foreign keys back on.
    let pool = dir.pool_of("tenant_1").expect("pool");
    let on: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(pool)
        .await
        .expect("pragma");
    assert_eq!(on, 1);
}

#[tokio::test]
async fn rebuild_that_does_not_convert_or_leaves_dangling_keys_rolls_back() {
    let scratch = support::TempDir::new("contract_sqlite_rebuild_fail");
    // A value that is not an integer stays text after the copy.
    seed_text_user_ids(&scratch.0, "tenant_1", &["7", "seven"], "").await;
    // A child row that references no event (written while foreign keys were off).
    seed_text_user_ids(
        &scratch.0,
        "tenant_2",
        &["7", "8"],
        "PRAGMA foreign_keys = OFF; INSERT INTO children (id, event_id) VALUES (3, 404);",
    )
    .await;
    // A view on the table: SQLite cannot drop the table for a rebuild, so it is refused.
    seed_text_user_ids(
        &scratch.0,
        "tenant_3",
        &["7"],
        "CREATE VIEW recent_events AS SELECT * FROM events WHERE id > 1;",
    )
    .await;
    let mut before = Vec::new();
    for tenant in ["tenant_1", "tenant_2", "tenant_3"] {
        before.push(schema(&scratch.0, tenant).await);
    }
    let dir = sqlite_tenant_files(&scratch.0).await.expect("tenants");
    let contracts = ContractSet::<Sqlite>::new().with::<Event>();
    let options = ApplyOptions::default();
    let run = remediate(&dir, &contracts, Remediation::DryRun)
        .options(options.clone())
        .run()
        .await
        .expect("dry run");
    let plan_of = |tenant: &str| {
        run.plans
            .iter()
            .find(|p| p.tenant == tenant)
            .unwrap_or_else(|| panic!("{tenant} plan"))
            .clone()
    };
    let t3 = plan_of("tenant_3");
    assert!(t3.steps.is_empty(), "{:?}", t3.steps);
    assert!(
        t3.refusals[0].reason.contains(r#"view "recent_events""#),
        "{}",
        t3.refusals[0].reason
    );

    for (tenant, why) in [
        (
            "tenant_1",
            "CHECK constraint failed: user_id_values_convert_to_integer",
        ),
        (
            "tenant_2",
            "row 3 of `children` references a missing row of `events`",
        ),
    ] {
        let plan = plan_of(tenant);
        assert_eq!(plan.steps.len(), 1, "{tenant}: {:?}", plan.refusals);
        let run = remediate(&dir, &contracts, Remediation::Approved(plan.hash.clone()))
            .options(options.clone())
            .run()
            .await
            .expect("approved");
        assert!(run.audits.is_empty(), "{tenant}: {:?}", run.audits);
        assert_eq!(run.failed.len(), 1, "{tenant}: {:?}", run.failed);
        let error = &run.failed[0].error;
        assert!(
            error.contains("rolled back") && error.contains(why),
            "{tenant}: {error}"
        );
        assert!(audit(&scratch.0, tenant).await.is_empty(), "{tenant}");
        assert_eq!(run.after.tenants_with("drifted").count(), 3);
    }
    for (tenant, was) in ["tenant_1", "tenant_2", "tenant_3"].iter().zip(&before) {
        assert_eq!(&schema(&scratch.0, tenant).await, was, "{tenant} unchanged");
    }
    let mut conn = open(&scratch.0, "tenant_1").await;
    let ids: Vec<String> = sqlx::query_scalar("SELECT user_id FROM events ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .expect("rows");
    assert_eq!(ids, ["7", "seven"]);
    conn.close().await.expect("close");
}

/// A contracted relation that is a view: a missing column is refused as not remediable
/// (ALTER TABLE cannot change a view), not planned. The view was read as a table, so the
/// plan held an `ALTER TABLE … ADD COLUMN` that failed at apply on every run (helper-68).
#[tokio::test]
async fn a_view_s_missing_column_is_refused_not_planned() {
    let scratch = support::TempDir::new("contract_sqlite_view");
    create_tenant(
        &scratch.0,
        "tenant_1",
        "CREATE TABLE base (id INTEGER PRIMARY KEY, user_id BIGINT NOT NULL, score REAL NOT NULL); \
         CREATE VIEW events AS SELECT id, user_id, score FROM base",
    )
    .await;
    let dir = sqlite_tenant_files(&scratch.0).await.expect("tenants");
    let contracts = ContractSet::<Sqlite>::new().with::<Event>();
    let run = remediate(&dir, &contracts, Remediation::SafeOnly)
        .run()
        .await
        .expect("remediate");
    assert!(run.failed.is_empty(), "{:?}", run.failed);
    assert!(run.audits.is_empty(), "{:?}", run.audits);
    let plan = run.plans.first().expect("a plan");
    assert!(plan.steps.is_empty(), "{plan}");
    assert!(
        plan.refusals
            .iter()
            .any(|r| r.reason.contains("is a view") && r.column.as_deref() == Some("note")),
        "{plan}"
    );
    for (pool, _) in dir.groups() {
        pool.close().await;
    }
}
