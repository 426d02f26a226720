//! Quickstart: three tenants as SQLite files, two of them drifted, checked by the guard.
//!
//! `cargo run --example quickstart` — no server, no configuration.

use contract_sqlx::{Contract, ContractSet, check_fleet, sqlite_tenant_files};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

/// The consumer's row type: the same struct it decodes with `sqlx::FromRow`.
#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "events")]
#[allow(dead_code)]
struct Event {
    #[contract(primary_key)]
    id: i64,
    user_id: i64,
    event_data: sqlx::types::Json<serde_json::Value>,
    #[contract(default = "'{}'")]
    event_metadata: Option<sqlx::types::Json<serde_json::Value>>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("contract-quickstart-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let tenants = [
        ("tenant_1", ""),
        ("tenant_2", "ALTER TABLE events DROP COLUMN event_metadata;"),
        (
            "tenant_3",
            "DROP TABLE events; CREATE TABLE events (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL, event_data JSON NOT NULL, event_metadata JSON);",
        ),
    ];
    for (name, drift) in tenants {
        let options = SqliteConnectOptions::new()
            .filename(dir.join(format!("{name}.db")))
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        let ddl = format!(
            "CREATE TABLE events (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, event_data JSON NOT NULL, event_metadata JSON); {drift}"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
            .execute(&pool)
            .await?;
        pool.close().await;
    }

    println!(
        "contract of Event:\n{}\n",
        serde_json::to_string_pretty(&<Event as contract_sqlx::Contract>::contract())?
    );
    let directory = sqlite_tenant_files(&dir).await?;
    let report = check_fleet(&directory, &ContractSet::new().with::<Event>()).await?;
    println!("{report}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
