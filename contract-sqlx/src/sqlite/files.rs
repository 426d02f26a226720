//! A tenant directory made of SQLite files: one database file per tenant.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use contract_core::TenantName;
use futures_util::future::BoxFuture;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Sqlite, SqlitePool};

use super::budget::{ConnectionBudget, Fleet};
use crate::error::{Error, Result};
use crate::tenants::{Listing, Source, TenantDirectory};

/// File extensions recognised as SQLite databases.
const EXTENSIONS: [&str; 3] = ["db", "sqlite", "sqlite3"];

/// Opens every SQLite database file of `dir` (`*.db`, `*.sqlite`, `*.sqlite3`) as one
/// tenant, named after the file stem, each with its own lazily connecting pool (at most 2
/// connections per file), within the default [`ConnectionBudget`] for the whole directory.
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
        ConnectionBudget::default(),
    )
    .await
}

/// [`sqlite_tenant_files`] with the pool and connection options of each tenant (the
/// file name is set per tenant; `create_if_missing` is forced off) and the connection
/// budget of the whole directory.
///
/// Each SQLite connection is a thread and an open file, so a directory of files must not
/// keep a pool's worth of connections open in every file: `budget` bounds the connections
/// the pools keep open together. A connection released while the directory is over budget
/// goes back to its pool only after idle connections of the files used least recently
/// are closed to make room; when none is idle, it is closed itself. Connections in use
/// are never closed or waited for, so batches on the same pools are never cut or
/// blocked: at rest the directory holds at most `budget` connections, under load that
/// plus the connections in use (each pool still caps its own with `max_connections`).
/// Choose it from the files in use at once: the guard uses one file at a time, and a batch
/// worker one per batch; files beyond the budget reopen their file when used (cheap
/// compared with a network connection).
///
/// `pool` applies to every file's pool, with its `after_connect` and `before_acquire`
/// hooks (for example [`SchemaEpoch::install`](crate::SchemaEpoch::install)) kept; its
/// `after_release` hook is replaced by the budget's, and `min_connections` is set to 0 (a
/// minimum per file would hold connections open in every file).
///
/// ```no_run
/// # async fn run() -> contract_sqlx::Result<()> {
/// use contract_sqlx::tenants::{ConnectionBudget, sqlite_tenant_files_with};
/// use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
///
/// // Up to 64 connections open across every file of the directory.
/// let tenants = sqlite_tenant_files_with(
///     "./tenants",
///     SqlitePoolOptions::new().max_connections(2),
///     SqliteConnectOptions::new(),
///     ConnectionBudget::new(64),
/// )
/// .await?;
/// # let _ = tenants; Ok(()) }
/// ```
///
/// # Errors
///
/// As [`sqlite_tenant_files`].
pub async fn sqlite_tenant_files_with(
    dir: impl AsRef<Path>,
    pool: SqlitePoolOptions,
    connect: SqliteConnectOptions,
    budget: ConnectionBudget,
) -> Result<TenantDirectory<Sqlite>> {
    let files = Arc::new(SqliteFiles {
        dir: dir.as_ref().to_owned(),
        pool,
        connect,
        fleet: Fleet::new(budget),
        open: Mutex::new(BTreeMap::new()),
    });
    let listing = files.list().await?;
    if listing.groups.is_empty() && listing.rejected.is_empty() {
        return Err(Error::NoTenants {
            source_description: files.describe(),
        });
    }
    Ok(TenantDirectory::new().with_source(files, listing))
}

/// A directory of tenant files, listed again on every refresh: a new file gets its pool
/// (within the same budget), a removed file's pool is closed.
#[derive(Debug)]
struct SqliteFiles {
    dir: PathBuf,
    pool: SqlitePoolOptions,
    connect: SqliteConnectOptions,
    /// The budget's state; the pools' hooks hold it weakly, this source keeps it alive.
    fleet: Arc<Fleet>,
    /// The pool of each file listed so far.
    open: Mutex<BTreeMap<PathBuf, SqlitePool>>,
}

impl SqliteFiles {
    /// The database files of the directory, sorted.
    fn files(&self) -> Result<Vec<PathBuf>> {
        let unreadable = |source| Error::TenantDirectory {
            path: self.dir.display().to_string(),
            source,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(unreadable)? {
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
        Ok(files)
    }
}

impl Source<Sqlite> for SqliteFiles {
    fn list(&self) -> BoxFuture<'_, Result<Listing<Sqlite>>> {
        Box::pin(async move {
            let files = self.files()?;
            let mut listing = Listing {
                groups: Vec::new(),
                rejected: Vec::new(),
            };
            let closed: Vec<SqlitePool> = {
                let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
                for path in &files {
                    let stem = path
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    match TenantName::new(stem.as_str()) {
                        Ok(tenant) => {
                            let pool = open.entry(path.clone()).or_insert_with(|| {
                                let options =
                                    self.connect.clone().filename(path).create_if_missing(false);
                                self.fleet.add_pool(self.pool.clone(), options)
                            });
                            listing.groups.push((pool.clone(), vec![tenant]));
                        }
                        Err(error) => listing
                            .rejected
                            .push((stem.escape_debug().to_string(), error)),
                    }
                }
                let gone: Vec<PathBuf> = open
                    .keys()
                    .filter(|p| !files.contains(p))
                    .cloned()
                    .collect();
                gone.iter().filter_map(|p| open.remove(p)).collect()
            };
            // Closed in the background: a pool's close waits for every connection to come
            // back, and a consumer may hold one for as long as its batch takes. The pool
            // takes no new one from now on.
            for pool in closed {
                tokio::spawn(async move { pool.close().await });
            }
            Ok(listing)
        })
    }

    fn describe(&self) -> String {
        format!("SQLite files in `{}`", self.dir.display())
    }
}
