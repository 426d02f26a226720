//! Errors of the runtime crate.

use contract_core::IdentError;

/// Everything that can go wrong while checking or guarding a fleet.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tenant, table or column name cannot be used safely; no SQL was sent.
    #[error(transparent)]
    Ident(#[from] IdentError),
    /// A database call failed.
    #[error("{context} failed{}; {hint}", tenant_suffix(.tenant))]
    Database {
        /// What was being done (`introspecting tenants`, `saving a pause`, ...).
        context: &'static str,
        /// What to check: the server itself when the call never reached it, otherwise
        /// what was being done asks for (the catalog's privileges for an introspection,
        /// the control-plane tables for a pause, ...).
        hint: &'static str,
        /// The tenant concerned, if one.
        tenant: Option<String>,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// A tenant source produced no tenant at all.
    #[error("no tenant found for {source_description}; check the pattern, list or registry query")]
    NoTenants {
        /// The tenant source, as configured.
        source_description: String,
    },
    /// The backend does not support this yet.
    #[error("{what} is not supported on {dialect} yet")]
    Unsupported {
        /// The backend.
        dialect: contract_core::Dialect,
        /// What was asked.
        what: &'static str,
    },
    /// The live schema changed between planning and applying: nothing was applied.
    #[error(
        "the schema of tenant `{tenant}` changed since the plan was made; nothing was applied, re-check and re-plan"
    )]
    StalePlan {
        /// The tenant.
        tenant: String,
    },
    /// A remediation failed and its transaction was rolled back: the tenant is unchanged.
    #[error(
        "remediation of tenant `{tenant}` failed after {attempts} attempt(s) at `{stage}` and was rolled back; the tenant is unchanged"
    )]
    Apply {
        /// The tenant.
        tenant: String,
        /// Attempts made.
        attempts: u32,
        /// What was running (`advisory lock`, `table lock`, a statement, `audit row`, `commit`).
        stage: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// A multi-transaction remediation (PostgreSQL) stopped in a later transaction: the
    /// earlier ones are committed and leave a valid schema (a constraint `NOT VALID`, say),
    /// the failed one was rolled back, and the pending audit row lets the next pass resume.
    #[error(
        "remediation of tenant `{tenant}` stopped in transaction {phase} of {phases}, {stage}, after {attempts} attempt(s): that transaction was rolled back, the {} before it are committed and leave a valid schema; audit row `{audit_id}` stays pending and the next pass resumes at transaction {phase}",
        .phase - 1
    )]
    PhaseFailed {
        /// The tenant.
        tenant: String,
        /// The transaction that failed, from 1.
        phase: usize,
        /// How many transactions the apply has.
        phases: usize,
        /// What the failed transaction does and what was running in it
        /// (``validate at `ALTER TABLE …` ``).
        stage: String,
        /// Attempts made.
        attempts: u32,
        /// The pending audit row.
        audit_id: String,
        /// The driver's error (boxed: this variant is already large).
        #[source]
        source: Box<sqlx::Error>,
    },
    /// An online type change was refused before anything changed: the column cannot be
    /// swapped online (part of a key, read by a view, generated, …).
    #[error(
        "not remediable online: `{table}.{column}` {reason}; change it by hand in a maintenance window"
    )]
    NotOnline {
        /// The table (`schema.table`).
        table: String,
        /// The column.
        column: String,
        /// Why, in words (`is part of the primary key`, …).
        reason: String,
    },
    /// A MySQL/MariaDB remediation failed after some of its statements had run: DDL
    /// commits implicitly there, so they stay applied. The audit row records the failure.
    #[error(
        "remediation of tenant `{tenant}` failed at `{stage}` after {} statement(s) had been applied, which MySQL cannot roll back; audit row `{audit_id}` records what ran, check the tenant and re-plan",
        .applied.len()
    )]
    PartiallyApplied {
        /// The tenant.
        tenant: String,
        /// What was running when it failed (a statement, or `audit row`).
        stage: String,
        /// The statements that did run, in order.
        applied: Vec<String>,
        /// The audit row of this remediation.
        audit_id: String,
        /// The driver's error (boxed: this variant is already large).
        #[source]
        source: Box<sqlx::Error>,
    },
    /// The connection was lost at a moment the server may have completed the step
    /// (PostgreSQL: after `COMMIT` was sent; MySQL/MariaDB: during a DDL statement, which
    /// commits implicitly): whether the remediation took effect is unknown until the tenant
    /// is checked again.
    #[error(
        "remediation of tenant `{tenant}` lost its connection at `{stage}`, so whether it took effect is unknown (audit row `{audit_id}`); the next check shows the tenant's schema and the next run applies what is still missing"
    )]
    OutcomeUnknown {
        /// The tenant.
        tenant: String,
        /// What was running (`commit`, or a statement).
        stage: String,
        /// The audit row of this remediation (PostgreSQL: it exists if and only if the
        /// commit took effect; MySQL/MariaDB: it stays `pending`).
        audit_id: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// Every statement of a MySQL/MariaDB remediation ran, but its audit row could not be
    /// marked `applied` (the connection was lost or the write failed): it stays `pending`
    /// and the next run reconciles it against the live schema.
    #[error(
        "remediation of tenant `{tenant}` applied every statement, but its audit row `{audit_id}` could not be marked applied and stays pending; the next run reconciles it against the live schema"
    )]
    AuditNotSettled {
        /// The tenant.
        tenant: String,
        /// The audit row.
        audit_id: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// The database role lacks a privilege the feature needs.
    #[error("the database role may not {what}; {hint}")]
    Privilege {
        /// What was attempted.
        what: &'static str,
        /// What to do.
        hint: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// A guard pass could not read a pool's live schema in time; its tenants are paused as
    /// unreachable until a pass succeeds.
    #[error(
        "the live schema on {pool} could not be read within {}; is the server up? (the guard's check_timeout)", humantime::format_duration(*.after)
    )]
    CheckTimeout {
        /// Where the pool points.
        pool: String,
        /// The guard's `check_timeout`.
        after: std::time::Duration,
    },
    /// A quarantine operation failed: which table is missing, or what the database
    /// refused, naming the tenant and the queue.
    #[error(transparent)]
    Quarantine(Box<crate::quarantine::QuarantineError>),
    /// The audit table a remediation writes its row to could not be created: nothing was
    /// applied to the tenant.
    #[error(
        "remediation of tenant `{tenant}` did not start: the audit table could not be created ({error}); grant CREATE on its schema, or create it beforehand"
    )]
    AuditTable {
        /// The tenant.
        tenant: String,
        /// What failed, with its causes.
        error: String,
    },
    /// An approval names something that is not a full plan hash or change shape.
    #[error(
        "cannot approve {what} `{value}`: it must be the full 64-hex-digit {what} as `contract plans` shows it"
    )]
    InvalidApproval {
        /// `plan` or `shape`.
        what: &'static str,
        /// What was given.
        value: String,
    },
    /// A SQLite tenant directory could not be read.
    #[error("cannot read tenant directory `{path}`")]
    TenantDirectory {
        /// The directory.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

fn tenant_suffix(tenant: &Option<String>) -> String {
    tenant
        .as_ref()
        .map(|t| format!(" for tenant `{t}`"))
        .unwrap_or_default()
}

/// What to check: the server itself when the call never reached it (refused, cut, timed
/// out waiting for a connection), otherwise the hint for what the call was doing.
fn hint_for(hint: &'static str, source: &sqlx::Error) -> &'static str {
    match source {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => hint::UNREACHABLE,
        _ => hint,
    }
}

/// What to check when a database call fails, by what the call was doing.
pub(crate) mod hint {
    /// Reading the catalog: introspection, type resolution, tenant discovery.
    pub(crate) const CATALOG: &str =
        "check that the server is up and the role may read the catalog";
    /// Reading or writing the guard's control-plane tables (pauses, tenant status, approvals,
    /// replicas).
    pub(crate) const CONTROL_PLANE: &str = "check that the server is up and the role may read and write the control-plane tables (`ControlPlane::ensure` creates them)";
    /// Creating the guard's own tables.
    pub(crate) const CREATE_TABLES: &str =
        "grant CREATE on the schema or database, or create the tables beforehand";
    /// Running the user's tenant registry query.
    pub(crate) const REGISTRY: &str = "check the registry query and that the role may run it";
    /// Connecting a pool.
    pub(crate) const CONNECT: &str = "check the database URL and that the server is up";
    /// Reading or writing a table of the consumer's (a queue, the audit table).
    pub(crate) const TABLE: &str =
        "check that the server is up and the table exists and the role may use it";
    /// The server did not answer: whatever the call was doing, the connection is at fault.
    pub(crate) const UNREACHABLE: &str =
        "the server could not be reached: check the database URL and that the server is up";
    /// Anything else: only the connection is in doubt (installing the DDL trigger).
    #[cfg(feature = "postgres")]
    pub(crate) const SERVER: &str = "check that the server is up and reachable";
    /// A statement of an online type change that did not get its locks.
    #[cfg(feature = "postgres")]
    pub(crate) const LOCK_HELD: &str = "another session kept a lock the change needs (past `lock_timeout`, or in a deadlock): find it in `pg_locks`, or allow a longer `lock_timeout` or more attempts (`OnlineTypeChange::lock`, `ApplyOptions`); what committed stays, and a new call resumes";
    /// A statement of an online type change that failed otherwise.
    #[cfg(feature = "postgres")]
    pub(crate) const ONLINE_DDL: &str = "check that the server is up and the role owns the table; what committed stays, and a new call resumes";
    /// Installing the DDL trigger over objects another role created.
    #[cfg(feature = "postgres")]
    pub(crate) const TRIGGER_OWNERSHIP: &str = "the trigger's objects must belong to the installing role: drop the ones the cause names, then install again";
}

impl Error {
    /// `true` when this failed remediation keeps the approval it used: a later transaction
    /// of a multi-transaction plan failed after earlier ones committed, and the plan is
    /// resumed from its audit row, with no new approval. (Other failures that may have
    /// changed the schema lead to a new plan, which reserves the approval again: keeping
    /// the count for them too would count one tenant twice.)
    pub(crate) fn keeps_its_approval(&self) -> bool {
        matches!(self, Error::PhaseFailed { .. })
    }

    /// A failed catalog read (introspection, type resolution, tenant discovery).
    pub(crate) fn db(
        context: &'static str,
        tenant: Option<&str>,
    ) -> impl FnOnce(sqlx::Error) -> Self {
        Self::db_hint(context, hint::CATALOG, tenant)
    }

    /// A failed read or write of the control-plane tables.
    pub(crate) fn control(
        context: &'static str,
        tenant: Option<&str>,
    ) -> impl FnOnce(sqlx::Error) -> Self {
        Self::db_hint(context, hint::CONTROL_PLANE, tenant)
    }

    /// A failed database call, with what to check (one of [`hint`]'s constants).
    pub(crate) fn db_hint(
        context: &'static str,
        hint: &'static str,
        tenant: Option<&str>,
    ) -> impl FnOnce(sqlx::Error) -> Self {
        let tenant = tenant.map(str::to_owned);
        move |source| Error::Database {
            context,
            hint: hint_for(hint, &source),
            tenant,
            source,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its sources on one line.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use crate::control::{ControlPlane, PauseRequest};

    /// A failed pause write names the control-plane tables, not the catalog (the catalog
    /// hint used to be on every database error).
    #[tokio::test]
    async fn a_failed_pause_write_says_what_to_check() {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:")
            .await
            .expect("in-memory SQLite");
        // No `ensure`: the pauses table is missing.
        let error = ControlPlane::default()
            .pause(&pool, PauseRequest::tenant("tenant_1").by("alice"))
            .await
            .expect_err("no control-plane tables");
        let message = error.to_string();
        assert!(
            message.starts_with("saving a pause failed for tenant `tenant_1`;"),
            "{message}"
        );
        assert!(message.contains("control-plane tables"), "{message}");
        assert!(!message.contains("catalog"), "{message}");
    }
    /// When the call never reached the server, the hint says so, whatever the call was
    /// doing (it used to blame privileges for a refused connection).
    #[tokio::test]
    async fn an_unreachable_server_is_named_as_the_cause() {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:")
            .await
            .expect("in-memory SQLite");
        pool.close().await;
        let error = ControlPlane::default()
            .pause(&pool, PauseRequest::tenant("tenant_1").by("alice"))
            .await
            .expect_err("closed pool");
        let message = error.to_string();
        assert!(
            message.contains("the server could not be reached"),
            "{message}"
        );
        assert!(!message.contains("grant"), "{message}");
    }
}
