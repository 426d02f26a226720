//! The JSON execution log of one run: what was introspected, found, planned and applied.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::plan::Hazard;

/// One run of the guard or the remediator, as a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionLog {
    /// What ran (`check`, `remediate`, `guard`).
    pub task: String,
    /// RFC 3339 UTC start time.
    pub started_at: String,
    /// The steps, numbered from 1.
    pub steps: Vec<LogEntry>,
    /// One sentence: the result.
    pub outcome: String,
}

/// A numbered step of an [`ExecutionLog`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// 1-based position.
    pub step: usize,
    /// What the step did.
    #[serde(flatten)]
    pub action: LogAction,
}

/// A tenant whose remediation failed, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantError {
    /// The tenant.
    pub tenant: String,
    /// What happened, and what to do.
    pub error: String,
}

/// What a log step did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum LogAction {
    /// Bulk introspection of the fleet.
    Introspect {
        /// Tenants introspected.
        tenants: usize,
        /// Tables found.
        tables: usize,
        /// Wall time.
        duration_ms: u64,
    },
    /// The diff.
    DetectDrift {
        /// One line per finding at `at_risk` or worse.
        findings: Vec<String>,
        /// Tenants compliant.
        compliant: usize,
        /// Tenants drifted.
        drifted: usize,
        /// Tenants unreachable.
        unreachable: usize,
    },
    /// Audit rows an interrupted apply had left pending, settled against the live schema.
    Reconcile {
        /// One line per row: tenant, audit id, plan, outcome and evidence.
        settled: Vec<String>,
    },
    /// Remediation planning.
    Plan {
        /// Every planned statement, tenant by tenant.
        migrations: Vec<String>,
        /// Hazards per tenant (only tenants with hazards).
        hazards: BTreeMap<String, Vec<Hazard>>,
        /// Plan hash per tenant with a non-empty plan.
        plan_hashes: BTreeMap<String, String>,
        /// Refused fixes, one line each.
        refused: Vec<String>,
    },
    /// Applying the allowed steps, tenant by tenant.
    Apply {
        /// Tenants changed.
        applied: Vec<String>,
        /// Tenants left waiting for approval.
        awaiting_approval: Vec<String>,
        /// Tenants whose remediation failed (rolled back).
        failed: Vec<TenantError>,
        /// Audit ids written.
        audit_ids: Vec<String>,
        /// Wall time.
        duration_ms: u64,
    },
    /// Re-check after applying.
    Verify {
        /// Tenants re-checked.
        tenants: usize,
        /// Of which compliant.
        compliant: usize,
        /// Wall time.
        duration_ms: u64,
    },
}

impl ExecutionLog {
    /// An empty log for `task` started at `started_at`.
    #[must_use]
    pub fn new(task: impl Into<String>, started_at: impl Into<String>) -> Self {
        Self {
            task: task.into(),
            started_at: started_at.into(),
            steps: Vec::new(),
            outcome: String::new(),
        }
    }

    /// Appends a step, numbering it.
    pub fn push(&mut self, action: LogAction) {
        self.steps.push(LogEntry {
            step: self.steps.len() + 1,
            action,
        });
    }

    /// The log as pretty JSON.
    #[must_use]
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}
