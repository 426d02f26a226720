//! Phases: the transactions a multi-transaction step runs in.
//!
//! Most steps run in the tenant's one remediation transaction. A step that would hold a
//! strong lock through a full-table scan is split instead: `SET NOT NULL` is a
//! `CHECK … NOT VALID` committed on its own (a brief `ACCESS EXCLUSIVE`), a `VALIDATE`
//! in its own transaction (`SHARE UPDATE EXCLUSIVE`: readers and writers proceed), then
//! `SET NOT NULL` (metadata only on PostgreSQL ≥ 12, which uses the validated check) and
//! the check's drop. Each phase commits with its audit progress, so a crash between
//! phases leaves a valid schema and the next pass resumes from the recorded phase.

use serde::{Deserialize, Serialize};
use std::fmt;

use super::LockLevel;

/// What one phase of a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PhaseKind {
    /// Adds a constraint `NOT VALID`: new rows are checked, existing rows are not read.
    AddNotValid,
    /// `VALIDATE CONSTRAINT`: reads every row under `SHARE UPDATE EXCLUSIVE`.
    Validate,
    /// `SET NOT NULL` using the validated check, then drops the check.
    SetNotNull,
    /// Online type change: the shadow column and the trigger that keeps it in sync.
    Expand,
    /// Online type change: the shadow column filled by key range, one short transaction
    /// per batch, a checkpoint committed with each.
    Backfill,
    /// Online type change: no row differs from its cast, `NOT NULL` through a validated
    /// check, indexes on the shadow column built `CONCURRENTLY`.
    Verify,
    /// Online type change: one short transaction that swaps the columns.
    Swap,
}

impl PhaseKind {
    /// The phase's snake_case name (the JSON form).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            PhaseKind::AddNotValid => "add_not_valid",
            PhaseKind::Validate => "validate",
            PhaseKind::SetNotNull => "set_not_null",
            PhaseKind::Expand => "expand",
            PhaseKind::Backfill => "backfill",
            PhaseKind::Verify => "verify",
            PhaseKind::Swap => "swap",
        }
    }
}

impl fmt::Display for PhaseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One transaction of a multi-transaction step: the next `statements` of the step's
/// statements, run and committed together under `lock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Phase {
    /// What the phase does.
    pub kind: PhaseKind,
    /// The strongest lock it takes.
    pub lock: LockLevel,
    /// How many of the step's statements (in order, after the previous phases') it runs.
    pub statements: usize,
}

impl Phase {
    /// A phase of `kind` running the next `statements` statements under `lock`.
    #[must_use]
    pub const fn new(kind: PhaseKind, lock: LockLevel, statements: usize) -> Self {
        Self {
            kind,
            lock,
            statements,
        }
    }
}

/// `validate (SHARE UPDATE EXCLUSIVE (reads and writes continue))`.
impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.kind, self.lock.describe())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::drift::{DriftKind, Finding, Severity};
    use crate::ident::Dialect;
    use crate::live::{LiveColumn, LiveTable};
    use crate::model::{ColumnContract, TableContract};
    use crate::plan::{TableInput, TenantPlan, TypeCatalog, plan_tenant};

    fn not_null_plan() -> TenantPlan {
        let contract = TableContract {
            struct_name: "Event".into(),
            schema: None,
            table: "events".into(),
            columns: vec![ColumnContract::new("user_id", "i64")],
        };
        let mut live = LiveTable::new("tenant_1", "events");
        live.columns = vec![LiveColumn::new("user_id", "bigint")];
        let findings = [Finding {
            tenant: "tenant_1".into(),
            schema: "tenant_1".into(),
            table: "events".into(),
            column: Some("user_id".into()),
            kind: DriftKind::Nullability,
            severity: Severity::Breaks,
            expected: "NOT NULL".into(),
            actual: "nullable".into(),
            contract: "Event".into(),
        }];
        let expected: BTreeMap<String, String> = [("user_id".to_owned(), "INT8".to_owned())].into();
        let input = TableInput {
            contract: &contract,
            live: Some(&live),
            findings: &findings,
            expected_types: &expected,
        };
        plan_tenant(
            Dialect::Postgres,
            "tenant_1",
            Some("tenant_1"),
            &[input],
            &TypeCatalog::new(),
        )
    }

    #[test]
    fn set_not_null_runs_in_three_transactions_and_the_hash_covers_them() {
        let plan = not_null_plan();
        let step = &plan.steps[0];
        let groups: Vec<(PhaseKind, LockLevel, usize)> = step
            .phased()
            .into_iter()
            .map(|(p, s)| {
                let p = p.expect("a phase");
                (p.kind, p.lock, s.len())
            })
            .collect();
        assert_eq!(
            groups,
            [
                (PhaseKind::AddNotValid, LockLevel::AccessExclusiveBrief, 1),
                (PhaseKind::Validate, LockLevel::ShareUpdateExclusive, 1),
                (PhaseKind::SetNotNull, LockLevel::AccessExclusiveBrief, 2),
            ]
        );
        assert!(step.phased()[1].1[0].contains("VALIDATE CONSTRAINT"));
        // The same statements in one transaction are another plan.
        let mut single = step.clone();
        single.phases.clear();
        let one = TenantPlan::new("tenant_1", Dialect::Postgres, vec![single], Vec::new());
        assert_ne!(one.hash, plan.hash);
        assert_ne!(one.shape, plan.shape);
        let text = plan.to_string();
        assert!(
            text.contains(
                "transaction 2: validate (SHARE UPDATE EXCLUSIVE (reads and writes continue))"
            ) && text.contains("3 transactions"),
            "{text}"
        );
    }

    #[test]
    fn a_step_without_phases_is_one_group() {
        let mut step = not_null_plan().steps.remove(0);
        step.phases.clear();
        let groups = step.phased();
        assert_eq!(groups.len(), 1);
        assert!(groups[0].0.is_none());
        assert_eq!(groups[0].1.len(), 4);
    }
}
