//! The JSON execution log of one run: what was introspected and found, and per tenant what
//! was planned, decided and applied, by whom, with which outcome.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::drift::Finding;
use crate::plan::{Hazard, TenantPlan};

/// One run of the guard or the remediator, as a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ExecutionLog {
    /// What ran (`remediate`, `guard`).
    pub task: String,
    /// RFC 3339 UTC start time.
    pub started_at: String,
    /// RFC 3339 UTC end time.
    #[serde(default)]
    pub finished_at: String,
    /// The remediation policy (`off`, `dry_run`, `safe_only`, `approved <hash>`).
    #[serde(default)]
    pub policy: String,
    /// The run's fleet-wide steps (introspect, detect, reconcile, verify), numbered from 1.
    pub steps: Vec<LogEntry>,
    /// One entry per tenant the run planned something for, by tenant.
    #[serde(default)]
    pub tenants: Vec<TenantLog>,
    /// One sentence: the result.
    pub outcome: String,
}

/// A numbered fleet-wide step of an [`ExecutionLog`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LogEntry {
    /// 1-based position.
    pub step: usize,
    /// What the step did.
    #[serde(flatten)]
    pub action: LogAction,
}

/// A tenant whose remediation failed, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TenantError {
    /// The tenant.
    pub tenant: String,
    /// What happened, and what to do.
    pub error: String,
}

impl TenantError {
    /// A failure of `tenant`.
    #[must_use]
    pub fn new(tenant: impl Into<String>, error: impl Into<String>) -> Self {
        Self {
            tenant: tenant.into(),
            error: error.into(),
        }
    }
}

/// What a fleet-wide log step did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
#[non_exhaustive]
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
    /// Resumed tenants whose waiting messages were cleared (how many, how fast).
    BacklogCleared {
        /// One line per tenant.
        tenants: Vec<String>,
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

/// What became of one tenant's plan in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TenantOutcome {
    /// Steps were applied (all of the plan, or its safe part).
    Applied,
    /// Planned only (dry run, or nothing the policy lets run).
    Planned,
    /// Hazardous steps wait for an approval of the plan hash or its change shape.
    AwaitingApproval,
    /// Steps wait while a consumer version they would break is still running.
    WaitingForVersion,
    /// The apply failed; see `error` (rolled back unless the error says otherwise).
    Failed,
    /// The tenant changed since it was planned (another replica was first); nothing ran.
    Stale,
    /// Every finding is refused (nothing can be planned); see the plan's refusals.
    Refused,
}

impl TenantOutcome {
    /// The outcome's snake_case name (the JSON form).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            TenantOutcome::Applied => "applied",
            TenantOutcome::Planned => "planned",
            TenantOutcome::AwaitingApproval => "awaiting_approval",
            TenantOutcome::WaitingForVersion => "waiting_for_version",
            TenantOutcome::Failed => "failed",
            TenantOutcome::Stale => "stale",
            TenantOutcome::Refused => "refused",
        }
    }
}

impl fmt::Display for TenantOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One tenant's part of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TenantLog {
    /// The tenant.
    pub tenant: String,
    /// The findings at `at_risk` or worse that were planned for.
    pub findings: Vec<Finding>,
    /// The plan's full hash (approve exactly this).
    pub plan_hash: String,
    /// The plan's change shape (approve it to cover every tenant with the same drift).
    pub shape: String,
    /// The statements that ran (or would run), in order.
    pub statements: Vec<String>,
    /// The hazards of the steps that ran (or wait).
    pub hazards: Vec<Hazard>,
    /// Refused findings, one line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
    /// The policy that decided (`safe_only`, `approved <hash>`, `approval <id>`, …).
    pub policy: String,
    /// The approval that covered the hazardous steps, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    /// Who approved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
    /// The audit row written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_id: Option<String>,
    /// What became of it.
    pub outcome: TenantOutcome,
    /// Why it waits, or what failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Wall time of the apply (0 when nothing ran).
    pub duration_ms: u64,
    /// Progress of the online backfills the apply ran, sampled every few seconds (the
    /// first batch, then at most one sample per interval, and the end).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub progress: Vec<BackfillProgress>,
}

/// One progress sample of an online backfill: rows done of the estimate, rate, time left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BackfillProgress {
    /// `schema.table.column` being changed.
    pub column: String,
    /// Rows backfilled so far, by this run and any interrupted one it resumed.
    pub rows_done: u64,
    /// The table's row estimate (`pg_class.reltuples`) when the change started.
    pub rows_total: u64,
    /// Rows per second of this run.
    pub rows_per_s: u64,
    /// Seconds still expected at that rate (0 when done).
    pub eta_s: u64,
    /// Milliseconds since this run's backfill started.
    pub elapsed_ms: u64,
}

impl BackfillProgress {
    /// A sample of the backfill of `column` (`schema.table.column`).
    #[must_use]
    pub fn new(
        column: impl Into<String>,
        rows_done: u64,
        rows_total: u64,
        rows_per_s: u64,
        eta_s: u64,
        elapsed_ms: u64,
    ) -> Self {
        Self {
            column: column.into(),
            rows_done,
            rows_total,
            rows_per_s,
            eta_s,
            elapsed_ms,
        }
    }
}

/// `tenant_1.events.user_id: 500000 of about 2000000 rows, 41000 rows/s, 37 s left`.
impl fmt::Display for BackfillProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} of about {} rows, {} rows/s, {} s left",
            self.column, self.rows_done, self.rows_total, self.rows_per_s, self.eta_s
        )
    }
}

impl TenantLog {
    /// An entry for `plan` with `outcome`; the statements and hazards are the plan's.
    #[must_use]
    pub fn new(
        plan: &TenantPlan,
        findings: Vec<Finding>,
        policy: String,
        outcome: TenantOutcome,
    ) -> Self {
        Self {
            tenant: plan.tenant.clone(),
            findings,
            plan_hash: plan.hash.clone(),
            shape: plan.shape.clone(),
            statements: plan.statements().map(str::to_owned).collect(),
            hazards: plan.hazards(),
            refused: plan.refusals.iter().map(ToString::to_string).collect(),
            policy,
            approval_id: None,
            approver: None,
            audit_id: None,
            outcome,
            detail: None,
            duration_ms: 0,
            progress: Vec::new(),
        }
    }
}

impl ExecutionLog {
    /// An empty log for `task` started at `started_at`.
    #[must_use]
    pub fn new(task: impl Into<String>, started_at: impl Into<String>) -> Self {
        Self {
            task: task.into(),
            started_at: started_at.into(),
            finished_at: String::new(),
            policy: String::new(),
            steps: Vec::new(),
            tenants: Vec::new(),
            outcome: String::new(),
        }
    }

    /// Appends a fleet-wide step, numbering it.
    pub fn push(&mut self, action: LogAction) {
        self.steps.push(LogEntry {
            step: self.steps.len() + 1,
            action,
        });
    }

    /// The entry of `tenant`, if the run has one.
    #[must_use]
    pub fn tenant(&self, tenant: &str) -> Option<&TenantLog> {
        self.tenants.iter().find(|t| t.tenant == tenant)
    }

    /// The log as pretty JSON.
    #[must_use]
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The log as one line of JSON (for a JSON Lines file).
    #[must_use]
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}
