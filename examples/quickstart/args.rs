//! The quickstart's command line: embedded SQLite unless a server is named explicitly
//! with `--url`. An exported `DATABASE_URL` (many sqlx users have one) is never used on
//! its own: the run would create and drop scratch schemas on whatever it points at.

/// Where the story runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One SQLite file per tenant in a fresh temporary directory (no server).
    Sqlite,
    /// Scratch schemas on this PostgreSQL server.
    Postgres(String),
    /// Scratch databases on this MySQL / MariaDB server.
    MySql(String),
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the story on this target.
    Run {
        /// Where.
        target: Target,
        /// A note for the user, if `DATABASE_URL` is set and was ignored.
        note: Option<String>,
    },
    /// Print the usage and stop.
    Help,
}

/// The usage text.
pub const USAGE: &str = "\
usage: cargo run --example quickstart [-- --url <URL>]

  (no flag)    the whole story on embedded SQLite files, no server needed
  --url <URL>  the same story on a server: postgres://… (scratch schemas) or
               mysql://… / mariadb://… (scratch databases), dropped at the end

DATABASE_URL is not read: pass the server explicitly with --url.";

/// Parses the arguments after the program name. `database_url` is the environment's
/// `DATABASE_URL`, only mentioned in a note when it is set and no `--url` was given.
///
/// # Errors
///
/// A message naming the problem (an unknown argument, `--url` without a value, a URL that
/// is neither PostgreSQL nor MySQL), followed by the usage.
pub fn parse(
    args: impl IntoIterator<Item = String>,
    database_url: Option<&str>,
) -> Result<Command, String> {
    let mut url = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--url" => match args.next() {
                Some(value) if !value.starts_with("--") => url = Some(value),
                _ => return Err(format!("--url needs a value\n\n{USAGE}")),
            },
            other => match other.strip_prefix("--url=") {
                Some(value) if !value.is_empty() => url = Some(value.to_owned()),
                Some(_) => return Err(format!("--url needs a value\n\n{USAGE}")),
                None => return Err(format!("unknown argument `{other}`\n\n{USAGE}")),
            },
        }
    }
    let Some(url) = url else {
        let note = database_url.filter(|u| !u.is_empty()).map(|_| {
            "DATABASE_URL is set but not used: the quickstart runs on embedded SQLite; \
             pass --url <URL> to run it on a server"
                .to_owned()
        });
        return Ok(Command::Run {
            target: Target::Sqlite,
            note,
        });
    };
    let target = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Target::Postgres(url)
    } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
        Target::MySql(url)
    } else if url.starts_with("sqlite:") {
        return Err(
            "a sqlite: URL names one database file, but the quickstart's SQLite fleet \
                    is one file per tenant in a fresh directory: run it without --url"
                .to_owned(),
        );
    } else {
        return Err(format!(
            "--url must start with postgres:// or mysql:// (or mariadb://), not `{url}`\n\n{USAGE}"
        ));
    };
    Ok(Command::Run { target, note: None })
}
