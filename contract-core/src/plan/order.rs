//! The order tables are created in: a `CREATE TABLE` with a foreign key fails on
//! PostgreSQL and MySQL unless the referenced table exists, so a plan creates the tables
//! it references first, and refuses to create one whose referenced table is missing and
//! not created (its creation refused), or that references back into itself through other
//! new tables (a cycle cannot be created table by table). SQLite checks references only
//! when rows change: there the order is kept and nothing is refused.

use super::TableInput;
use super::step::{Action, PlanStep, Refusal};
use crate::drift::DriftKind;
use crate::ident::Dialect;

/// `steps` with the tables they create first, each after the new tables it references;
/// the creations that cannot run are dropped and refused. `created[i]` is the index in
/// `steps` of the `CREATE TABLE` of `tables[i]`, if one was planned.
pub(super) fn creations_first(
    dialect: Dialect,
    schema: Option<&str>,
    tables: &[TableInput<'_>],
    created: &[Option<usize>],
    steps: Vec<PlanStep>,
    refusals: &mut Vec<Refusal>,
) -> Vec<PlanStep> {
    let key = |i: usize| {
        let contract = tables[i].contract;
        (
            contract.schema.as_deref().or(schema),
            contract.table.as_str(),
        )
    };
    // The other contracted tables each table references.
    let references: Vec<Vec<usize>> = (0..tables.len())
        .map(|i| {
            let (own_schema, _) = key(i);
            let mut targets: Vec<usize> = tables[i]
                .contract
                .foreign_keys()
                .flat_map(|(_, reference)| {
                    let schema = reference.schema.as_deref().or(own_schema);
                    (0..tables.len()).filter(move |&j| {
                        let (s, t) = key(j);
                        j != i
                            && (dialect == Dialect::Sqlite || s == schema)
                            && dialect.same_table(t, &reference.table)
                    })
                })
                .collect();
            targets.sort_unstable();
            targets.dedup();
            targets
        })
        .collect();
    let missing = |i: usize| tables[i].live.is_none();
    let mut creates: Vec<Option<usize>> = created.to_vec();
    let mut refuse = |i: usize, reason: String, creates: &mut Vec<Option<usize>>| {
        creates[i] = None;
        refusals.push(Refusal {
            table: tables[i].contract.table.clone(),
            column: None,
            kind: DriftKind::MissingTable,
            reason,
        });
    };
    let enforced = dialect != Dialect::Sqlite;
    // A reference to a missing table that is not created: refused, transitively.
    let mut changed = enforced;
    while changed {
        changed = false;
        for i in 0..tables.len() {
            let blocked = creates[i].is_some().then(|| {
                references[i]
                    .iter()
                    .copied()
                    .find(|&j| missing(j) && creates[j].is_none())
            });
            if let Some(Some(j)) = blocked {
                let reason = format!(
                    "`{}` references `{}`, which is missing and not created (see its refusal); \
                     create `{}` first, then the next pass creates `{}`",
                    tables[i].contract.table,
                    tables[j].contract.table,
                    tables[j].contract.table,
                    tables[i].contract.table
                );
                refuse(i, reason, &mut creates);
                changed = true;
            }
        }
    }
    // Each creation after the new tables it references (the first ready one, in contract
    // order, each time).
    let mut placed: Vec<usize> = Vec::new();
    let mut waiting: Vec<usize> = (0..tables.len())
        .filter(|&i| creates[i].is_some())
        .collect();
    while !waiting.is_empty() {
        let ready = waiting.iter().position(|&i| {
            references[i]
                .iter()
                .all(|j| creates[*j].is_none() || placed.contains(j))
        });
        match ready {
            Some(at) => placed.push(waiting.remove(at)),
            None if !enforced => placed.append(&mut waiting),
            None => {
                for i in std::mem::take(&mut waiting) {
                    let reason = format!(
                        "`{}` references new tables that reference it back (a cycle of foreign \
                         keys cannot be created table by table); create these tables by hand",
                        tables[i].contract.table
                    );
                    refuse(i, reason, &mut creates);
                }
            }
        }
    }
    let first: Vec<usize> = placed.iter().filter_map(|&i| creates[i]).collect();
    let dropped: Vec<usize> = created
        .iter()
        .zip(&creates)
        .filter_map(|(before, now)| before.filter(|_| now.is_none()))
        .collect();
    let mut steps: Vec<Option<PlanStep>> = steps.into_iter().map(Some).collect();
    let mut out: Vec<PlanStep> = first.iter().filter_map(|&s| steps[s].take()).collect();
    for (s, step) in steps.into_iter().enumerate() {
        if let Some(step) = step.filter(|_| !dropped.contains(&s)) {
            debug_assert!(step.action != Action::CreateTable || first.contains(&s));
            out.push(step);
        }
    }
    out
}
