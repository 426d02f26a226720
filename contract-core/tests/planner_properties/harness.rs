//! The harness: the live model as the guard hands it to the planner (diff with the model
//! oracle, findings at `at_risk` or worse, the type catalog), and a case in words.

use std::collections::HashMap;

use contract_core::plan::{Action, Hazard, LockLevel, PlanStep, TableInput, TenantPlan};
use contract_core::plan::{TypeCatalog, plan_tenant, type_names};
use contract_core::{Dialect, DiffScope, DriftKind, Finding, LiveTable, Severity, diff};

use super::apply::Model;
use super::cases::Case;
use super::types::{Oracle, PG_BUILTIN};

/// The case's live schema as a database model.
pub fn model_of(case: &Case) -> Model {
    let mut model = Model::new(case.dialect, &case.live, &case.enums);
    model.renames = case
        .contracts
        .iter()
        .flat_map(|t| &t.columns)
        .filter_map(|c| Some((c.name.clone(), c.renamed_from.clone()?)))
        .collect();
    model
}

/// The live model as the planner gets it, looked up per contract.
struct Snapshot {
    tables: HashMap<(String, String), LiveTable>,
}

impl Snapshot {
    /// The model's tables; `shuffle` (non-zero) inserts them in another order and
    /// rotates each table's foreign keys.
    fn of(model: &Model, shuffle: u64) -> Self {
        let mut tables: Vec<LiveTable> = model.tables.iter().map(|t| t.live.clone()).collect();
        if shuffle != 0 && !tables.is_empty() {
            let len = tables.len();
            tables.rotate_left(usize::try_from(shuffle % len as u64).unwrap_or(0));
            for table in &mut tables {
                if !table.foreign_keys.is_empty() {
                    let n = table.foreign_keys.len();
                    table
                        .foreign_keys
                        .rotate_right(usize::try_from(shuffle % n as u64).unwrap_or(0));
                }
            }
        }
        Self {
            tables: tables
                .into_iter()
                .map(|t| ((t.schema.clone(), t.name.clone()), t))
                .collect(),
        }
    }

    fn table(&self, dialect: Dialect, schema: &str, name: &str) -> Option<&LiveTable> {
        self.tables
            .get(&(schema.to_owned(), name.to_owned()))
            .or_else(|| {
                self.tables
                    .values()
                    .find(|t| t.schema == schema && dialect.same_table(&t.name, name))
            })
    }
}

/// The type catalog the remediation would look up (PostgreSQL): built-ins, and where the
/// model has each custom type.
pub fn catalog(case: &Case, model: &Model, reversed: bool) -> TypeCatalog {
    let mut catalog = TypeCatalog::new();
    if case.dialect != Dialect::Postgres {
        return catalog;
    }
    let mut names: Vec<String> = case
        .contracts
        .iter()
        .zip(&case.expected)
        .flat_map(|(c, e)| type_names(case.dialect, c, e))
        .collect();
    if reversed {
        names.reverse();
    }
    for name in names {
        if PG_BUILTIN.contains(&name.as_str()) {
            catalog.builtin(name);
            continue;
        }
        catalog.looked_up(name.clone());
        let mut homes: Vec<&String> = model
            .enums
            .keys()
            .filter(|(_, n)| *n == name)
            .map(|(s, _)| s)
            .collect();
        if reversed {
            homes.reverse();
        }
        for schema in homes {
            catalog.found_in(name.clone(), schema.clone());
        }
    }
    catalog
}

/// Diffs and plans the tenant as the guard does (findings at `at_risk` or worse).
pub fn plan(case: &Case, model: &Model, shuffle: u64) -> (TenantPlan, Vec<Finding>) {
    let snapshot = Snapshot::of(model, shuffle);
    let dialect = case.dialect;
    let tenant = case.tenant.as_str();
    let mut all = Vec::new();
    let mut per_table = Vec::new();
    for (contract, expected) in case.contracts.iter().zip(&case.expected) {
        let schema = match dialect {
            Dialect::Sqlite => tenant,
            _ => contract.schema.as_deref().unwrap_or(tenant),
        };
        let live = snapshot.table(dialect, schema, &contract.table);
        let oracle = Oracle {
            dialect,
            expected: expected.clone(),
        };
        let findings = diff(
            DiffScope {
                tenant,
                schema,
                dialect,
            },
            contract,
            live,
            &oracle,
        );
        let kept: Vec<Finding> = findings
            .into_iter()
            .filter(|f| f.severity >= Severity::AtRisk)
            .collect();
        all.extend(kept.iter().cloned());
        per_table.push((live, kept));
    }
    let inputs: Vec<TableInput<'_>> = case
        .contracts
        .iter()
        .zip(&case.expected)
        .zip(&per_table)
        .map(
            |((contract, expected_types), (live, findings))| TableInput {
                contract,
                live: *live,
                findings,
                expected_types,
            },
        )
        .collect();
    let schema = (dialect != Dialect::Sqlite).then_some(tenant);
    let types = catalog(case, model, shuffle != 0);
    (plan_tenant(dialect, tenant, schema, &inputs, &types), all)
}

/// What identifies a step across re-plans (SQLite rebuild text follows the definition).
pub type StepId = (
    Action,
    String,
    Option<String>,
    DriftKind,
    LockLevel,
    Vec<Hazard>,
);

pub fn id(step: &PlanStep) -> StepId {
    (
        step.action,
        step.table.clone(),
        step.column.clone(),
        step.fixes,
        step.lock,
        step.hazards.clone(),
    )
}

/// The case in words, for a failure message.
pub fn describe(case: &Case) -> String {
    let mut out = format!("case: {} tenant `{}`\n", case.dialect, case.tenant);
    for (contract, expected) in case.contracts.iter().zip(&case.expected) {
        out.push_str(&format!(
            "  contract {:?}.{:?}:\n",
            contract.schema, contract.table
        ));
        for c in &contract.columns {
            out.push_str(&format!(
                "    {:?}: {} as {:?}{}{}{}{}{}{}{}\n",
                c.name,
                c.rust_type,
                expected.get(&c.name),
                if c.nullable { " nullable" } else { "" },
                if c.optional { " optional" } else { "" },
                c.default_sql
                    .as_ref()
                    .map(|d| format!(" default {d}"))
                    .unwrap_or_default(),
                c.sql_type
                    .as_ref()
                    .map(|d| format!(" sql_type {d}"))
                    .unwrap_or_default(),
                c.renamed_from
                    .as_ref()
                    .map(|d| format!(" renamed_from {d:?}"))
                    .unwrap_or_default(),
                if c.primary_key { " pk" } else { "" },
                c.references
                    .as_ref()
                    .map(|r| format!(" references {}({})", r.table, r.column))
                    .unwrap_or_default(),
            ));
        }
    }
    for t in &case.live {
        out.push_str(&format!(
            "  live {} {:?}.{:?} pk {:?}:\n",
            t.kind, t.schema, t.name, t.primary_key
        ));
        for c in &t.columns {
            out.push_str(&format!(
                "    {:?}: {} (key {}){}{}\n",
                c.name,
                c.data_type,
                c.type_key,
                if c.nullable { " null" } else { " not null" },
                c.enum_labels
                    .as_ref()
                    .map(|l| format!(" labels {l:?}"))
                    .unwrap_or_default()
            ));
        }
        if let Some(d) = &t.definition {
            out.push_str(&format!("    definition: {d}\n"));
        }
    }
    out.push_str(&format!("  enums: {:?}\n", case.enums));
    out
}
