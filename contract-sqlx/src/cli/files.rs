//! A SQLite fleet's tenant files: where the control plane says each tenant lives, plus
//! the database files of the fleet's directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::connect::SqliteFleet;
use super::error::CliError;
use crate::control::ControlPlane;
use crate::error::Error;

/// File extensions of tenant databases (as [`crate::sqlite_tenant_files`] reads them).
const EXTENSIONS: [&str; 3] = ["db", "sqlite", "sqlite3"];

/// `tenant → file`, by tenant; only `tenant` when given.
pub(crate) async fn tenant_files(
    fleet: &SqliteFleet,
    plane: &ControlPlane,
    only: Option<&str>,
) -> Result<BTreeMap<String, PathBuf>, CliError> {
    let mut files = BTreeMap::new();
    if let Some(dir) = &fleet.dir {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            CliError::NotFound(format!(
                "cannot read the tenant directory {}: {e}",
                dir.display()
            ))
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            let is_db = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e));
            if let (true, Some(stem)) = (
                is_db && path.is_file(),
                path.file_stem().and_then(|s| s.to_str()),
            ) {
                files.insert(stem.to_owned(), path.clone());
            }
        }
    }
    for status in plane.tenants(&fleet.control).await? {
        let path = Path::new(&status.location);
        if !status.location.is_empty() && path.is_file() {
            files.insert(status.tenant, path.to_owned());
        }
    }
    if let Some(tenant) = only {
        files.retain(|name, _| name == tenant);
    }
    Ok(files)
}

/// A pool on one existing tenant file (never created).
pub(crate) async fn open(tenant: &str, path: &Path) -> Result<sqlx::SqlitePool, CliError> {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .busy_timeout(std::time::Duration::from_secs(5));
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .map_err(|e| CliError::from(Error::db("opening a tenant file", Some(tenant))(e)))
}
