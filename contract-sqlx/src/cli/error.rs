//! What can go wrong, each with the fix in its message; every error exits with 2.

/// A `contract` command that could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// No URL anywhere.
    #[error(
        "no database URL: pass --database-url or set CONTRACT_DATABASE_URL (or DATABASE_URL), e.g. \
         postgres://user@host:5432/db, mysql://user@host:3306/db or sqlite:///path/to/tenant/files"
    )]
    NoUrl,
    /// A URL this tool cannot use.
    #[error("cannot use the database URL from {variable} ({url}): {reason}")]
    BadUrl {
        /// Where it came from (`--database-url`, `CONTRACT_DATABASE_URL`, `DATABASE_URL`).
        variable: &'static str,
        /// The URL, password removed.
        url: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The backend is not compiled in.
    #[error(
        "this `contract` was built without {backend} support; reinstall it with \
         `cargo install --path contract-sqlx --features cli,{feature}`"
    )]
    NotBuilt {
        /// The backend's name.
        backend: &'static str,
        /// The cargo feature that adds it.
        feature: &'static str,
    },
    /// The server did not answer, refused, or refused the credentials.
    #[error(
        "cannot connect to {url} (from {variable}): {problem}; check the host, port, database and \
         credentials in {variable}, and that the server is up"
    )]
    Connect {
        /// Where the URL came from.
        variable: &'static str,
        /// The URL, password removed.
        url: String,
        /// The driver's error, or that the server did not answer in time.
        problem: String,
    },
    /// The control plane has not been created: no guard has run against this database.
    #[error(
        "no control plane at {location}: no guard has run with its control plane there; start a guard \
         (`Guard::builder()…start(&pool)`) on this database, or pass --control-schema/--control-prefix \
         if the guard uses other ones"
    )]
    NoControlPlane {
        /// Where it was looked for.
        location: String,
    },
    /// Something named on the command line does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The library failed (a database call, an invalid name or hash); boxed, it is large.
    #[error(transparent)]
    Contract(Box<crate::Error>),
}

impl From<crate::Error> for CliError {
    fn from(error: crate::Error) -> Self {
        CliError::Contract(Box::new(error))
    }
}

impl CliError {
    /// The message with its causes, one `caused by:` line each.
    #[must_use]
    pub fn report(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !text.contains(&cause_text) {
                text.push_str("\n  caused by: ");
                text.push_str(&cause_text);
            }
            source = cause.source();
        }
        text
    }
}
