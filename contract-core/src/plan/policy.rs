//! Remediation policies: which planned steps may run.

use serde::{Deserialize, Serialize};

use super::{PlanStep, TenantPlan};

/// What the guard may do about drift.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", content = "plan_hash", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Remediation {
    /// Report only; no plan is made.
    Off,
    /// Plan and show; apply nothing.
    DryRun,
    /// Apply steps that have no hazard; the rest waits for approval.
    SafeOnly,
    /// Like `SafeOnly`, and also apply, in full, the one tenant plan with exactly this hash.
    /// If the live schema no longer produces that hash, nothing unsafe is applied.
    Approved(String),
}

/// The words the JSON uses: `off`, `dry_run`, `safe_only`, `approved <full plan hash>`.
impl std::fmt::Display for Remediation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Remediation::Off => f.write_str("off"),
            Remediation::DryRun => f.write_str("dry_run"),
            Remediation::SafeOnly => f.write_str("safe_only"),
            Remediation::Approved(hash) => write!(f, "approved {hash}"),
        }
    }
}

/// The steps a policy lets run for one plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection<'a> {
    /// The steps to apply, in plan order.
    pub steps: Vec<&'a PlanStep>,
    /// `true` when hazardous steps remain unapplied (the tenant waits for approval).
    pub awaiting_approval: bool,
}

impl Remediation {
    /// The steps of `plan` this policy allows.
    ///
    /// ```
    /// use contract_core::plan::Remediation;
    /// assert!(Remediation::SafeOnly.applies());
    /// assert!(!Remediation::DryRun.applies());
    /// ```
    #[must_use]
    pub fn select<'a>(&self, plan: &'a TenantPlan) -> Selection<'a> {
        let safe: Vec<&PlanStep> = plan.steps.iter().filter(|s| s.is_safe()).collect();
        let unsafe_left = plan.needs_approval();
        match self {
            Remediation::Off | Remediation::DryRun => Selection {
                steps: Vec::new(),
                awaiting_approval: unsafe_left,
            },
            Remediation::Approved(hash) if *hash == plan.hash => Selection {
                steps: plan.steps.iter().collect(),
                awaiting_approval: false,
            },
            Remediation::SafeOnly | Remediation::Approved(_) => Selection {
                steps: safe,
                awaiting_approval: unsafe_left,
            },
        }
    }

    /// `true` for the policies that change the schema.
    #[must_use]
    pub fn applies(&self) -> bool {
        matches!(self, Remediation::SafeOnly | Remediation::Approved(_))
    }

    /// `true` unless `Off`.
    #[must_use]
    pub fn plans(&self) -> bool {
        !matches!(self, Remediation::Off)
    }
}
