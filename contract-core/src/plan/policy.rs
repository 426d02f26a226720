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
    /// Like `SafeOnly`, and also apply, in full, every tenant plan of exactly this change
    /// shape ([`TenantPlan::shape`]): one run approves a whole fleet drifted the same way.
    /// In JSON the shape goes in the `plan_hash` field.
    ApprovedShape(String),
}

/// The words the JSON uses: `off`, `dry_run`, `safe_only`, `approved <full plan hash>`,
/// `approved shape <full shape hash>`.
impl std::fmt::Display for Remediation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Remediation::Off => f.write_str("off"),
            Remediation::DryRun => f.write_str("dry_run"),
            Remediation::SafeOnly => f.write_str("safe_only"),
            Remediation::Approved(hash) => write!(f, "approved {hash}"),
            Remediation::ApprovedShape(shape) => write!(f, "approved shape {shape}"),
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
            policy if policy.approves(plan) => Selection {
                steps: plan.steps.iter().collect(),
                awaiting_approval: false,
            },
            Remediation::SafeOnly | Remediation::Approved(_) | Remediation::ApprovedShape(_) => {
                Selection {
                    steps: safe,
                    awaiting_approval: unsafe_left,
                }
            }
        }
    }

    /// `true` when this policy approves `plan` in full: `Approved` with its hash, or
    /// `ApprovedShape` with its change shape.
    ///
    /// An empty hash or shape approves nothing (a plan read from JSON without a shape).
    #[must_use]
    pub fn approves(&self, plan: &TenantPlan) -> bool {
        match self {
            Remediation::Approved(hash) => !hash.is_empty() && *hash == plan.hash,
            Remediation::ApprovedShape(shape) => !shape.is_empty() && *shape == plan.shape,
            Remediation::Off | Remediation::DryRun | Remediation::SafeOnly => false,
        }
    }

    /// `true` for the policies that change the schema.
    #[must_use]
    pub fn applies(&self) -> bool {
        matches!(
            self,
            Remediation::SafeOnly | Remediation::Approved(_) | Remediation::ApprovedShape(_)
        )
    }

    /// `true` unless `Off`.
    #[must_use]
    pub fn plans(&self) -> bool {
        !matches!(self, Remediation::Off)
    }
}
