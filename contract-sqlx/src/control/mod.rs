//! The control plane: the state more than one process needs, kept in the database (see
//! `ARCHITECTURE.md` D13). Every replica's guard writes it and reads it; the `contract`
//! CLI reads and writes it with nothing but a database URL.
//!
//! | table | holds |
//! |---|---|
//! | `contract_pauses` | guard and operator pauses: who, why, since when, the findings |
//! | `contract_tenants` | each tenant's verdict, findings, pending plan (with its hash and change shape), why it waits, backlog |
//! | `contract_approvals` | approvals by plan hash or change shape, with approver, note, expiry, tenant cap; revocable |
//! | `contract_replicas` | running guards with their contract version and heartbeat |
//!
//! One set per server: in the `public` schema on PostgreSQL, in the pool's database on
//! MySQL/MariaDB, in the control file on SQLite (change it with
//! [`ControlPlane::with_schema`] / [`ControlPlane::with_prefix`]). Guard pauses are also
//! kept in memory, so a gate answers without I/O.
//!
//! ```no_run
//! # async fn demo(pool: sqlx::PgPool) -> contract_sqlx::Result<()> {
//! use contract_sqlx::control::{ApprovalRequest, ControlPlane};
//!
//! let plane = ControlPlane::default();
//! for tenant in plane.tenants(&pool).await? {
//!     if let Some(plan) = &tenant.plan {
//!         println!("{}: {}", tenant.tenant, plan);
//!     }
//! }
//! // Every tenant whose pending plan has this change shape, at most 300 of them:
//! let approval = plane
//!     .approve(&pool, ApprovalRequest::shape("9f2c…", "alice").tenant_cap(300))
//!     .await?;
//! println!("{approval}");
//! # Ok(()) }
//! ```

#[cfg(feature = "mysql")]
mod mysql_collation;
mod sql;
mod store;
mod types;

use std::time::SystemTime;

use contract_core::Dialect;
use sqlx::Pool;

pub use store::ControlStore;
pub(crate) use store::heartbeat_expiry;
pub use types::{Approval, ApprovalRequest, ApprovalTarget, PauseRequest, Replica, TenantStatus};

use crate::error::Result;
use crate::guard::{PauseInfo, PausedBy};

/// Where the control plane's tables are: a schema (PostgreSQL) or database (MySQL;
/// ignored on SQLite) and a table-name prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ControlPlane {
    schema: Option<String>,
    prefix: String,
}

impl Default for ControlPlane {
    /// `public.contract_*` on PostgreSQL, `contract_*` in the pool's database on MySQL and
    /// in the control file on SQLite.
    fn default() -> Self {
        Self {
            schema: None,
            prefix: "contract_".into(),
        }
    }
}

impl ControlPlane {
    /// Puts the tables in this schema (PostgreSQL) or database (MySQL).
    #[must_use]
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Names the tables `<prefix>pauses`, `<prefix>tenants`, … (default `contract_`).
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The schema or database, if set.
    #[must_use]
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The table-name prefix.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The quoted, qualified name of table `<prefix><name>`.
    pub(crate) fn qualified(&self, dialect: Dialect, name: &str) -> Result<String> {
        let table = format!("{}{name}", self.prefix);
        let schema = match dialect {
            Dialect::Postgres => Some(self.schema.as_deref().unwrap_or("public")),
            Dialect::MySql => self.schema.as_deref(),
            Dialect::Sqlite => None,
        };
        Ok(dialect.quote_qualified(schema, &table)?)
    }

    /// Creates the tables if they are missing (race-safe between replicas).
    ///
    /// # Errors
    ///
    /// [`Error::Database`](crate::Error::Database) when the role may not create them.
    pub async fn ensure<DB: ControlStore>(&self, pool: &Pool<DB>) -> Result<()> {
        DB::ensure(pool, self).await
    }

    /// Every stored pause (guard and operator).
    ///
    /// # Errors
    ///
    /// [`Error::Database`](crate::Error::Database) when the table cannot be read.
    pub async fn pauses<DB: ControlStore>(&self, pool: &Pool<DB>) -> Result<Vec<PauseInfo>> {
        DB::load_pauses(pool, self).await
    }

    /// Pauses a tenant (or one of its queues) on behalf of an operator, for every replica:
    /// their gates close on their next pass (a running [`crate::Guard`] of this process
    /// closes it at once with [`crate::Guard::pause`]).
    ///
    /// # Errors
    ///
    /// An invalid tenant name, or the table cannot be written.
    pub async fn pause<DB: ControlStore>(
        &self,
        pool: &Pool<DB>,
        request: PauseRequest,
    ) -> Result<PauseInfo> {
        let tenant = contract_core::TenantName::new(&request.tenant)?;
        let pause = PauseInfo {
            tenant: tenant.to_string(),
            queue: request.queue,
            paused_by: PausedBy::Operator(request.operator),
            reason: request.reason,
            findings: Vec::new(),
            plan_hash: None,
            expected_fingerprint: None,
            observed_fingerprint: None,
            since: SystemTime::now(),
        };
        DB::save_pause(pool, self, &pause).await?;
        Ok(pause)
    }

    /// Lifts an operator pause for every replica.
    ///
    /// # Errors
    ///
    /// An invalid tenant name, or the table cannot be written.
    pub async fn resume<DB: ControlStore>(
        &self,
        pool: &Pool<DB>,
        tenant: &str,
        queue: Option<&str>,
    ) -> Result<()> {
        let tenant = contract_core::TenantName::new(tenant)?;
        DB::delete_pause(
            pool,
            self,
            tenant.as_str(),
            queue,
            &PausedBy::Operator(String::new()),
        )
        .await
    }

    /// Every tenant's last known status, by tenant.
    ///
    /// # Errors
    ///
    /// [`Error::Database`](crate::Error::Database) when the table cannot be read.
    pub async fn tenants<DB: ControlStore>(&self, pool: &Pool<DB>) -> Result<Vec<TenantStatus>> {
        DB::load_tenants(pool, self).await
    }

    /// Every approval (active, used up, expired and revoked), oldest first.
    ///
    /// # Errors
    ///
    /// [`Error::Database`](crate::Error::Database) when the table cannot be read.
    pub async fn approvals<DB: ControlStore>(&self, pool: &Pool<DB>) -> Result<Vec<Approval>> {
        DB::load_approvals(pool, self).await
    }

    /// Records an approval; every replica's guard applies the plans it covers on its next
    /// pass (exactly once per tenant), when its remediation policy applies.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidApproval`](crate::Error::InvalidApproval) for a hash or shape that is not 64 hex digits,
    /// [`Error::Database`](crate::Error::Database) when the table cannot be written.
    pub async fn approve<DB: ControlStore>(
        &self,
        pool: &Pool<DB>,
        request: ApprovalRequest,
    ) -> Result<Approval> {
        request.check()?;
        let approval = Approval {
            id: uuid::Uuid::now_v7().to_string(),
            target: match request.target {
                ApprovalTarget::Plan(v) => ApprovalTarget::Plan(v.to_ascii_lowercase()),
                ApprovalTarget::Shape(v) => ApprovalTarget::Shape(v.to_ascii_lowercase()),
            },
            approver: request.approver,
            note: request.note,
            created_at: SystemTime::now(),
            expires_at: request.expires_at,
            tenant_cap: request.tenant_cap,
            applied: 0,
            revoked_at: None,
            revoked_by: None,
        };
        DB::insert_approval(pool, self, &approval).await?;
        tracing::info!(approval = %approval, "approval recorded");
        Ok(approval)
    }

    /// Revokes an approval: it covers no new apply from now on (applies already made stay).
    /// Returns `false` when there is no such active approval.
    ///
    /// # Errors
    ///
    /// [`Error::Database`](crate::Error::Database) when the table cannot be written.
    pub async fn revoke<DB: ControlStore>(
        &self,
        pool: &Pool<DB>,
        approval_id: &str,
        by: &str,
    ) -> Result<bool> {
        let revoked = DB::revoke_approval(pool, self, approval_id, by).await?;
        if revoked {
            tracing::info!(approval_id, revoked_by = by, "approval revoked");
        }
        Ok(revoked)
    }

    /// The registered guards (replicas), oldest first, with their contract versions.
    ///
    /// # Errors
    ///
    /// [`Error::Database`](crate::Error::Database) when the table cannot be read.
    pub async fn replicas<DB: ControlStore>(&self, pool: &Pool<DB>) -> Result<Vec<Replica>> {
        DB::load_replicas(pool, self).await
    }
}
