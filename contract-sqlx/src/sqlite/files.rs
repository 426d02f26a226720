//! A tenant directory made of SQLite files: one database file per tenant.

use std::path::Path;

use contract_core::TenantName;
use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

use crate::error::{Error, Result};
use crate::tenants::TenantDirectory;

/// File extensions recognised as SQLite databases.
const EXTENSIONS: [&str; 3] = ["db", "sqlite", "sqlite3"];

/// Opens every SQLite database file of `dir` (`*.db`, `*.sqlite`, `*.sqlite3`) as one
/// tenant, named after the file stem, each with its own lazily connecting pool.
///
/// A stem that is not a valid [`TenantName`] is never opened: it is recorded in
/// [`TenantDirectory::rejected`] and reported as unreachable with the reason, as
/// [`TenantDirectory::discover`] does. Files are never created.
///
/// ```no_run
/// # async fn run() -> contract_sqlx::Result<()> {
/// let tenants = contract_sqlx::sqlite_tenant_files("./tenants").await?;
/// for tenant in tenants.tenants() {
///     println!("{}", tenant.as_str());
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::TenantDirectory`] when `dir` cannot be read, [`Error::NoTenants`] when it
/// holds no database file.
pub async fn sqlite_tenant_files(dir: impl AsRef<Path>) -> Result<TenantDirectory<Sqlite>> {
    sqlite_tenant_files_with(
        dir,
        SqlitePoolOptions::new().max_connections(2),
        SqliteConnectOptions::new(),
    )
    .await
}

/// [`sqlite_tenant_files`] with the pool and connection options of each tenant (the
/// file name is set per tenant; `create_if_missing` is forced off).
///
/// # Errors
///
/// As [`sqlite_tenant_files`].
pub async fn sqlite_tenant_files_with(
    dir: impl AsRef<Path>,
    pool: SqlitePoolOptions,
    connect: SqliteConnectOptions,
) -> Result<TenantDirectory<Sqlite>> {
    let dir = dir.as_ref();
    let unreadable = |source| Error::TenantDirectory {
        path: dir.display().to_string(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let path = entry.map_err(unreadable)?.path();
        let is_db = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e));
        if is_db && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(Error::NoTenants {
            source_description: format!("SQLite files in `{}`", dir.display()),
        });
    }
    let mut directory = TenantDirectory::new();
    for path in files {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        match TenantName::new(stem.as_str()) {
            Ok(tenant) => {
                let options = connect.clone().filename(&path).create_if_missing(false);
                directory = directory.add(pool.clone().connect_lazy_with(options), vec![tenant]);
            }
            Err(error) => directory = directory.reject(&stem, error),
        }
    }
    Ok(directory)
}
