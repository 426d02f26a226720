//! The CLI on a SQLite fleet: the URL names the directory of tenant files, the control
//! plane is its `contract_control` file.

use contract_sqlx::plan::Remediation;
use contract_sqlx::{Guard, sqlite_tenant_files};
use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

use super::Event;
use crate::cli::{assert_readable, contract_async};
use crate::support::TempDir;

async fn tenant_file(dir: &std::path::Path, name: &str, user_id: &str) {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(dir.join(format!("{name}.db")))
                .create_if_missing(true),
        )
        .await
        .expect("tenant file");
    let ddl = format!(
        "CREATE TABLE events (id INTEGER PRIMARY KEY, user_id {user_id} NOT NULL); \
         INSERT INTO events (id, user_id) VALUES (1, 1)"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
        .execute(&pool)
        .await
        .expect("ddl");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_directory_status_plans_approve_pause_audit() {
    let scratch = TempDir::new("contract_cli_sqlite");
    let dir = scratch.0.clone();
    tenant_file(&dir, "tenant_001", "INTEGER").await;
    tenant_file(&dir, "tenant_002", "TEXT").await;
    let control = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(dir.join(contract_sqlx::cli::SQLITE_CONTROL_FILE))
                .create_if_missing(true),
        )
        .await
        .expect("control file");
    let guard = Guard::<Sqlite>::builder()
        .contract::<Event>()
        .directory(sqlite_tenant_files(&dir).await.expect("tenant files"))
        .remediation(Remediation::SafeOnly)
        .start(&control)
        .await
        .expect("guard");
    let url = format!("sqlite://{}", dir.display());
    let url = url.as_str();

    let status = contract_async(url, &["status", "--json"])
        .await
        .expect(0)
        .json();
    assert_eq!(
        status["tenants"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );
    let gate = contract_async(url, &["status", "--fail-on", "drift"])
        .await
        .expect(1);
    assert_readable(&gate);

    let plans = contract_async(url, &["plans", "--json"])
        .await
        .expect(0)
        .json();
    assert_eq!(plans["shapes"].as_array().map(Vec::len), Some(1), "{plans}");
    assert_eq!(plans["shapes"][0]["tenant_count"], 1);
    let shape = plans["shapes"][0]["shape"]
        .as_str()
        .expect("shape")
        .to_owned();
    assert_readable(&contract_async(url, &["plans"]).await.expect(0));

    contract_async(
        url,
        &["pause", "tenant_001", "--reason", "backup", "--by", "alice"],
    )
    .await
    .expect(0);
    guard.revalidate().await.expect("pass");
    assert!(
        !guard.gate("tenant_001").is_open(),
        "operator pause applied"
    );
    contract_async(url, &["resume", "tenant_001"])
        .await
        .expect(0);

    contract_async(url, &["approve", "--shape", &shape, "--by", "dora"])
        .await
        .expect(0);
    guard.revalidate().await.expect("pass");
    guard.revalidate().await.expect("pass");
    assert!(guard.gate("tenant_001").is_open() && guard.gate("tenant_002").is_open());
    contract_async(url, &["status", "--fail-on", "drift"])
        .await
        .expect(0);

    let audit = contract_async(url, &["audit", "--json"])
        .await
        .expect(0)
        .json();
    let entries = audit["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(
        (
            entries[0]["tenant"].as_str(),
            entries[0]["approved_by"].as_str()
        ),
        (Some("tenant_002"), Some("dora"))
    );
    assert_readable(&contract_async(url, &["audit"]).await.expect(0));
    let list = contract_async(url, &["quarantine", "list", "--json"])
        .await
        .expect(0)
        .json();
    assert_eq!(list["waiting"], 0);
    drop(guard);
    control.close().await;
}
