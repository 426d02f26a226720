//! MySQL/MariaDB column names are case-insensitive: a column `User_Id` is the column
//! `user_id` (adding `user_id` fails with a duplicate column name), so it is reported as
//! spelled differently and renamed on approval, never added. Rows read with `SELECT *`
//! name it `User_Id`, which sqlx's `FromRow` does not find. Table names stay exact: they
//! follow the server's `lower_case_table_names`.

use crate::support;

use support::exec;

use contract_sqlx::plan::{Hazard, Remediation};
use contract_sqlx::report::{DriftKind, Severity};
use contract_sqlx::{
    Contract, TenantDirectory, Tenants, check::ContractSet, check_fleet, remediate,
};
use sqlx::{MySql, MySqlPool};

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "events")]
#[allow(dead_code)]
struct Event {
    #[contract(primary_key)]
    id: i64,
    user_id: i64,
}

async fn consume(pool: &MySqlPool, db: &str) -> Result<Vec<Event>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT * FROM `{db}`.events")))
        .fetch_all(pool)
        .await
}

#[tokio::test]
async fn mysql_column_names_are_compared_case_insensitively() {
    let pool = support::mysql_pool().await;
    let prefix = support::unique_name("ct_names");
    let (spelled, table) = (format!("{prefix}_t1"), format!("{prefix}_t2"));
    let _cleanup = support::MySqlDatabases(vec![spelled.clone(), table.clone()]);
    for db in [&spelled, &table] {
        exec(&pool, format!("CREATE DATABASE `{db}`")).await;
    }
    exec(
        &pool,
        format!(
            "CREATE TABLE `{spelled}`.events (id BIGINT PRIMARY KEY, User_Id BIGINT NOT NULL);
             INSERT INTO `{spelled}`.events VALUES (1, 7)"
        ),
    )
    .await;
    exec(
        &pool,
        format!("CREATE TABLE `{table}`.Events (id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL)"),
    )
    .await;
    let folds_table_names: u64 = sqlx::query_scalar("SELECT @@lower_case_table_names")
        .fetch_one(&pool)
        .await
        .expect("lower_case_table_names");
    let error = consume(&pool, &spelled)
        .await
        .expect_err("rows name it User_Id");
    assert!(
        matches!(&error, sqlx::Error::ColumnNotFound(c) if c == "user_id"),
        "{error}"
    );

    let directory = TenantDirectory::<MySql>::new()
        .discover(&pool, &Tenants::list([&spelled, &table]))
        .await
        .expect("tenants");
    let contracts = ContractSet::<MySql>::new().with::<Event>();
    let report = check_fleet(&directory, &contracts).await.expect("check");
    assert_eq!(
        support::findings(&report, &spelled),
        [(
            Some("user_id".into()),
            DriftKind::MissingColumn,
            Severity::Breaks
        )],
        "{report}"
    );
    let finding = &report
        .tenants
        .iter()
        .find(|t| t.tenant == spelled)
        .expect("t1")
        .findings[0];
    assert!(
        finding
            .actual
            .starts_with("`User_Id` (only the case differs: `SELECT *` rows name it"),
        "{}",
        finding.actual
    );
    // `Events` is another table than `events` unless the server folds table names.
    let expected_t2 = if folds_table_names == 0 {
        vec![(None, DriftKind::MissingTable, Severity::Breaks)]
    } else {
        vec![]
    };
    assert_eq!(support::findings(&report, &table), expected_t2, "{report}");

    // SafeOnly never adds `user_id` (a duplicate column name): the rename waits.
    let run = remediate(&directory, &contracts, Remediation::SafeOnly)
        .run()
        .await
        .expect("safe only");
    assert!(run.failed.is_empty(), "{:?}", run.failed);
    let plan = run
        .awaiting_approval
        .get(&spelled)
        .expect("the rename waits");
    assert_eq!(
        plan.statements().collect::<Vec<_>>(),
        [format!(
            "ALTER TABLE `{spelled}`.`events` RENAME COLUMN `User_Id` TO `user_id`, ALGORITHM=INPLACE, LOCK=NONE"
        )]
    );
    assert_eq!(plan.hazards(), [Hazard::RenamesColumn]);
    let run = remediate(
        &directory,
        &contracts,
        Remediation::Approved(plan.hash.clone()),
    )
    .run()
    .await
    .expect("approved");
    assert!(run.failed.is_empty(), "{:?}", run.failed);
    assert!(run.after.is_clean(), "{}", run.after);
    let rows = consume(&pool, &spelled)
        .await
        .expect("decodes after the rename");
    assert_eq!(rows.iter().map(|e| e.user_id).collect::<Vec<_>>(), [7]);
}

/// Tenants whose names differ only in case are two tenants (database names are
/// case-sensitive on Linux): their operator pauses stay apart, also in a control plane an
/// earlier version created with the server's case-insensitive collation, which `ensure`
/// alters. A pause of `acme` updated the pause of `Acme`, and `acme` stayed open
/// (helper-67).
#[tokio::test]
async fn pauses_of_tenants_whose_names_differ_in_case_stay_apart() {
    use contract_sqlx::control::{ControlPlane, PauseRequest};

    let pool = support::mysql_pool().await;
    let control = support::unique_name("ctl_case");
    let _cleanup = support::MySqlDatabases(vec![control.clone()]);
    exec(&pool, format!("CREATE DATABASE `{control}`")).await;
    let plane = ControlPlane::default().with_schema(&control);
    plane.ensure(&pool).await.expect("control plane");
    // As an earlier version left it.
    exec(
        &pool,
        format!(
            "ALTER TABLE `{control}`.contract_pauses \
             MODIFY tenant VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NOT NULL, \
             MODIFY queue VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NOT NULL"
        ),
    )
    .await;
    plane.ensure(&pool).await.expect("control plane again");
    for tenant in ["Acme", "acme"] {
        plane
            .pause(&pool, PauseRequest::tenant(tenant).by("ops").reason(tenant))
            .await
            .expect("pause");
    }
    let pauses = plane.pauses(&pool).await.expect("pauses");
    let stored: Vec<(&str, &str)> = pauses
        .iter()
        .map(|p| (p.tenant.as_str(), p.reason.as_str()))
        .collect();
    assert_eq!(stored, [("Acme", "Acme"), ("acme", "acme")]);

    // Once so, a start alters nothing: it does not wait for a transaction that has read
    // the pauses (a backup's, an operator's), nor make every later read wait behind it
    // (helper-70: the ALTER ran at every start).
    // Under the ALTER's own 5 s lock wait, so that a wait cannot end in a warning first.
    let mut reader = pool.acquire().await.expect("connection");
    exec(
        &mut *reader,
        format!("BEGIN; SELECT COUNT(*) FROM `{control}`.contract_pauses"),
    )
    .await;
    tokio::time::timeout(std::time::Duration::from_secs(2), plane.ensure(&pool))
        .await
        .expect("ensure waited for the reader's metadata lock")
        .expect("ensure");
    exec(&mut *reader, "ROLLBACK").await;
}
