//! The command line: global options and one subcommand per operator task.

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Operate a guarded fleet from its database: tenant status, pending plans grouped by
/// change shape, approvals, pauses, the audit log and quarantined messages.
///
/// The database URL comes from `--database-url`, else `CONTRACT_DATABASE_URL`, else
/// `DATABASE_URL`: `postgres://…`, `mysql://…` (MySQL/MariaDB), or `sqlite://<dir>` for a
/// directory of tenant files whose control plane is `<dir>/contract_control` (or
/// `sqlite://<file>` naming the control file itself).
///
/// Exit codes: 0 done, 1 `status --fail-on` found what it fails on, 2 usage, connection or
/// database error.
#[derive(Debug, Parser)]
#[command(name = "contract", bin_name = "contract", version)]
#[non_exhaustive]
pub struct Cli {
    /// The database URL (default: `CONTRACT_DATABASE_URL`, then `DATABASE_URL`).
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Print one JSON document on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Schema (PostgreSQL) or database (MySQL) of the control-plane tables, if the guard
    /// was given one (`ControlPlane::with_schema`).
    #[arg(long, global = true, value_name = "SCHEMA")]
    pub control_schema: Option<String>,
    /// Table-name prefix of the control plane (`ControlPlane::with_prefix`).
    #[arg(
        long,
        global = true,
        value_name = "PREFIX",
        default_value = "contract_"
    )]
    pub control_prefix: String,
    /// Seconds to wait for the database before giving up.
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 5)]
    pub connect_timeout: u64,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum Command {
    /// Each tenant's verdict, who paused it, why and since when, its backlog, and the
    /// contract versions of the running guards.
    Status(StatusArgs),
    /// Pending plans grouped by change shape: tenants, statements, hazards and locks in
    /// words, and the rows a rewrite would touch (from the catalog's estimates).
    Plans,
    /// Approves one tenant's plan by its full hash, or every plan of a change shape: each
    /// guard replica applies it on its next pass, exactly once per tenant.
    Approve(ApproveArgs),
    /// Revokes an approval: it covers no new apply from now on.
    Revoke(RevokeArgs),
    /// Pauses a tenant (or one of its queues) for every guard replica.
    Pause(PauseArgs),
    /// Lifts an operator pause (a guard pause lifts itself once the tenant complies).
    Resume(ResumeArgs),
    /// The remediation audit log, newest first.
    Audit(AuditArgs),
    /// Quarantined (poison) messages.
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
}

/// What `status --fail-on` fails on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[non_exhaustive]
pub enum FailOn {
    /// Any tenant drifted or unreachable, or any pause (guard or operator).
    Drift,
}

/// `contract status`.
#[derive(Debug, Args)]
#[non_exhaustive]
pub struct StatusArgs {
    /// Exit with 1 when the fleet is not healthy (for CI gates).
    #[arg(long, value_enum, value_name = "WHAT")]
    pub fail_on: Option<FailOn>,
}

/// `contract approve`: a plan hash or `--shape`, exactly one.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["plan", "shape"])))]
#[non_exhaustive]
pub struct ApproveArgs {
    /// The full plan hash (64 hex digits), as `contract plans` prints it.
    #[arg(
        value_name = "PLAN_HASH",
        required_unless_present = "shape",
        conflicts_with = "shape"
    )]
    pub plan: Option<String>,
    /// Approve every tenant whose pending plan has this change shape instead.
    #[arg(long, value_name = "SHAPE")]
    pub shape: Option<String>,
    /// Who approves (recorded in the approval and in every audit row it covers).
    #[arg(long, env = "USER", value_name = "NAME")]
    pub by: String,
    /// Why, or a ticket reference.
    #[arg(long, default_value = "")]
    pub note: String,
    /// Stop covering new applies after this long (`30m`, `2h`, `1day`).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub expires_in: Option<std::time::Duration>,
    /// Apply to at most this many tenants.
    #[arg(long, value_name = "N")]
    pub tenant_cap: Option<u64>,
}

/// `contract revoke`.
#[derive(Debug, Args)]
#[non_exhaustive]
pub struct RevokeArgs {
    /// The approval id, as `contract approve` printed it.
    #[arg(value_name = "APPROVAL_ID")]
    pub id: String,
    /// Who revokes.
    #[arg(long, env = "USER", value_name = "NAME")]
    pub by: String,
}

/// `contract pause`.
#[derive(Debug, Args)]
#[non_exhaustive]
pub struct PauseArgs {
    /// The tenant.
    pub tenant: String,
    /// Only this queue of the tenant (not empty: no queue name is the whole tenant).
    #[arg(long, value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub queue: Option<String>,
    /// Why (shown by `contract status` and in every replica's gate).
    #[arg(long)]
    pub reason: String,
    /// Who pauses.
    #[arg(long, env = "USER", value_name = "NAME")]
    pub by: String,
}

/// `contract resume`.
#[derive(Debug, Args)]
#[non_exhaustive]
pub struct ResumeArgs {
    /// The tenant.
    pub tenant: String,
    /// Only this queue of the tenant (not empty: no queue name is the whole tenant).
    #[arg(long, value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub queue: Option<String>,
}

/// `contract audit`.
#[derive(Debug, Args)]
#[non_exhaustive]
pub struct AuditArgs {
    /// Only this tenant's rows.
    #[arg(long)]
    pub tenant: Option<String>,
    /// At most this many rows (the newest).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Schema of the audit table on PostgreSQL (`AuditConfig::schema`).
    #[arg(long, default_value = "public")]
    pub audit_schema: String,
    /// Name of the audit table (`AuditConfig::table`).
    #[arg(long, default_value = "contract_audit")]
    pub audit_table: String,
}

/// `contract quarantine …`.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum QuarantineCommand {
    /// Quarantined messages, waiting ones first.
    List(QuarantineListArgs),
    /// One quarantined message, with its payload.
    Show(QuarantineShowArgs),
    /// Puts one waiting message back into its queue, unchecked: the consumer checks it
    /// again against its payload contract when it claims it (and quarantines it again if
    /// it is still rejected). Re-checking here would need the consumer's contract, which
    /// only the consumer's code has: for a replay that re-checks every waiting message,
    /// call `QueueQuarantine::replay` from the consumer.
    Replay(QuarantineReplayArgs),
}

/// Where the quarantine table is.
#[derive(Debug, Args)]
#[non_exhaustive]
pub struct QuarantineTable {
    /// Schema of the quarantine table on PostgreSQL (`Quarantine::schema`).
    #[arg(long, default_value = "public")]
    pub quarantine_schema: String,
    /// Name of the quarantine table (`Quarantine::table`).
    #[arg(long, default_value = "contract_quarantine")]
    pub quarantine_table: String,
}

/// `contract quarantine list`.
#[derive(Debug, Args)]
#[non_exhaustive]
pub struct QuarantineListArgs {
    /// Only this tenant's messages.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Also list replayed messages.
    #[arg(long)]
    pub all: bool,
    /// Where the quarantine is.
    #[command(flatten)]
    pub table: QuarantineTable,
}

/// `contract quarantine show`.
#[derive(Debug, Args)]
#[non_exhaustive]
pub struct QuarantineShowArgs {
    /// The quarantine row id, as `contract quarantine list` prints it.
    pub id: i64,
    /// The tenant (required on MySQL and SQLite, where each tenant has its own table).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Where the quarantine is.
    #[command(flatten)]
    pub table: QuarantineTable,
}

/// `contract quarantine replay`.
#[derive(Debug, Args)]
#[non_exhaustive]
pub struct QuarantineReplayArgs {
    /// The quarantine row id, as `contract quarantine list` prints it.
    pub id: i64,
    /// The tenant (required on MySQL and SQLite, where each tenant has its own table).
    #[arg(long)]
    pub tenant: Option<String>,
    /// The queue table to put it back into (default: the queue name stored with it). Its
    /// columns are `id`, `payload`, `enqueued_at` and `attempts`.
    #[arg(long, value_name = "TABLE")]
    pub queue_table: Option<String>,
    /// The type of the queue's payload column on PostgreSQL (default: read from the
    /// catalog; `jsonb` when the column cannot be found).
    #[arg(long, value_enum)]
    pub payload_type: Option<PayloadKind>,
    /// Where the quarantine is.
    #[command(flatten)]
    pub table: QuarantineTable,
}

/// The type of a PostgreSQL queue's payload column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[non_exhaustive]
pub enum PayloadKind {
    /// `jsonb`.
    Jsonb,
    /// `json`.
    Json,
    /// `text`.
    Text,
}

impl From<PayloadKind> for crate::quarantine::PayloadType {
    fn from(kind: PayloadKind) -> Self {
        match kind {
            PayloadKind::Jsonb => Self::Jsonb,
            PayloadKind::Json => Self::Json,
            PayloadKind::Text => Self::Text,
        }
    }
}

/// `30m`, `2h`, `1day` (humantime).
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (write e.g. 30m, 2h, 1day)"))
}
