//! Planner properties over random contract/live pairs, for PostgreSQL, MySQL and SQLite,
//! under both policies that apply (`SafeOnly`, and `Approved` with the plan's hash):
//!
//! 1. **Deterministic**: the same input gives a byte-identical plan (steps, statements,
//!    refusals, hash, shape, JSON and text), also when the live model is assembled in
//!    another order (tables from a `HashMap`, foreign keys and the type catalog shuffled).
//! 2. **Idempotent**: the selected steps, run by an in-memory model of the database
//!    (`planner_properties/apply.rs`, which executes the statements), leave nothing for a
//!    re-plan to do but the steps the policy held back; an applied step never fails.
//! 3. **Never drops contracted data**: every column's data survives every applied step
//!    (renames, type changes and SQLite's table rebuild carry it; nothing is dropped,
//!    narrowed, or dropped-and-not-recreated), extra columns and uncontracted tables
//!    included, and no type change narrows (`planner_properties/narrowing.rs`).
//! 4. **Refuses in words, never panics**: every refusal has a reason that reads as text.
//!
//! The diff's type verdicts come from a model of sqlx's (`planner_properties/types.rs`).
//! Runs with a fixed seed (set `PLANNER_PROPERTIES_SEED` to explore others); a failure
//! prints the seed, the shrunk case and the plans.

mod planner_properties {
    pub mod apply;
    pub mod build;
    pub mod cases;
    pub mod harness;
    pub mod narrowing;
    pub mod sql;
    pub mod types;
}

use contract_core::DriftKind;
use contract_core::plan::{Action, Remediation, TenantPlan};
use planner_properties::build::build;
use planner_properties::cases::{Case, case_spec};
use planner_properties::harness::{StepId, describe, id, model_of, plan};
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

/// Cases per property (each case plans up to three times per policy).
const CASES: u32 = 400;
const DEFAULT_SEED: u64 = 0x0091_A22E_5EED;

fn seed() -> u64 {
    std::env::var("PLANNER_PROPERTIES_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED)
}

fn run(property: &str, test: impl Fn(&Case) -> Result<(), String>) {
    let seed = seed();
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    });
    let result = runner.run(&case_spec(), |spec| {
        let case = build(&spec);
        test(&case).map_err(|why| TestCaseError::fail(format!("{why}\n{}", describe(&case))))
    });
    if let Err(error) = result {
        panic!("{property} failed (PLANNER_PROPERTIES_SEED={seed}):\n{error}");
    }
}

#[test]
fn plans_are_deterministic_whatever_the_order_the_live_model_is_built_in() {
    run("determinism", |case| {
        let model = model_of(case);
        let (first, _) = plan(case, &model, 0);
        let (again, _) = plan(case, &model, 0);
        let (shuffled, _) = plan(case, &model, case.shuffle | 1);
        for (label, other) in [
            ("re-planned", &again),
            ("planned from a shuffled model", &shuffled),
        ] {
            let json = |p: &TenantPlan| serde_json::to_string(p).unwrap_or_default();
            if first != *other
                || json(&first) != json(other)
                || first.to_string() != other.to_string()
            {
                return Err(format!(
                    "the plan differs when {label}:\n{first}\n---\n{other}"
                ));
            }
        }
        Ok(())
    });
}

#[test]
fn refusals_read_as_sentences_and_plans_as_text() {
    run("readable refusals", |case| {
        let model = model_of(case);
        let (plan, _) = plan(case, &model, 0);
        let text = plan.to_string();
        if plan.hash.len() != 64 || !plan.hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("hash `{}` is not a SHA-256 in hex", plan.hash));
        }
        for refusal in &plan.refusals {
            let reason = refusal.reason.as_str();
            let shown = refusal.to_string();
            if reason.trim().len() < 20
                || reason.contains("Some(")
                || reason.contains("\\u{")
                || !shown.ends_with(reason)
                || !text.contains(&shown)
            {
                return Err(format!("refusal does not read well: {shown}"));
            }
        }
        Ok(())
    });
}

#[test]
fn applied_plans_leave_nothing_to_do_and_keep_every_column_of_data() {
    let coverage = std::sync::Mutex::new(std::collections::BTreeMap::<String, usize>::new());
    run("idempotence and data", |case| {
        let start = model_of(case);
        let (first, _) = plan(case, &start, 0);
        for policy in [
            Remediation::SafeOnly,
            Remediation::Approved(first.hash.clone()),
        ] {
            let mut model = start.clone();
            let selection = policy.select(&first);
            if let Ok(mut seen) = coverage.lock() {
                for step in &selection.steps {
                    *seen
                        .entry(format!(
                            "{} {} {}",
                            case.dialect,
                            policy_name(&policy),
                            step.action
                        ))
                        .or_insert(0) += 1;
                }
                for r in &first.refusals {
                    *seen
                        .entry(format!("{} refused {}", case.dialect, r.kind))
                        .or_insert(0) += 1;
                }
            }
            for step in &selection.steps {
                model
                    .apply(step, &case.tenant)
                    .map_err(|e| format!("{policy}: step `{step}` fails: {e}\n{first}"))?;
            }
            let (mut second, mut findings) = plan(case, &model, 0);
            let held_back: Vec<StepId> = first
                .steps
                .iter()
                .filter(|s| !selection.steps.contains(s))
                .map(id)
                .collect();
            // The one drift a plan cannot see before it creates a table or adds a column:
            // the labels the existing enum type lacks or has in excess (a type's live labels
            // are known only through a live column). Missing ones are safe steps, applied by
            // the next pass; extra ones are refused then.
            let created: Vec<(&str, Option<&str>)> = selection
                .steps
                .iter()
                .filter(|s| matches!(s.action, Action::CreateTable | Action::AddColumn))
                .map(|s| (s.table.as_str(), s.column.as_deref()))
                .collect();
            let new_column = |table: &str, column: Option<&str>| {
                created
                    .iter()
                    .any(|(t, c)| *t == table && (c.is_none() || *c == column))
            };
            let follow_ups: Vec<_> = second
                .steps
                .iter()
                .filter(|s| {
                    s.action == Action::AddEnumLabel
                        && s.is_safe()
                        && new_column(&s.table, s.column.as_deref())
                })
                .cloned()
                .collect();
            if !follow_ups.is_empty() {
                for step in &follow_ups {
                    model
                        .apply(step, &case.tenant)
                        .map_err(|e| format!("{policy}: follow-up `{step}` fails: {e}"))?;
                }
                (second, findings) = plan(case, &model, 0);
            }
            let left: Vec<StepId> = second.steps.iter().map(id).collect();
            if left != held_back {
                return Err(format!(
                    "{policy}: after applying, the re-plan is not just the held-back steps:\n{first}\n--- re-plan:\n{second}\n--- findings: {}",
                    findings
                        .iter()
                        .map(|f| format!(
                            "{}.{} {}: {}",
                            f.table,
                            f.column.as_deref().unwrap_or("-"),
                            f.kind,
                            f.actual
                        ))
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
            }
            let refused = |p: &TenantPlan| -> Vec<(String, Option<String>, DriftKind)> {
                let mut r: Vec<_> = p
                    .refusals
                    .iter()
                    .map(|r| (r.table.clone(), r.column.clone(), r.kind))
                    .collect();
                r.sort();
                r.dedup();
                r
            };
            let before = refused(&first);
            let expected = |r: &(String, Option<String>, DriftKind)| {
                before.contains(r)
                    || (r.2 == DriftKind::EnumLabels && new_column(&r.0, r.1.as_deref()))
            };
            if let Some(new) = refused(&second).iter().find(|r| !expected(r)) {
                return Err(format!(
                    "{policy}: applying the plan created drift it refuses: {new:?}\n{first}\n--- re-plan:\n{second}"
                ));
            }
        }
        Ok(())
    });
    // The generator must reach every kind of step the planner writes (else the
    // properties above hold vacuously).
    let seen = coverage.into_inner().unwrap_or_default();
    for needed in [
        "PostgreSQL approved create_table",
        "PostgreSQL approved add_column",
        "PostgreSQL approved rename_column",
        "PostgreSQL approved change_type",
        "PostgreSQL approved set_not_null",
        "PostgreSQL approved add_enum_label",
        "MySQL approved create_table",
        "MySQL approved add_column",
        "MySQL approved rename_column",
        "SQLite approved create_table",
        "SQLite approved add_column",
        "SQLite approved rename_column",
        "SQLite approved change_type",
        "PostgreSQL refused type_mismatch",
        "MySQL refused type_mismatch",
        "SQLite refused nullability",
    ] {
        assert!(
            seen.get(needed).is_some_and(|n| *n >= 3),
            "the cases reached `{needed}` fewer than 3 times: {seen:#?}"
        );
    }
}

fn policy_name(policy: &Remediation) -> &'static str {
    match policy {
        Remediation::Approved(_) => "approved",
        _ => "safe_only",
    }
}
