//! Shared helpers for the integration tests: real servers, unique scratch names, clean-up.
//!
//! A server that is unreachable is a loud failure that names the variable to set; tests
//! never skip silently.
#![allow(dead_code)]

pub mod conformance;
pub mod faults;
pub mod proxy;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Default PostgreSQL URL on the development machines (trust auth).
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Default MariaDB URL on the development machines (root, empty password).
pub const DEFAULT_MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/test";

/// `CONTRACT_TEST_PG_URL`, or the local default.
pub fn pg_url() -> String {
    std::env::var("CONTRACT_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned())
}

/// `CONTRACT_TEST_MYSQL_URL`, or the local default.
pub fn mysql_url() -> String {
    std::env::var("CONTRACT_TEST_MYSQL_URL").unwrap_or_else(|_| DEFAULT_MYSQL_URL.to_owned())
}

/// A name no other test (or earlier run) uses: `prefix_<pid>_<nanos>_<counter>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Connects to the test PostgreSQL server, panicking with the variable to set.
pub async fn pg_pool() -> sqlx::PgPool {
    let url = pg_url();
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL is unreachable at {url}: {e}. Start it or set CONTRACT_TEST_PG_URL to a reachable server")
        })
}

/// Connects to the test MySQL/MariaDB server, panicking with the variable to set.
pub async fn mysql_pool() -> sqlx::MySqlPool {
    let url = mysql_url();
    sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .unwrap_or_else(|e| {
            panic!("MySQL/MariaDB is unreachable at {url}: {e}. Start it or set CONTRACT_TEST_MYSQL_URL to a reachable server")
        })
}

/// Runs async clean-up from `Drop`: on a thread of its own with its own runtime, since
/// `Drop` cannot await and the test's runtime may be unwinding after a failed assertion.
pub fn clean_up_blocking<F, Fut>(work: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let _ = std::thread::spawn(move || {
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            runtime.block_on(work());
        }
    })
    .join();
}

/// MySQL databases dropped when this guard goes out of scope, even after a failed assertion.
pub struct MySqlDatabases(pub Vec<String>);

impl Drop for MySqlDatabases {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.0);
        if names.is_empty() {
            return;
        }
        clean_up_blocking(move || async move {
            use sqlx::Connection as _;
            if let Ok(mut conn) = sqlx::MySqlConnection::connect(&mysql_url()).await {
                // A failed test may leave a transaction open on a connection its stalled
                // runtime never rolls back: the drop then waits for that table's metadata
                // lock, by default for a year. Bounded, the test fails instead of hanging.
                let _ = sqlx::raw_sql("SET SESSION lock_wait_timeout = 30")
                    .execute(&mut conn)
                    .await;
                for name in names {
                    let drop = format!("DROP DATABASE IF EXISTS `{}`", name.replace('`', "``"));
                    if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
                        .execute(&mut conn)
                        .await
                    {
                        eprintln!("test clean-up: database {name} left behind: {e}");
                    }
                }
            }
        });
    }
}

/// Creates the PostgreSQL schemas and returns a guard that drops them (CASCADE): now with
/// [`PgSchemas::drop_all`], or on drop when a failed assertion skipped that call.
pub struct PgSchemas {
    pool: sqlx::PgPool,
    /// The schemas, in creation order.
    pub names: Vec<String>,
}

impl PgSchemas {
    /// Creates every schema in `names`; the ones made so far are dropped if one fails.
    pub async fn create(pool: &sqlx::PgPool, names: Vec<String>) -> Self {
        // The guard exists before the first CREATE: a failure part way drops those made.
        let mut guard = Self {
            pool: pool.clone(),
            names: Vec::with_capacity(names.len()),
        };
        for name in names {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{name}\"")))
                .execute(pool)
                .await
                .unwrap_or_else(|e| panic!("create schema {name}: {e}"));
            guard.names.push(name);
        }
        guard
    }

    /// Drops the schemas now (prefer this to relying on Drop in async tests).
    pub async fn drop_all(mut self) {
        for name in std::mem::take(&mut self.names) {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
            )))
            .execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("drop schema {name}: {e}"));
        }
    }
}

impl Drop for PgSchemas {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.names);
        if names.is_empty() {
            return;
        }
        clean_up_blocking(move || async move {
            use sqlx::Connection as _;
            if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_url()).await {
                for name in names {
                    let drop = format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
                        .execute(&mut conn)
                        .await;
                }
            }
        });
    }
}

/// A scratch PostgreSQL database with a unique name, dropped by [`PgScratch::drop_db`].
pub struct PgScratch {
    admin: sqlx::PgPool,
    /// The database's unique name.
    pub name: String,
    /// A pool connected to the database.
    pub pool: sqlx::PgPool,
    /// The URL of the database, for code that connects by itself.
    pub url: String,
    /// Drops the database when a failed assertion skipped `drop_db`.
    guard: PgDatabaseGuard,
}

impl PgScratch {
    /// Creates the database and connects a pool to it.
    pub async fn create(prefix: &str) -> Self {
        Self::create_with(prefix, None).await
    }

    /// Creates the database as a copy of `template` (whose pool must be closed: PostgreSQL
    /// copies a database nobody is connected to) and connects a pool to it.
    pub async fn copy_of(prefix: &str, template: &PgScratch) -> Self {
        Self::create_with(prefix, Some(&template.name)).await
    }

    async fn create_with(prefix: &str, template: Option<&str>) -> Self {
        let name = unique_name(prefix);
        // Checked before anything is created, so a bad URL leaves nothing behind.
        let base = pg_url();
        let url = match base.rfind('/') {
            Some(i) if base[..i].contains("://") && !base[i..].contains('@') => {
                format!("{}/{name}", &base[..i])
            }
            _ => panic!("CONTRACT_TEST_PG_URL must end with /<database>: {base}"),
        };
        let admin = pg_pool().await;
        let template = template.map_or_else(String::new, |t| format!(" TEMPLATE \"{t}\""));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE \"{name}\"{template}"
        )))
        .execute(&admin)
        .await
        .unwrap_or_else(|e| panic!("create database {name}: {e}"));
        // From here on a panic (a failed connect included) drops the database.
        let guard = PgDatabaseGuard {
            name: name.clone(),
            armed: true,
        };
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("connect to scratch database {name}: {e}"));
        Self {
            admin,
            name,
            pool,
            url,
            guard,
        }
    }

    /// Closes the pool and drops the database (if that fails, `Drop` tries again).
    pub async fn drop_db(mut self) {
        self.pool.close().await;
        let dropped = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        )))
        .execute(&self.admin)
        .await;
        self.guard.armed = dropped.is_err();
    }
}

/// Drops a scratch database on drop unless disarmed: a test that panics before
/// `drop_db` (or a `PgScratch::create` that fails after the CREATE) leaves nothing behind.
struct PgDatabaseGuard {
    name: String,
    armed: bool,
}

impl Drop for PgDatabaseGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let name = std::mem::take(&mut self.name);
        clean_up_blocking(move || async move {
            use sqlx::Connection as _;
            if let Ok(mut admin) = sqlx::PgConnection::connect(&pg_url()).await {
                let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
                    .execute(&mut admin)
                    .await;
            }
        });
    }
}

/// A scratch directory under the system temp dir, with a unique name, removed on drop
/// (even when the test panics): its path, and the `tempfile` guard that owns it.
pub struct TempDir(
    pub std::path::PathBuf,
    #[allow(dead_code)] tempfile::TempDir,
);

impl TempDir {
    /// Creates `<temp>/<prefix>_<random>`.
    pub fn new(prefix: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}_"))
            .tempdir()
            .unwrap_or_else(|e| panic!("scratch dir {prefix}: {e}"));
        Self(dir.path().to_owned(), dir)
    }
}

/// `(column, kind, severity)` of every finding of `tenant` in a fleet report.
pub fn findings(
    report: &contract_sqlx::FleetReport,
    tenant: &str,
) -> Vec<(
    Option<String>,
    contract_sqlx::report::DriftKind,
    contract_sqlx::report::Severity,
)> {
    let t = report
        .tenants
        .iter()
        .find(|t| t.tenant == tenant)
        .unwrap_or_else(|| panic!("no report for {tenant}"));
    t.findings
        .iter()
        .map(|f| (f.column.clone(), f.kind, f.severity))
        .collect()
}

/// Runs `sql` (one or more statements) on `executor` (a pool, or one connection: `&mut
/// *conn`), panicking with the SQL and the error.
pub async fn exec<'e, E: sqlx::Executor<'e>>(executor: E, sql: impl AsRef<str>) {
    let sql = sql.as_ref();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(executor)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The tenant schemas `tenant_%` of `pool`'s database.
pub async fn pg_tenant_directory(
    pool: &sqlx::PgPool,
) -> contract_sqlx::TenantDirectory<sqlx::Postgres> {
    contract_sqlx::TenantDirectory::new()
        .discover(pool, &contract_sqlx::Tenants::schemas_like("tenant_%"))
        .await
        .expect("discover")
}
