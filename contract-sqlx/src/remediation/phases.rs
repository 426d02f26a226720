//! Multi-transaction applies: the transactions a tenant's selected steps run in.
//!
//! Steps without phases, and the first phase of every multi-phase step, share the first
//! transaction (brief locks only, or a rewrite the plan already flags); each further phase
//! of a multi-phase step then commits on its own, in step order. The audit row records the
//! transactions and how many are committed, so an interrupted apply resumes where it
//! stopped.

use contract_core::plan::{LockLevel, PlanStep};
use serde::{Deserialize, Serialize};

/// One transaction of a multi-transaction apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Transaction {
    /// What it does: `apply` for the first (when it holds more than one phase's
    /// statements), else the phase's name (`validate`, `set_not_null`, …).
    pub label: String,
    /// The strongest lock it takes.
    pub lock: LockLevel,
    /// Its statements, in order.
    pub statements: Vec<String>,
}

/// `true` when `steps` need more than one transaction.
pub(crate) fn is_phased(steps: &[&PlanStep]) -> bool {
    steps.iter().any(|s| s.is_multi_phase())
}

/// The transactions `steps` run in, in order (see the module documentation).
pub(crate) fn transactions(steps: &[&PlanStep]) -> Vec<Transaction> {
    let mut first = Transaction {
        label: String::new(),
        lock: LockLevel::None,
        statements: Vec::new(),
    };
    let mut first_labels: Vec<String> = Vec::new();
    let mut later = Vec::new();
    for step in steps {
        for (i, (phase, statements)) in step.phased().into_iter().enumerate() {
            let label = phase.map_or_else(|| "apply".to_owned(), |p| p.kind.to_string());
            let lock = phase.map_or(step.lock, |p| p.lock);
            if i == 0 {
                first.statements.extend(statements.iter().cloned());
                first.lock = first.lock.max(lock);
                first_labels.push(label);
            } else {
                later.push(Transaction {
                    label,
                    lock,
                    statements: statements.to_vec(),
                });
            }
        }
    }
    first_labels.dedup();
    first.label = match first_labels.as_slice() {
        [one] => one.clone(),
        _ => "apply".to_owned(),
    };
    let mut all = Vec::with_capacity(later.len() + 1);
    if !first.statements.is_empty() {
        all.push(first);
    }
    all.extend(later);
    all
}

/// Every statement of `transactions`, in order (the audit row's `statements`).
pub(crate) fn all_statements(transactions: &[Transaction]) -> Vec<String> {
    transactions
        .iter()
        .flat_map(|t| t.statements.iter().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use contract_core::DriftKind;
    use contract_core::plan::{Action, Phase, PhaseKind};

    use super::*;

    fn step(statements: &[&str], phases: Vec<Phase>) -> PlanStep {
        let mut s: PlanStep = serde_json::from_value(serde_json::json!({
            "table": "events", "column": null, "action": "set_not_null",
            "fixes": "nullability", "statements": statements,
            "lock": "access_exclusive_brief", "hazards": [],
        }))
        .expect("step");
        s.action = Action::SetNotNull;
        s.fixes = DriftKind::Nullability;
        s.phases = phases;
        s
    }

    #[test]
    fn single_steps_and_first_phases_share_the_first_transaction() {
        let add = step(&["add column"], Vec::new());
        let not_null = step(
            &["not valid", "validate", "set not null", "drop check"],
            vec![
                Phase::new(PhaseKind::AddNotValid, LockLevel::AccessExclusiveBrief, 1),
                Phase::new(PhaseKind::Validate, LockLevel::ShareUpdateExclusive, 1),
                Phase::new(PhaseKind::SetNotNull, LockLevel::AccessExclusiveBrief, 2),
            ],
        );
        assert!(!is_phased(&[&add]));
        assert!(is_phased(&[&add, &not_null]));
        let txns = transactions(&[&add, &not_null]);
        let summary: Vec<(&str, LockLevel, usize)> = txns
            .iter()
            .map(|t| (t.label.as_str(), t.lock, t.statements.len()))
            .collect();
        assert_eq!(
            summary,
            [
                ("apply", LockLevel::AccessExclusiveBrief, 2),
                ("validate", LockLevel::ShareUpdateExclusive, 1),
                ("set_not_null", LockLevel::AccessExclusiveBrief, 2),
            ]
        );
        assert_eq!(
            all_statements(&txns),
            [
                "add column",
                "not valid",
                "validate",
                "set not null",
                "drop check"
            ]
        );
        assert_eq!(transactions(&[&not_null])[0].label, "add_not_valid");
    }
}
