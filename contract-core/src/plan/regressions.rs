//! Regression tests for planner bugs the property tests
//! (`contract-core/tests/planner_properties.rs`) found, each named after its bug.

use super::tests::{column, live, nullable, plan_for, sqlite_events};
use super::*;
use crate::drift::DriftKind;
use crate::live::LiveColumn;

fn actions(plan: &TenantPlan) -> Vec<(Action, Option<&str>)> {
    plan.steps
        .iter()
        .map(|s| (s.action, s.column.as_deref()))
        .collect()
}

/// The diff judges nothing else of a column whose type does not fit, so the approved
/// plan changed the type and the next pass found the column nullable: a second plan
/// waiting for a second approval.
#[test]
fn a_type_mismatch_hid_the_nullability_drift_so_an_approved_plan_needed_a_second_approval() {
    let contract = super::tests::events(vec![column("at", "DateTime<Utc>")]);
    let table = live(vec![LiveColumn::new("at", "timestamp without time zone")]);
    let plan = plan_for(
        Dialect::Postgres,
        &contract,
        Some(&table),
        &[("at", "TIMESTAMPTZ")],
    );
    assert_eq!(
        actions(&plan),
        [
            (Action::ChangeType, Some("at")),
            (Action::SetNotNull, Some("at"))
        ],
        "{plan}"
    );
    assert!(plan.refusals.is_empty(), "{plan}");
    // SQLite cannot set NOT NULL in place: the rebuild changes the type, and the
    // nullability is refused up front (not discovered after the approval).
    let contract = super::tests::events(vec![column("n", "i64")]);
    let table = sqlite_events(
        vec![LiveColumn::new("n", "TEXT")],
        "CREATE TABLE events (n TEXT)",
        &[],
    );
    let plan = plan_for(
        Dialect::Sqlite,
        &contract,
        Some(&table),
        &[("n", "INTEGER")],
    );
    assert_eq!(actions(&plan), [(Action::ChangeType, Some("n"))], "{plan}");
    let refused: Vec<_> = plan
        .refusals
        .iter()
        .map(|r| (r.column.as_deref(), r.kind))
        .collect();
    assert_eq!(refused, [(Some("n"), DriftKind::Nullability)], "{plan}");
    // A refused type change leaves the nullability hidden: nothing is planned for a
    // column that stays unreadable.
    let contract = super::tests::events(vec![column("n", "i64")]);
    let table = live(vec![LiveColumn::new("n", "text")]);
    let plan = plan_for(Dialect::Postgres, &contract, Some(&table), &[("n", "INT8")]);
    assert!(plan.steps.is_empty(), "{plan}");
    assert_eq!(plan.refusals.len(), 1, "{plan}");
}

/// A column still under its `renamed_from` name was only reported missing: the approved
/// plan renamed it, and the next pass found its nullability (or type): a second approval.
/// Its other steps also have to name the column as it is live, and come before the
/// rename, so that `SafeOnly` can run a safe one while the rename waits.
#[test]
fn a_renamed_column_hid_its_drift_until_after_the_approved_rename() {
    let mut id = column("id", "i64");
    id.renamed_from = Some("old_id".into());
    let mut note = column("note", "String");
    note.renamed_from = Some("old_note".into());
    let contract = super::tests::events(vec![id, note]);
    let table = live(vec![
        LiveColumn::new("old_id", "bigint"),
        LiveColumn::new("old_note", "text").not_null(),
    ]);
    let plan = plan_for(
        Dialect::Postgres,
        &contract,
        Some(&table),
        &[("id", "INT8"), ("note", "VARCHAR")],
    );
    assert_eq!(
        actions(&plan),
        [
            (Action::SetNotNull, Some("id")),
            (Action::ChangeType, Some("note")),
            (Action::RenameColumn, Some("id")),
            (Action::RenameColumn, Some("note")),
        ],
        "{plan}"
    );
    assert_eq!(
        plan.steps[0].statements[2],
        r#"ALTER TABLE "tenant_1"."events" ALTER COLUMN "old_id" SET NOT NULL"#
    );
    assert_eq!(
        plan.steps[1].statements,
        [
            r#"ALTER TABLE "tenant_1"."events" ALTER COLUMN "old_note" TYPE varchar USING "old_note"::varchar"#
        ]
    );
    // text -> varchar is metadata-only: SafeOnly runs it while the renames wait.
    let safe = Remediation::SafeOnly.select(&plan);
    assert_eq!(safe.steps.len(), 1);
    assert_eq!(safe.steps[0].action, Action::ChangeType);
}

/// A new table referencing a table the same plan creates later failed to apply on
/// PostgreSQL and MySQL (`relation "users" does not exist`), rolling the plan back on every
/// pass; so did one referencing a missing table whose creation was refused.
#[test]
fn a_created_table_referenced_a_table_the_plan_created_after_it() {
    let mut order_id = column("id", "i64");
    order_id.primary_key = true;
    let mut user_id = column("user_id", "i64");
    user_id.references = crate::model::Reference::parse("users(id)");
    let orders = TableContract {
        table: "orders".into(),
        ..super::tests::events(vec![order_id, user_id])
    };
    let mut id = column("id", "i64");
    id.primary_key = true;
    let users = TableContract {
        table: "users".into(),
        ..super::tests::events(vec![id])
    };
    let plan = plan_tables(
        Dialect::Postgres,
        &[&orders, &users],
        &[("id", "INT8"), ("user_id", "INT8")],
    );
    let created: Vec<&str> = plan.steps.iter().map(|s| s.table.as_str()).collect();
    assert_eq!(created, ["users", "orders"], "{plan}");
    // `users` cannot be created (a column name with NUL): neither can `orders`.
    let mut users = users;
    users.columns.push(nullable("bad\0name", "Option<i64>"));
    let plan = plan_tables(
        Dialect::Postgres,
        &[&orders, &users],
        &[("id", "INT8"), ("user_id", "INT8")],
    );
    assert!(plan.steps.is_empty(), "{plan}");
    let refused: Vec<&str> = plan.refusals.iter().map(|r| r.table.as_str()).collect();
    assert_eq!(refused, ["users", "orders"], "{plan}");
    assert!(
        plan.refusals[1]
            .reason
            .contains("which is missing and not created"),
        "{plan}"
    );
    // SQLite checks references only when rows change: `orders` is still created.
    let plan = plan_tables(
        Dialect::Sqlite,
        &[&orders, &users],
        &[("id", "INTEGER"), ("user_id", "INTEGER")],
    );
    let created: Vec<&str> = plan.steps.iter().map(|s| s.table.as_str()).collect();
    assert_eq!(created, ["orders"], "{plan}");
    assert_eq!(plan.refusals.len(), 1, "{plan}");
}

/// Plans missing `contracts` together.
fn plan_tables(
    dialect: Dialect,
    contracts: &[&TableContract],
    types: &[(&str, &str)],
) -> TenantPlan {
    let expected: std::collections::BTreeMap<String, String> = types
        .iter()
        .map(|(c, t)| ((*c).to_owned(), (*t).to_owned()))
        .collect();
    let findings: Vec<Vec<crate::drift::Finding>> = contracts
        .iter()
        .map(|c| {
            crate::diff::diff(
                crate::diff::DiffScope {
                    tenant: "tenant_1",
                    schema: "tenant_1",
                    dialect,
                },
                c,
                None,
                &super::tests::ByName(&expected),
            )
        })
        .collect();
    let inputs: Vec<TableInput<'_>> = contracts
        .iter()
        .zip(&findings)
        .map(|(contract, findings)| TableInput {
            contract,
            live: None,
            findings,
            expected_types: &expected,
        })
        .collect();
    let schema = (dialect != Dialect::Sqlite).then_some("tenant_1");
    plan_tenant(dialect, "tenant_1", schema, &inputs, &TypeCatalog::new())
}

/// Two contracts on one table (two structs reading it, or two versions of one) were
/// planned apart: a missing table got two CREATE TABLE, a column both read two ADD
/// COLUMN; the second failed (`already exists`) and the plan rolled back on every pass.
#[test]
fn two_contracts_on_one_table_created_it_and_added_its_columns_twice() {
    let mut note = nullable("note", "Option<String>");
    note.default_sql = Some("''".into());
    let event = super::tests::events(vec![column("id", "i64"), note.clone()]);
    let mut summary = super::tests::events(vec![column("id", "i64"), note, column("kind", "i16")]);
    summary.struct_name = "EventSummary".into();
    summary.columns[1].nullable = false;
    let types = [("id", "INT8"), ("note", "TEXT"), ("kind", "INT2")];
    let plan = plan_tables(Dialect::Postgres, &[&event, &summary], &types);
    assert_eq!(
        plan.statements().collect::<Vec<_>>(),
        [
            r#"CREATE TABLE "tenant_1"."events" ("id" int8 NOT NULL, "note" text NOT NULL DEFAULT '', "kind" int2 NOT NULL)"#
        ],
        "{plan}"
    );
    assert!(plan.refusals.is_empty(), "{plan}");
    // A column both read, missing: added once.
    let table = live(vec![LiveColumn::new("id", "bigint").not_null()]);
    let expected: std::collections::BTreeMap<String, String> = types
        .iter()
        .map(|(c, t)| ((*c).to_owned(), (*t).to_owned()))
        .collect();
    let scope = crate::diff::DiffScope {
        tenant: "tenant_1",
        schema: "tenant_1",
        dialect: Dialect::Postgres,
    };
    let oracle = super::tests::ByName(&expected);
    let findings: Vec<Vec<crate::drift::Finding>> = [&event, &summary]
        .iter()
        .map(|c| crate::diff::diff(scope, c, Some(&table), &oracle))
        .collect();
    let inputs: Vec<TableInput<'_>> = [&event, &summary]
        .iter()
        .zip(&findings)
        .map(|(contract, findings)| TableInput {
            contract,
            live: Some(&table),
            findings,
            expected_types: &expected,
        })
        .collect();
    let plan = plan_tenant(
        Dialect::Postgres,
        "tenant_1",
        Some("tenant_1"),
        &inputs,
        &TypeCatalog::new(),
    );
    let added: Vec<_> = actions(&plan);
    assert_eq!(added, [(Action::AddColumn, Some("note"))], "{plan}");
    assert_eq!(
        plan.refusals
            .iter()
            .map(|r| r.column.as_deref())
            .collect::<Vec<_>>(),
        [Some("kind")],
        "NOT NULL without a default: {plan}"
    );
    // Contracts that disagree on a type: refused with both readings, never planned.
    let mut other = summary.clone();
    other.struct_name = "Other".into();
    other.columns[2].rust_type = "i64".into();
    let mut types_other = expected.clone();
    types_other.insert("kind".into(), "INT8".into());
    let scope = crate::diff::DiffScope {
        tenant: "tenant_1",
        schema: "tenant_1",
        dialect: Dialect::Postgres,
    };
    let a = crate::diff::diff(scope, &summary, None, &super::tests::ByName(&expected));
    let b = crate::diff::diff(scope, &other, None, &super::tests::ByName(&types_other));
    let inputs = [
        TableInput {
            contract: &summary,
            live: None,
            findings: &a,
            expected_types: &expected,
        },
        TableInput {
            contract: &other,
            live: None,
            findings: &b,
            expected_types: &types_other,
        },
    ];
    let plan = plan_tenant(
        Dialect::Postgres,
        "tenant_1",
        Some("tenant_1"),
        &inputs,
        &TypeCatalog::new(),
    );
    assert_eq!(actions(&plan), [(Action::CreateTable, None)], "{plan}");
    assert_eq!(plan.refusals.len(), 1, "{plan}");
    assert_eq!(plan.refusals[0].column.as_deref(), Some("kind"));
    assert!(
        plan.refusals[0].reason.contains(
            "read `kind` as different SQL types (`EventSummary` as INT2, `Other` as INT8)"
        ),
        "{plan}"
    );
}
