//! The audit log of remediations: one row per applied tenant plan.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where audit rows go and who is recorded as the actor.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
    format!("contract-guard@{host}/{}", std::process::id())
}

/// One applied (or, on MySQL, pending) remediation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// A new unique audit id: time, process and a counter, hashed.
#[must_use]
pub fn new_audit_id(tenant: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let seed = format!(
        "{tenant}\u{1e}{nanos}\u{1e}{}\u{1e}{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    contract_core::digest_hex(seed.as_bytes())[..32].to_owned()
}

/// `value` as JSON text, for the audit columns of dialects that bind JSON as text (MySQL,
/// SQLite). The audit values (statements, findings) always serialise; `null` otherwise.
#[cfg(any(feature = "mysql", feature = "sqlite"))]
pub(crate) fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}
