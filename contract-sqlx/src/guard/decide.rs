//! What may run of one drifted tenant's plan: the policy's safe steps, the whole plan when
//! an approval covers it (the policy's own hash, or an approval of its hash or change shape
//! in the control plane), minus the hazardous steps a contract version still running would
//! not survive.

use std::time::SystemTime;

use contract_core::plan::{Remediation, TenantPlan};
use contract_core::{TableContract, TenantOutcome};

use super::versions;
use crate::control::{Approval, Replica};

/// The decision for one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Decision {
    /// Indexes of the steps to run now, in plan order.
    pub steps: Vec<usize>,
    /// The control-plane approval the hazardous steps run under, if they do.
    pub approval: Option<Approval>,
    /// `true` when the policy's own `Approved(hash)` covers the plan.
    pub approved_by_policy: bool,
    /// Why the rest does not run yet.
    pub waiting: Option<String>,
    /// For the execution log.
    pub outcome: TenantOutcome,
}

/// Decides `plan` under `policy`, the active `approvals` and the contract versions of the
/// `others` replicas still live (their contracts against `ours`).
pub(super) fn decide(
    plan: &TenantPlan,
    policy: &Remediation,
    approvals: &[Approval],
    ours: &[TableContract],
    others: &[Replica],
) -> Decision {
    let now = SystemTime::now();
    let hazardous = |i: &usize| !plan.steps[*i].is_safe();
    let all: Vec<usize> = (0..plan.steps.len()).collect();
    let safe: Vec<usize> = all.iter().copied().filter(|i| !hazardous(i)).collect();
    let needs_approval = plan.needs_approval();
    if !policy.applies() {
        return Decision {
            steps: Vec::new(),
            approval: None,
            approved_by_policy: false,
            waiting: (!plan.steps.is_empty()).then(|| {
                format!(
                    "policy {policy} applies nothing; plan {} is shown only",
                    plan.hash
                )
            }),
            outcome: if needs_approval {
                TenantOutcome::AwaitingApproval
            } else if plan.steps.is_empty() {
                TenantOutcome::Refused
            } else {
                TenantOutcome::Planned
            },
        };
    }
    let by_policy = policy.approves(plan);
    let approval = (!by_policy && needs_approval)
        .then(|| {
            approvals
                .iter()
                .find(|a| a.is_active(now) && a.target.covers(plan))
                .cloned()
        })
        .flatten();
    let approved = by_policy || approval.is_some();
    if !approved {
        return Decision {
            steps: safe.clone(),
            approval: None,
            approved_by_policy: false,
            waiting: needs_approval.then(|| {
                format!(
                    "awaits approval of plan {} or of shape {} (contract approve)",
                    plan.hash, plan.shape
                )
            }),
            outcome: if !safe.is_empty() {
                TenantOutcome::Applied
            } else if needs_approval {
                TenantOutcome::AwaitingApproval
            } else {
                TenantOutcome::Refused
            },
        };
    }
    // Approved: every step, unless a hazardous one would break a version still running;
    // then the hazardous steps wait together (the plan stays the one approved) and the
    // additive ones proceed.
    let blocked: Vec<String> = all
        .iter()
        .filter(|i| hazardous(i))
        .filter_map(|&i| versions::breaks(&plan.steps[i], ours, others))
        .collect();
    if blocked.is_empty() {
        return Decision {
            steps: all,
            approval,
            approved_by_policy: by_policy,
            waiting: None,
            outcome: TenantOutcome::Applied,
        };
    }
    Decision {
        steps: safe.clone(),
        approval: None,
        approved_by_policy: false,
        waiting: Some(format!("approved, but waits: {}", blocked.join("; "))),
        outcome: if safe.is_empty() {
            TenantOutcome::WaitingForVersion
        } else {
            TenantOutcome::Applied
        },
    }
}
