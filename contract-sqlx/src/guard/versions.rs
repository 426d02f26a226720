//! Contract versions in flight: during a rolling deploy an older consumer version still
//! reads the old column signature. A plan step that would break a contract version still
//! registered by a live replica (a rename, a type change, a new NOT NULL) waits until that
//! version is gone; additive steps never wait.

use std::collections::BTreeMap;

use contract_core::plan::{Action, PlanStep};
use contract_core::{ColumnContract, TableContract};

use crate::control::Replica;

/// Why `step` would break a version other live replicas still run, naming the version and
/// how many replicas run it; `None` when it breaks none of them.
pub(super) fn breaks(
    step: &PlanStep,
    ours: &[TableContract],
    others: &[Replica],
) -> Option<String> {
    let mut broken: BTreeMap<&str, usize> = BTreeMap::new();
    for replica in others {
        let Some(theirs) = replica.contracts.iter().find(|c| c.table == step.table) else {
            continue;
        };
        if breaks_contract(step, ours, theirs) {
            *broken.entry(replica.short_version()).or_default() += 1;
        }
    }
    (!broken.is_empty()).then(|| {
        broken
            .iter()
            .map(|(version, replicas)| {
                format!(
                    "{} {}.{} breaks consumer version {version}… still running on {replicas} replica{}",
                    step.action,
                    step.table,
                    step.column.as_deref().unwrap_or("*"),
                    if *replicas == 1 { "" } else { "s" }
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// `true` when `step` breaks a consumer reading the table with contract `theirs`.
fn breaks_contract(step: &PlanStep, ours: &[TableContract], theirs: &TableContract) -> bool {
    let Some(column) = step.column.as_deref() else {
        return false;
    };
    let reads = |name: &str| theirs.columns.iter().find(|c| c.name == name);
    match step.action {
        // The old name disappears: a version that still reads it breaks.
        Action::RenameColumn => our_column(ours, &step.table, column)
            .and_then(|c| c.renamed_from.as_deref())
            .is_some_and(|old| reads(old).is_some()),
        // The column's type changes to ours: a version expecting another type breaks.
        Action::ChangeType => match (reads(column), our_column(ours, &step.table, column)) {
            (Some(their), Some(our)) => {
                their.rust_type != our.rust_type || their.sql_type != our.sql_type
            }
            (Some(_), None) => true,
            (None, _) => false,
        },
        // A version that treats the column as optional may write NULL into it.
        Action::SetNotNull => reads(column).is_some_and(|c| c.nullable),
        _ => false,
    }
}

fn our_column<'c>(
    ours: &'c [TableContract],
    table: &str,
    column: &str,
) -> Option<&'c ColumnContract> {
    ours.iter()
        .filter(|c| c.table == table)
        .find_map(|c| c.columns.iter().find(|col| col.name == column))
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use contract_core::DriftKind;
    use contract_core::plan::LockLevel;

    use super::*;

    fn contract(columns: Vec<ColumnContract>) -> TableContract {
        TableContract {
            struct_name: "Event".into(),
            schema: None,
            table: "events".into(),
            columns,
        }
    }

    fn replica(version: &str, contracts: Vec<TableContract>) -> Replica {
        serde_json::from_value(serde_json::json!({
            "replica_id": version, "host": "h", "pid": 1, "version": version,
            "contracts": contracts,
            "started_at": humantime::format_rfc3339(SystemTime::now()).to_string(),
            "heartbeat_at": humantime::format_rfc3339(SystemTime::now()).to_string(),
        }))
        .expect("replica")
    }

    fn step(action: Action, column: &str) -> PlanStep {
        serde_json::from_value(serde_json::json!({
            "table": "events", "column": column, "action": action,
            "fixes": DriftKind::MissingColumn, "statements": [],
            "lock": LockLevel::AccessExclusiveBrief, "hazards": [],
        }))
        .expect("step")
    }

    #[test]
    fn a_rename_waits_while_a_version_reads_the_old_name() {
        let mut renamed = ColumnContract::new("account_id", "i64");
        renamed.renamed_from = Some("user_id".into());
        let ours = [contract(vec![renamed])];
        let old = replica(
            "3f2a00000000aa",
            vec![contract(vec![ColumnContract::new("user_id", "i64")])],
        );
        let why = breaks(
            &step(Action::RenameColumn, "account_id"),
            &ours,
            &[old.clone(), old],
        )
        .expect("it breaks the old version");
        assert!(
            why.contains("breaks consumer version 3f2a00000000") && why.contains("on 2 replicas"),
            "{why}"
        );
        let current = replica("aaaa", ours.to_vec());
        assert_eq!(
            breaks(&step(Action::RenameColumn, "account_id"), &ours, &[current]),
            None
        );
    }

    #[test]
    fn type_changes_and_new_not_null_wait_additions_never_do() {
        let ours = [contract(vec![ColumnContract::new("user_id", "i64")])];
        let old_i32 = replica(
            "old",
            vec![contract(vec![ColumnContract::new("user_id", "i32")])],
        );
        assert!(breaks(&step(Action::ChangeType, "user_id"), &ours, &[old_i32]).is_some());
        let same = replica(
            "same",
            vec![contract(vec![ColumnContract::new("user_id", "i64")])],
        );
        assert!(breaks(&step(Action::ChangeType, "user_id"), &ours, &[same]).is_none());
        let mut optional = ColumnContract::new("user_id", "Option<i64>");
        optional.nullable = true;
        let writer = replica("writer", vec![contract(vec![optional])]);
        assert!(
            breaks(
                &step(Action::SetNotNull, "user_id"),
                &ours,
                std::slice::from_ref(&writer)
            )
            .is_some()
        );
        assert!(breaks(&step(Action::AddColumn, "user_id"), &ours, &[writer]).is_none());
    }
}
