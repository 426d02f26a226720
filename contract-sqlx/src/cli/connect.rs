//! From a database URL to the control plane's pool: which backend, where the SQLite files
//! are, a connect timeout so a wrong port fails in seconds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::CliError;

/// Where a SQLite fleet's control plane lives when the URL names the directory of tenant
/// files: `<dir>/contract_control`. It has no `.db`/`.sqlite`/`.sqlite3` extension, so
/// [`crate::sqlite_tenant_files`] never takes it for a tenant; start the guard with its
/// control pool on this file (`Guard::builder()…start(&control)`).
pub const SQLITE_CONTROL_FILE: &str = "contract_control";

/// The database URL and where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Url {
    pub text: String,
    pub variable: &'static str,
}

impl Url {
    /// `--database-url`, else `CONTRACT_DATABASE_URL`, else `DATABASE_URL`.
    pub fn resolve(flag: Option<&str>) -> Result<Self, CliError> {
        let found = flag
            .map(|u| (u.to_owned(), "--database-url"))
            .or_else(|| env("CONTRACT_DATABASE_URL").map(|u| (u, "CONTRACT_DATABASE_URL")))
            .or_else(|| env("DATABASE_URL").map(|u| (u, "DATABASE_URL")));
        match found {
            Some((text, variable)) => Ok(Self { text, variable }),
            None => Err(CliError::NoUrl),
        }
    }

    /// The URL without its password, for messages.
    pub fn redacted(&self) -> String {
        redact(&self.text)
    }

    fn bad(&self, reason: impl Into<String>) -> CliError {
        CliError::BadUrl {
            variable: self.variable,
            url: self.redacted(),
            reason: reason.into(),
        }
    }

    fn connect_error(&self, problem: String) -> CliError {
        CliError::Connect {
            variable: self.variable,
            url: self.redacted(),
            problem,
        }
    }

    /// One connection within `timeout`, to report the real problem (refused, unknown
    /// host, bad credentials) at once, before the pool (which would retry until its
    /// timeout and then only say it timed out).
    #[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
    async fn probe<C: sqlx::Connection>(
        &self,
        options: &C::Options,
        timeout: Duration,
    ) -> Result<(), CliError> {
        use sqlx::ConnectOptions as _;
        match tokio::time::timeout(timeout, options.connect()).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                Ok(())
            }
            Ok(Err(error)) => Err(self.connect_error(error.to_string())),
            Err(_) => Err(self.connect_error(format!(
                "no answer within {} s (--connect-timeout)",
                timeout.as_secs()
            ))),
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `scheme://user:secret@host` → `scheme://user:***@host`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// A connected database: the control plane's pool, and for SQLite where the tenant
/// files are.
#[derive(Debug)]
#[non_exhaustive]
pub(crate) enum Db {
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
    #[cfg(feature = "mysql")]
    MySql(sqlx::MySqlPool),
    #[cfg(feature = "sqlite")]
    Sqlite(SqliteFleet),
}

/// A SQLite fleet: the control file's pool and the directory of tenant files, if known.
#[cfg(feature = "sqlite")]
#[derive(Debug)]
pub(crate) struct SqliteFleet {
    pub control: sqlx::SqlitePool,
    pub control_file: PathBuf,
    pub dir: Option<PathBuf>,
}

/// Which backend a URL is for.
enum Kind {
    Postgres,
    MySql,
    Sqlite(PathBuf),
}

fn kind(url: &Url) -> Result<Kind, CliError> {
    let text = url.text.trim();
    let lower = text.to_ascii_lowercase();
    if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        return Ok(Kind::Postgres);
    }
    if lower.starts_with("mysql://") || lower.starts_with("mariadb://") {
        return Ok(Kind::MySql);
    }
    if let Some(rest) = text
        .strip_prefix("sqlite://")
        .or_else(|| text.strip_prefix("sqlite:"))
    {
        let path = rest.split('?').next().unwrap_or_default();
        if path.is_empty() || path == ":memory:" {
            return Err(url.bad(
                "name the directory of tenant files (sqlite:///var/lib/app/tenants) or the control file",
            ));
        }
        return Ok(Kind::Sqlite(PathBuf::from(path)));
    }
    if text.starts_with('/') || text.starts_with('.') {
        return Ok(Kind::Sqlite(PathBuf::from(text)));
    }
    Err(url.bad(
        "unknown scheme; use postgres://, mysql:// (MySQL/MariaDB) or sqlite:// (a directory of tenant files)",
    ))
}

/// Connects to the URL's database within `timeout`.
pub(crate) async fn connect(url: &Url, timeout: Duration) -> Result<Db, CliError> {
    match kind(url)? {
        Kind::Postgres => postgres(url, timeout).await,
        Kind::MySql => mysql(url, timeout).await,
        Kind::Sqlite(path) => sqlite(url, &path, timeout).await,
    }
}

#[cfg(feature = "postgres")]
async fn postgres(url: &Url, timeout: Duration) -> Result<Db, CliError> {
    let options: sqlx::postgres::PgConnectOptions = url
        .text
        .parse()
        .map_err(|e: sqlx::Error| url.bad(e.to_string()))?;
    let options = options.application_name("contract-cli");
    url.probe::<sqlx::PgConnection>(&options, timeout).await?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(timeout)
        .connect_lazy_with(options);
    Ok(Db::Postgres(pool))
}

#[cfg(not(feature = "postgres"))]
async fn postgres(_: &Url, _: Duration) -> Result<Db, CliError> {
    Err(CliError::NotBuilt {
        backend: "PostgreSQL",
        feature: "postgres",
    })
}

#[cfg(feature = "mysql")]
async fn mysql(url: &Url, timeout: Duration) -> Result<Db, CliError> {
    let text = url.text.trim();
    let text = match text.strip_prefix("mariadb://") {
        Some(rest) => format!("mysql://{rest}"),
        None => text.to_owned(),
    };
    let options: sqlx::mysql::MySqlConnectOptions = text
        .parse()
        .map_err(|e: sqlx::Error| url.bad(e.to_string()))?;
    url.probe::<sqlx::MySqlConnection>(&options, timeout)
        .await?;
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(timeout)
        .connect_lazy_with(options);
    Ok(Db::MySql(pool))
}

#[cfg(not(feature = "mysql"))]
async fn mysql(_: &Url, _: Duration) -> Result<Db, CliError> {
    Err(CliError::NotBuilt {
        backend: "MySQL/MariaDB",
        feature: "mysql",
    })
}

/// A directory: its `contract_control` file; a file: the control file itself. Nothing is
/// ever created.
#[cfg(feature = "sqlite")]
async fn sqlite(url: &Url, path: &Path, timeout: Duration) -> Result<Db, CliError> {
    let (control_file, dir) = if path.is_dir() {
        (path.join(SQLITE_CONTROL_FILE), Some(path.to_owned()))
    } else if path.is_file() {
        (path.to_owned(), path.parent().map(Path::to_owned))
    } else {
        return Err(url.bad(format!(
            "{} is neither a directory of tenant files nor a control file",
            path.display()
        )));
    };
    if !control_file.is_file() {
        return Err(CliError::NoControlPlane {
            location: control_file.display().to_string(),
        });
    }
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&control_file)
        .create_if_missing(false)
        .busy_timeout(timeout);
    url.probe::<sqlx::SqliteConnection>(&options, timeout)
        .await?;
    let control = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(timeout)
        .connect_lazy_with(options);
    Ok(Db::Sqlite(SqliteFleet {
        control,
        control_file,
        dir,
    }))
}

#[cfg(not(feature = "sqlite"))]
async fn sqlite(_: &Url, _: &Path, _: Duration) -> Result<Db, CliError> {
    Err(CliError::NotBuilt {
        backend: "SQLite",
        feature: "sqlite",
    })
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_removed_from_urls() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(
            redact("mysql://root@127.0.0.1/test"),
            "mysql://root@127.0.0.1/test"
        );
        assert_eq!(redact("sqlite:///tmp/t"), "sqlite:///tmp/t");
    }
}
