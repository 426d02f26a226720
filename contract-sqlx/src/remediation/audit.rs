//! The audit log of remediations: one row per applied tenant plan.

use serde::{Deserialize, Serialize};

/// Where audit rows go and who is recorded as the actor.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditConfig {
    /// Schema of the audit table on PostgreSQL (`public` by default). On MySQL and
    /// SQLite the table lives in each tenant's database, next to the tables it changed.
    pub schema: String,
    /// Table name (`contract_audit` by default); created if missing.
    pub table: String,
    /// Who applies (recorded in every row): a service or operator name.
    pub actor: String,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            schema: "public".into(),
            table: "contract_audit".into(),
            actor: default_actor(),
        }
    }
}

fn default_actor() -> String {
    let host =
        hostname::get().map_or_else(|_| "localhost".into(), |h| h.to_string_lossy().into_owned());
    format!("contract-guard@{host}/{}", std::process::id())
}

/// One applied (or, on MySQL, pending) remediation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditRecord {
    /// Unique id of the row.
    pub audit_id: String,
    /// The tenant.
    pub tenant: String,
    /// The hash of the plan the steps came from.
    pub plan_hash: String,
    /// The statements run, in order.
    pub statements: Vec<String>,
    /// `applied`, or `pending` / `failed` (MySQL two-phase audit).
    pub status: String,
    /// How many attempts it took (lock-timeout retries).
    pub attempts: u32,
    /// Wall time of the successful attempt.
    pub duration_ms: u64,
    /// The approval that covered the plan's hazardous steps, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    /// Who approved them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// Progress samples of the online backfills the apply ran (PostgreSQL), for the
    /// execution log; not stored in the audit table (its statements summarise them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub progress: Vec<contract_core::BackfillProgress>,
}

/// A new unique audit id: a UUIDv7, so ids sort by creation time.
#[must_use]
pub fn new_audit_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// `value` as JSON text, for the audit columns of dialects that bind JSON as text (MySQL,
/// SQLite) or send it as a literal (PostgreSQL). The audit values (statements, findings)
/// always serialise; `null` otherwise.
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
pub(crate) fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

impl AuditRecord {
    /// The record of `job`'s applied statements.
    pub(crate) fn applied<DB: sqlx::Database>(
        job: &super::ApplyJob<'_, DB>,
        audit_id: String,
        statements: Vec<String>,
        attempts: u32,
        duration_ms: u64,
    ) -> Self {
        Self {
            audit_id,
            tenant: job.tenant.to_string(),
            plan_hash: job.plan.hash.clone(),
            statements,
            status: "applied".into(),
            attempts,
            duration_ms,
            approval_id: job.approval.and_then(|a| a.id.clone()),
            approved_by: job.approval.map(|a| a.approver.clone()),
            progress: Vec::new(),
        }
    }
}
