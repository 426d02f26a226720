//! MySQL/MariaDB fleet drift: one database per tenant, drift injected in two tenants, the
//! guard reports exactly the injected findings; hostile database names are rejected
//! before any SQL is built from them.

use contract_sqlx::{
    Contract, Error, TenantDirectory, Tenants,
    check::ContractSet,
    check_fleet,
    report::{DriftKind, Severity, Verdict},
};

use crate::support;

use support::exec;

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "events")]
#[allow(dead_code)]
struct Event {
    #[contract(primary_key)]
    id: i64,
    user_id: i32,
    kind: String,
    payload: Option<sqlx::types::Json<serde_json::Value>>,
    created_at: chrono::DateTime<chrono::Utc>,
}

const HEALTHY: &str = "CREATE TABLE events (id BIGINT PRIMARY KEY, user_id INT NOT NULL, kind VARCHAR(32) NOT NULL, \
                       payload JSON, created_at DATETIME NOT NULL, extra TEXT)";

#[tokio::test]
async fn mysql_fleet_reports_exactly_the_injected_drift() {
    let pool = support::mysql_pool().await;
    let prefix = support::unique_name("ct_my");
    let names: Vec<String> = (1..=5).map(|i| format!("{prefix}_t{i}")).collect();
    let _cleanup = support::MySqlDatabases(names.clone());
    for (i, name) in names.iter().enumerate() {
        exec(&pool, format!("CREATE DATABASE `{name}`")).await;
        let ddl = match i + 1 {
            // Missing column, and an incompatible type (VARBINARY where String is read).
            2 => {
                "CREATE TABLE events (id BIGINT PRIMARY KEY, user_id INT NOT NULL, kind VARBINARY(32) NOT NULL, \
                  payload JSON)"
            }
            // Integer width: the i32 field on a BIGINT column.
            4 => {
                "CREATE TABLE events (id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, kind VARCHAR(32) NOT NULL, \
                  payload JSON, created_at DATETIME NOT NULL)"
            }
            _ => HEALTHY,
        };
        exec(
            &pool,
            format!(
                "CREATE TABLE `{name}`.{}",
                ddl.trim_start_matches("CREATE TABLE ")
            ),
        )
        .await;
    }
    // A table with none of the contracted columns is drift per column, not a missing table.
    let directory = TenantDirectory::new()
        .discover(&pool, &Tenants::schemas_like(format!("{prefix}\\_t%")))
        .await
        .expect("discover");
    assert_eq!(directory.tenants().len(), 5);
    let contracts = ContractSet::<sqlx::MySql>::new().with::<Event>();
    let report = check_fleet(&directory, &contracts)
        .await
        .expect("fleet check");
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    for tenant in [&names[0], &names[2], &names[4]] {
        assert_eq!(
            support::findings(&report, tenant),
            [],
            "{tenant} should be compliant"
        );
        let verdict = &report
            .tenants
            .iter()
            .find(|t| &t.tenant == tenant)
            .unwrap()
            .verdict;
        assert!(
            matches!(verdict, Verdict::Compliant),
            "{tenant}: {verdict:?}"
        );
    }
    assert_eq!(
        support::findings(&report, &names[1]),
        [
            (
                Some("kind".into()),
                DriftKind::TypeMismatch,
                Severity::Breaks
            ),
            (
                Some("created_at".into()),
                DriftKind::MissingColumn,
                Severity::Breaks
            ),
        ]
    );
    assert_eq!(
        support::findings(&report, &names[3]),
        [(Some("user_id".into()), DriftKind::Width, Severity::AtRisk)]
    );

    // The decode agrees: tenant 2 breaks on `kind`, tenant 4 on a wide value only.
    exec(
        &pool,
        format!(
            "INSERT INTO `{}`.events (id, user_id, kind) VALUES (1, 1, 'click')",
            names[1]
        ),
    )
    .await;
    let read = sqlx::query_as::<_, (String,)>(sqlx::AssertSqlSafe(format!(
        "SELECT kind FROM `{}`.events",
        names[1]
    )))
    .fetch_all(&pool)
    .await;
    assert!(
        matches!(&read, Err(sqlx::Error::ColumnDecode { .. }))
            && read
                .as_ref()
                .err()
                .is_some_and(|e| e.to_string().contains("mismatched types")),
        "{read:?}"
    );
    exec(
        &pool,
        format!(
            "INSERT INTO `{}`.events (id, user_id, kind, created_at) \
             VALUES (1, 9999999999, 'a', NOW())",
            names[3]
        ),
    )
    .await;
    let read = sqlx::query_as::<_, (i32,)>(sqlx::AssertSqlSafe(format!(
        "SELECT user_id FROM `{}`.events",
        names[3]
    )))
    .fetch_all(&pool)
    .await;
    assert!(
        matches!(&read, Err(sqlx::Error::ColumnDecode { .. }))
            && read
                .as_ref()
                .err()
                .is_some_and(|e| e.to_string().contains("out of range")),
        "{read:?}"
    );
}

#[tokio::test]
async fn mysql_table_without_contracted_columns_is_not_missing() {
    let pool = support::mysql_pool().await;
    let name = support::unique_name("ct_my_empty");
    let _cleanup = support::MySqlDatabases(vec![name.clone()]);
    exec(&pool, format!("CREATE DATABASE `{name}`")).await;
    exec(&pool, format!("CREATE TABLE `{name}`.events (other INT)")).await;
    let directory = TenantDirectory::new()
        .discover(&pool, &Tenants::list([name.as_str()]))
        .await
        .expect("discover");
    let report = check_fleet(
        &directory,
        &ContractSet::<sqlx::MySql>::new().with::<Event>(),
    )
    .await
    .expect("check");
    let kinds: Vec<DriftKind> = report.tenants[0].findings.iter().map(|f| f.kind).collect();
    assert!(!kinds.contains(&DriftKind::MissingTable), "{kinds:?}");
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == DriftKind::MissingColumn)
            .count(),
        5,
        "{kinds:?}"
    );
}

#[tokio::test]
async fn mysql_hostile_database_names_are_rejected_without_sql() {
    let pool = support::mysql_pool().await;
    // An explicit list with a hostile name fails as a whole, before any query.
    let error = TenantDirectory::new()
        .discover(
            &pool,
            &Tenants::list(["tenant_1", "x`; DROP DATABASE test; --"]),
        )
        .await
        .expect_err("hostile name");
    assert!(matches!(error, Error::Ident(_)), "{error}");

    // A discovered hostile name is recorded as rejected and reported, never queried.
    let prefix = support::unique_name("ct_my_hostile");
    let hostile = format!("{prefix}_x`; DROP TABLE t; --");
    let good = format!("{prefix}_ok");
    let _cleanup = support::MySqlDatabases(vec![hostile.clone(), good.clone()]);
    exec(
        &pool,
        format!("CREATE DATABASE `{}`", hostile.replace('`', "``")),
    )
    .await;
    exec(&pool, format!("CREATE DATABASE `{good}`")).await;
    let directory = TenantDirectory::new()
        .discover(&pool, &Tenants::schemas_like(format!("{prefix}%")))
        .await
        .expect("discover");
    assert_eq!(
        directory
            .tenants()
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>(),
        [good.as_str()]
    );
    assert_eq!(directory.rejected().len(), 1);
    assert!(directory.rejected()[0].0.contains("DROP TABLE"));
}
