//! SQLite resolves table and column names ASCII-case-insensitively: a table created as
//! `Events` is the one `FROM events` reads, and a column `User_Id` is the column `user_id`
//! (adding `user_id` fails). The check, the planner, the table rebuild and the re-check
//! under the lock compare names the same way.
//!
//! A column's spelling still matters to decoding: SQLite names a result column as declared
//! (`SELECT user_id` returns a column named `User_Id`) and sqlx's `FromRow` finds columns
//! by exact name, so such a column is reported (and renamed on approval), never added.

use crate::support;

use std::path::Path;

use contract_sqlx::plan::{Hazard, Remediation};
use contract_sqlx::report::{DriftKind, Severity};
use contract_sqlx::{Contract, Guard, check::ContractSet, check_fleet, remediate};
use contract_sqlx::{TenantDirectory, sqlite_tenant_files};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{ConnectOptions, Connection, Sqlite, SqliteConnection};

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "events")]
#[allow(dead_code)]
struct Event {
    #[contract(primary_key)]
    id: i64,
    user_id: i64,
    score: f64,
}

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

/// What the consumer's batch query reads, with `FromRow`.
async fn consume(dir: &Path, tenant: &str) -> Result<Vec<Event>, sqlx::Error> {
    let mut conn = open(dir, tenant).await;
    let rows = sqlx::query_as("SELECT id, user_id, score FROM events ORDER BY id")
        .fetch_all(&mut conn)
        .await;
    conn.close().await.expect("close");
    rows
}

/// `(type, name)` of the tables and indexes of `tenant` but the audit table.
async fn objects(dir: &Path, tenant: &str) -> Vec<(String, String)> {
    let mut conn = open(dir, tenant).await;
    let rows = sqlx::query_as(
        "SELECT type, name FROM sqlite_schema WHERE tbl_name <> 'contract_audit' ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .expect("sqlite_schema");
    conn.close().await.expect("close");
    rows
}

async fn plan_hash(dir: &TenantDirectory<Sqlite>, tenant: &str) -> String {
    let contracts = ContractSet::<Sqlite>::new().with::<Event>();
    let run = remediate(dir, &contracts, Remediation::DryRun)
        .run()
        .await
        .expect("dry run");
    let plan = run
        .plans
        .iter()
        .find(|p| p.tenant == tenant)
        .unwrap_or_else(|| panic!("{tenant} has no plan"));
    assert!(plan.refusals.is_empty(), "{tenant}: {:?}", plan.refusals);
    plan.hash.clone()
}

#[tokio::test]
async fn sqlite_names_are_compared_case_insensitively() {
    let scratch = support::TempDir::new("contract_sqlite_names");
    let dir = &scratch.0;
    // Healthy: only the table's spelling differs.
    create_tenant(
        dir,
        "tenant_1",
        "CREATE TABLE Events (id INTEGER PRIMARY KEY, user_id BIGINT NOT NULL, score REAL NOT NULL);
         INSERT INTO events VALUES (1, 7, 0.5)",
    )
    .await;
    // The column is there, spelled `User_Id`.
    create_tenant(
        dir,
        "tenant_2",
        "CREATE TABLE events (id INTEGER PRIMARY KEY, User_Id BIGINT NOT NULL, score REAL NOT NULL);
         INSERT INTO events VALUES (1, 7, 0.5)",
    )
    .await;
    // A type change on a table spelled `EVENTS`, with an index and a cascading child.
    create_tenant(
        dir,
        "tenant_3",
        "CREATE TABLE EVENTS (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL, score REAL NOT NULL);
         CREATE INDEX events_user ON EVENTS (user_id);
         CREATE TABLE children (id INTEGER PRIMARY KEY,
             event_id INTEGER NOT NULL REFERENCES Events (id) ON DELETE CASCADE);
         INSERT INTO events VALUES (1, '7', 0.5);
         INSERT INTO children VALUES (1, 1)",
    )
    .await;
    assert_eq!(
        consume(dir, "tenant_1")
            .await
            .expect("tenant_1 reads")
            .len(),
        1
    );
    let error = consume(dir, "tenant_2")
        .await
        .expect_err("rows name it User_Id");
    assert!(
        matches!(&error, sqlx::Error::ColumnNotFound(c) if c == "user_id"),
        "{error}"
    );

    let directory = sqlite_tenant_files(dir).await.expect("tenants");
    let contracts = ContractSet::<Sqlite>::new().with::<Event>();
    let report = check_fleet(&directory, &contracts).await.expect("check");
    assert_eq!(support::findings(&report, "tenant_1"), [], "{report}");
    assert_eq!(
        support::findings(&report, "tenant_2"),
        [(
            Some("user_id".into()),
            DriftKind::MissingColumn,
            Severity::Breaks
        )],
        "{report}"
    );
    let spelled = &report
        .tenants
        .iter()
        .find(|t| t.tenant == "tenant_2")
        .expect("t2")
        .findings[0];
    assert!(
        spelled
            .actual
            .starts_with("`User_Id` (only the case differs"),
        "{}",
        spelled.actual
    );
    assert_eq!(
        support::findings(&report, "tenant_3"),
        [(
            Some("user_id".into()),
            DriftKind::TypeMismatch,
            Severity::Breaks
        )],
        "{report}"
    );

    // SafeOnly never tries to create `events` or add `user_id`: both exist. What is left
    // waits for an approval instead of failing on every pass.
    let run = remediate(&directory, &contracts, Remediation::SafeOnly)
        .run()
        .await
        .expect("safe only");
    assert!(run.failed.is_empty(), "{:?}", run.failed);
    assert!(run.audits.is_empty(), "{:?}", run.audits);
    let mut waiting: Vec<&str> = run.awaiting_approval.keys().map(String::as_str).collect();
    waiting.sort_unstable();
    assert_eq!(waiting, ["tenant_2", "tenant_3"]);
    let rename = &run.awaiting_approval["tenant_2"];
    assert_eq!(
        rename.statements().collect::<Vec<_>>(),
        [r#"ALTER TABLE "events" RENAME COLUMN "User_Id" TO "user_id""#]
    );
    assert_eq!(rename.hazards(), [Hazard::RenamesColumn]);
    let control = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(dir.join("guard_control"))
                .create_if_missing(true),
        )
        .await
        .expect("control pool");
    let guard = Guard::<Sqlite>::builder()
        .contract::<Event>()
        .directory(directory.clone())
        .remediation(Remediation::SafeOnly)
        .in_memory_control()
        .start(&control)
        .await
        .expect("guard");
    assert!(guard.gate("tenant_1").is_open(), "tenant_1 is healthy");
    assert!(!guard.gate("tenant_2").is_open() && !guard.gate("tenant_3").is_open());
    drop(guard);
    control.close().await;

    // Approved: the rename, and the rebuild, which keeps the table's own name (the
    // re-check under the lock finds `EVENTS` as planned).
    for tenant in ["tenant_2", "tenant_3"] {
        let hash = plan_hash(&directory, tenant).await;
        let run = remediate(&directory, &contracts, Remediation::Approved(hash))
            .run()
            .await
            .expect("approved");
        assert!(run.failed.is_empty(), "{tenant}: {:?}", run.failed);
        assert_eq!(run.audits.len(), 1, "{tenant}: {:?}", run.audits);
    }
    let report = check_fleet(&directory, &contracts).await.expect("check");
    assert!(report.is_clean(), "{report}");
    for tenant in ["tenant_1", "tenant_2", "tenant_3"] {
        let rows = consume(dir, tenant)
            .await
            .unwrap_or_else(|e| panic!("{tenant}: {e}"));
        assert_eq!(
            rows.iter().map(|e| e.user_id).collect::<Vec<_>>(),
            [7],
            "{tenant}"
        );
    }
    assert_eq!(
        objects(dir, "tenant_3").await,
        [
            ("table".to_owned(), "EVENTS".to_owned()),
            ("table".to_owned(), "children".to_owned()),
            ("index".to_owned(), "events_user".to_owned()),
        ]
    );
    let mut conn = open(dir, "tenant_3").await;
    let children: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM children")
        .fetch_one(&mut conn)
        .await
        .expect("children");
    assert_eq!(children, 1, "the rebuild's DROP TABLE did not cascade");
    conn.close().await.expect("close");
}
