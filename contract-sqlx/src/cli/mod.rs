//! The `contract` command-line tool: operate a guarded fleet with nothing but a database
//! URL (feature `cli`). Every guard persists what the tool needs in the control plane
//! ([`crate::control`]): tenant status and pending plans, pauses, approvals, replicas.
//!
//! ```text
//! contract status [--fail-on drift]     each tenant's verdict, pauses, backlog; versions in flight
//! contract plans                        pending plans grouped by change shape
//! contract approve <plan-hash> | --shape <shape> [--by --note --expires-in --tenant-cap]
//! contract revoke <approval-id> [--by]
//! contract pause <tenant> [--queue q] --reason … [--by]
//! contract resume <tenant> [--queue q]
//! contract audit [--tenant T] [--limit N]
//! contract quarantine list | show <id> | replay <id>
//! ```
//!
//! `--json` prints one JSON document on stdout. Exit codes: 0 done, 1 `status --fail-on`
//! triggered, 2 usage, connection or database error (the message names the URL variable
//! and the fix).
//!
//! The URL is `--database-url`, else `CONTRACT_DATABASE_URL`, else `DATABASE_URL`. For a
//! SQLite fleet it names the directory of tenant files, whose control plane is the file
//! [`SQLITE_CONTROL_FILE`] in it (or the control file itself, tenant files then found
//! where the control plane says they are).

mod actions;
mod args;
mod audit;
mod connect;
mod error;
mod estimate;
#[cfg(feature = "sqlite")]
mod files;
mod plans;
mod quarantine;
mod quarantine_sql;
mod render;
mod status;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser as _;

pub use args::{Cli, Command};
pub use connect::SQLITE_CONTROL_FILE;
pub use error::CliError;

use crate::control::ControlPlane;
use connect::{Db, Url};

/// Runs `generic` on the control plane's pool, whatever the backend.
macro_rules! on_control {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            #[cfg(feature = "postgres")]
            Db::Postgres($pool) => $body,
            #[cfg(feature = "mysql")]
            Db::MySql($pool) => $body,
            #[cfg(feature = "sqlite")]
            Db::Sqlite(fleet) => {
                let $pool = &fleet.control;
                $body
            }
        }
    };
}

/// The `contract` binary: parses the command line, runs the command, prints its result
/// and returns the exit code (0 done, 1 `--fail-on` triggered, 2 error).
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("contract: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(&cli)) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("contract: {}", error.report());
            ExitCode::from(2)
        }
    }
}

/// Runs one parsed command line and prints its result; returns the exit code (0, or 1
/// when `status --fail-on` triggered).
///
/// # Errors
///
/// A [`CliError`] for a missing or unusable URL, a server that cannot be reached within
/// the connect timeout, or a failed database call.
pub async fn run(cli: &Cli) -> Result<u8, CliError> {
    let url = Url::resolve(cli.database_url.as_deref())?;
    let db = connect::connect(&url, Duration::from_secs(cli.connect_timeout.max(1))).await?;
    let mut plane = ControlPlane::default().with_prefix(&cli.control_prefix);
    if let Some(schema) = &cli.control_schema {
        plane = plane.with_schema(schema);
    }
    let outcome = dispatch(cli, &db, &plane).await;
    on_control!(&db, |pool| pool.close().await);
    let outcome = outcome.map_err(|e| no_control_plane(e, &db, &plane))?;
    Ok(outcome)
}

async fn dispatch(cli: &Cli, db: &Db, plane: &ControlPlane) -> Result<u8, CliError> {
    let json = cli.json;
    match &cli.command {
        Command::Status(args) => {
            let report = on_control!(db, |pool| status::status(pool, plane).await)?;
            render::emit(json, &report);
            Ok(u8::from(args.fail_on.is_some() && report.unhealthy))
        }
        Command::Plans => {
            let mut report = on_control!(db, |pool| plans::plans(pool, plane).await)?;
            estimate::fill(db, &mut report).await?;
            render::emit(json, &report);
            Ok(0)
        }
        Command::Approve(args) => {
            let done = on_control!(db, |pool| actions::approve(pool, plane, args).await)?;
            render::emit(json, &done);
            Ok(0)
        }
        Command::Revoke(args) => {
            let done = on_control!(db, |pool| actions::revoke(pool, plane, args).await)?;
            render::emit(json, &done);
            Ok(0)
        }
        Command::Pause(args) => {
            let done = on_control!(db, |pool| actions::pause(pool, plane, args).await)?;
            render::emit(json, &done);
            Ok(0)
        }
        Command::Resume(args) => {
            let done = on_control!(db, |pool| actions::resume(pool, plane, args).await)?;
            render::emit(json, &done);
            Ok(0)
        }
        Command::Audit(args) => {
            let report = audit::audit(db, plane, args).await?;
            render::emit(json, &report);
            Ok(0)
        }
        Command::Quarantine(command) => quarantine::run(db, plane, command, json).await,
    }
}

/// A read of a control-plane table that does not exist: no guard ran here (or another
/// schema/prefix is in use). Said so, instead of the driver's "relation does not exist".
/// Only for the control plane's own calls: a queue or quarantine table that is missing is
/// named by the driver's error.
fn no_control_plane(error: CliError, db: &Db, plane: &ControlPlane) -> CliError {
    let CliError::Contract(inner) = &error else {
        return error;
    };
    let crate::Error::Database { source, hint, .. } = inner.as_ref() else {
        return error;
    };
    if *hint != crate::error::hint::CONTROL_PLANE {
        return error;
    }
    let missing = source.as_database_error().is_some_and(|e| {
        let message = e.message();
        e.code().as_deref() == Some("42P01")
            || e.code().as_deref() == Some("42S02")
            || message.contains("no such table")
    });
    if !missing {
        return error;
    }
    let location = match db {
        #[cfg(feature = "postgres")]
        Db::Postgres(_) => format!("{}.{}*", plane.schema().unwrap_or("public"), plane.prefix()),
        #[cfg(feature = "mysql")]
        Db::MySql(_) => format!(
            "{}{}*",
            plane.schema().map(|s| format!("{s}.")).unwrap_or_default(),
            plane.prefix()
        ),
        #[cfg(feature = "sqlite")]
        Db::Sqlite(fleet) => format!("{} ({}*)", fleet.control_file.display(), plane.prefix()),
    };
    CliError::NoControlPlane { location }
}
