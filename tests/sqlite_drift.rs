//! SQLite fleet drift: one database file per tenant, drift injected in two tenants, the
//! guard reports exactly the injected findings; hostile file names are never opened.

use std::path::Path;

use contract_sqlx::{
    Contract,
    check::ContractSet,
    check_fleet,
    report::{DriftKind, Severity, Verdict},
    sqlite_tenant_files,
};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::support;

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "events")]
#[allow(dead_code)]
struct Event {
    #[contract(primary_key)]
    id: i64,
    user_id: i64,
    kind: String,
    score: f64,
    payload: Option<sqlx::types::Json<serde_json::Value>>,
}

const HEALTHY: &str = "CREATE TABLE events (id INTEGER PRIMARY KEY, user_id BIGINT NOT NULL, kind TEXT NOT NULL, \
                       score REAL NOT NULL, payload JSON, extra BLOB)";

async fn create_tenant(dir: &Path, file: &str, ddl: &str) {
    let options = SqliteConnectOptions::new()
        .filename(dir.join(file))
        .create_if_missing(true);
    let mut conn = options
        .connect()
        .await
        .unwrap_or_else(|e| panic!("create {file}: {e}"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(ddl.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{ddl}: {e}"));
    conn.close().await.unwrap();
}

#[tokio::test]
async fn sqlite_fleet_reports_exactly_the_injected_drift() {
    let scratch = support::TempDir::new("contract_sqlite_drift");
    for i in 1..=5 {
        let ddl = match i {
            // Missing column and an incompatible type (TEXT where f64 is read).
            2 => {
                "CREATE TABLE events (id INTEGER PRIMARY KEY, user_id BIGINT NOT NULL, score TEXT NOT NULL, payload JSON)"
            }
            // A nullable column read into a non-Option field (NULL decodes silently as 0).
            4 => {
                "CREATE TABLE events (id INTEGER PRIMARY KEY, user_id BIGINT, kind TEXT NOT NULL, score REAL NOT NULL, payload JSON)"
            }
            _ => HEALTHY,
        };
        create_tenant(&scratch.0, &format!("tenant_{i}.db"), ddl).await;
    }
    // Hostile and invalid file stems: never opened, reported as rejected.
    std::fs::write(scratch.0.join("x'; DROP TABLE events; --.db"), b"").unwrap();
    std::fs::write(scratch.0.join("9lives.sqlite"), b"").unwrap();
    std::fs::write(scratch.0.join("notes.txt"), b"not a database").unwrap();

    let directory = sqlite_tenant_files(&scratch.0)
        .await
        .expect("tenant directory");
    assert_eq!(directory.tenants().len(), 5);
    let mut rejected: Vec<&str> = directory
        .rejected()
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    rejected.sort_unstable();
    assert_eq!(rejected, ["9lives", "x\\'; DROP TABLE events; --"]);

    let contracts = ContractSet::<sqlx::Sqlite>::new().with::<Event>();
    let report = check_fleet(&directory, &contracts).await.expect("check");
    println!("{}", serde_json::to_string_pretty(&report).unwrap());

    for tenant in ["tenant_1", "tenant_3", "tenant_5"] {
        assert_eq!(
            support::findings(&report, tenant),
            [],
            "{tenant} should be compliant"
        );
        let verdict = &report
            .tenants
            .iter()
            .find(|t| t.tenant == tenant)
            .unwrap()
            .verdict;
        assert!(
            matches!(verdict, Verdict::Compliant),
            "{tenant}: {verdict:?}"
        );
    }
    assert_eq!(
        support::findings(&report, "tenant_2"),
        [
            (
                Some("kind".into()),
                DriftKind::MissingColumn,
                Severity::Breaks
            ),
            (
                Some("score".into()),
                DriftKind::TypeMismatch,
                Severity::Breaks
            ),
        ]
    );
    assert_eq!(
        support::findings(&report, "tenant_4"),
        [(
            Some("user_id".into()),
            DriftKind::Nullability,
            Severity::AtRisk
        )]
    );
    // The rejected names are reported, unreachable, with the reason; nothing was queried.
    let rejected_reports: Vec<_> = report
        .tenants
        .iter()
        .filter(|t| matches!(t.verdict, Verdict::Unreachable { .. }))
        .map(|t| t.tenant.as_str())
        .collect();
    assert_eq!(rejected_reports.len(), 2, "{rejected_reports:?}");

    // The decode really agrees: tenant_2's score column breaks, the healthy ones read.
    for (tenant, ok) in [("tenant_1", true), ("tenant_2", false)] {
        let pool = directory.pool_of(tenant).unwrap();
        if tenant == "tenant_1" {
            sqlx::query("INSERT INTO events (id, user_id, kind, score, payload) VALUES (1, 7, 'click', 0.5, '{\"a\":1}')")
                .execute(pool)
                .await
                .unwrap();
        } else {
            sqlx::query("INSERT INTO events (id, user_id, score) VALUES (1, 7, 'high')")
                .execute(pool)
                .await
                .unwrap();
        }
        let read = sqlx::query_as::<_, (i64, f64)>("SELECT id, score FROM events")
            .fetch_all(pool)
            .await;
        assert_eq!(read.is_ok(), ok, "{tenant}: {read:?}");
    }
    for (pool, _) in directory.groups() {
        pool.close().await;
    }
}

/// `INTEGER PRIMARY KEY DESC` is no rowid alias (a documented SQLite quirk): it holds NULL
/// when an insert leaves it out, so a non-Option field on it is a nullability finding. It
/// was taken for the rowid, called NOT NULL, and the tenant compliant (helper-68). The
/// same key declared as a table constraint, `PRIMARY KEY (id DESC)`, is the rowid.
#[tokio::test]
async fn an_integer_primary_key_desc_is_no_rowid_and_may_hold_null() {
    let scratch = support::TempDir::new("contract_sqlite_pk_desc");
    let rest = "user_id BIGINT NOT NULL, kind TEXT NOT NULL, score REAL NOT NULL, payload JSON";
    create_tenant(
        &scratch.0,
        "tenant_1.db",
        &format!("CREATE TABLE events (id INTEGER PRIMARY KEY DESC, {rest})"),
    )
    .await;
    create_tenant(
        &scratch.0,
        "tenant_2.db",
        &format!("CREATE TABLE events (id INTEGER, {rest}, PRIMARY KEY (id DESC))"),
    )
    .await;
    let directory = sqlite_tenant_files(&scratch.0)
        .await
        .expect("tenant directory");
    let contracts = ContractSet::<sqlx::Sqlite>::new().with::<Event>();
    let report = check_fleet(&directory, &contracts).await.expect("check");
    assert_eq!(
        support::findings(&report, "tenant_1"),
        [(Some("id".into()), DriftKind::Nullability, Severity::AtRisk)]
    );
    assert_eq!(support::findings(&report, "tenant_2"), []);
    // What the finding is about: the DESC key holds NULL, the rowid alias a number.
    for (tenant, null) in [("tenant_1", true), ("tenant_2", false)] {
        let pool = directory.pool_of(tenant).expect("pool");
        sqlx::query("INSERT INTO events (user_id, kind, score) VALUES (7, 'click', 0.5)")
            .execute(pool)
            .await
            .expect("insert");
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM events")
            .fetch_one(pool)
            .await
            .expect("read");
        assert_eq!(id.is_none(), null, "{tenant}: {id:?}");
    }
    for (pool, _) in directory.groups() {
        pool.close().await;
    }
}

/// A tenant file removed while a consumer holds a connection to it: listing the files
/// again returns at once with the tenant removed. It waited for the pool to close, which
/// waits for every connection to come back (helper-68): the guard's pass, and the tenants
/// added meanwhile, waited for the consumer.
#[tokio::test]
async fn a_removed_tenant_file_is_dropped_without_waiting_for_its_connections() {
    let scratch = support::TempDir::new("contract_sqlite_removed");
    for tenant in ["tenant_1", "tenant_2"] {
        create_tenant(&scratch.0, &format!("{tenant}.db"), HEALTHY).await;
    }
    let directory = sqlite_tenant_files(&scratch.0)
        .await
        .expect("tenant directory");
    let held = directory
        .pool_of("tenant_1")
        .expect("pool")
        .acquire()
        .await
        .expect("a consumer's connection");
    std::fs::remove_file(scratch.0.join("tenant_1.db")).expect("remove");
    let refreshed = tokio::time::timeout(std::time::Duration::from_secs(10), directory.refresh())
        .await
        .expect("the listing waited for the held connection");
    let (next, change) = refreshed;
    let removed: Vec<&str> = change.removed.iter().map(|t| t.as_str()).collect();
    assert_eq!(removed, ["tenant_1"]);
    drop(held);
    for (pool, _) in next.groups() {
        pool.close().await;
    }
}

#[tokio::test]
async fn sqlite_tenant_files_fails_loudly_on_a_missing_directory() {
    let missing = std::env::temp_dir().join(support::unique_name("contract_sqlite_missing"));
    let error = sqlite_tenant_files(&missing)
        .await
        .expect_err("missing directory");
    assert!(
        error.to_string().contains("cannot read tenant directory"),
        "{error}"
    );
}
