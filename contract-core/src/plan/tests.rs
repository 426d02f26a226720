//! Planner rules, each with its exact SQL or refusal.

use std::collections::BTreeMap;

use super::*;
use crate::diff::{DiffScope, TypeFit, TypeOracle, diff};
use crate::live::{LiveColumn, LiveTable};
use crate::model::{ColumnContract, Reference};

/// Judges by canonical PostgreSQL name, like sqlx would for built-ins.
struct ByName<'a>(&'a BTreeMap<String, String>);
impl TypeOracle for ByName<'_> {
    fn fit(&self, _: &TableContract, column: &ColumnContract, live: &LiveColumn) -> TypeFit {
        let expected = self.0.get(&column.name).cloned().unwrap_or_default();
        let compatible = types::pg_canonical(&expected) == types::pg_canonical(&live.type_key)
            || (types::pg_canonical(&expected) == "text"
                && types::pg_canonical(&live.type_key) == "varchar");
        TypeFit {
            compatible,
            expected_sql_type: expected,
            risk: None,
        }
    }
}

fn column(name: &str, rust: &str) -> ColumnContract {
    ColumnContract::new(name, rust)
}

fn events(columns: Vec<ColumnContract>) -> TableContract {
    TableContract {
        struct_name: "Event".into(),
        schema: None,
        table: "events".into(),
        columns,
    }
}

fn plan_for(
    dialect: Dialect,
    contract: &TableContract,
    live: Option<&LiveTable>,
    types: &[(&str, &str)],
) -> TenantPlan {
    let expected: BTreeMap<String, String> = types
        .iter()
        .map(|(c, t)| ((*c).to_owned(), (*t).to_owned()))
        .collect();
    let findings = diff(
        DiffScope {
            tenant: "tenant_1",
            schema: "tenant_1",
        },
        contract,
        live,
        &ByName(&expected),
    );
    let input = TableInput {
        contract,
        live,
        findings: &findings,
        expected_types: &expected,
    };
    let schema = (dialect != Dialect::Sqlite).then_some("tenant_1");
    plan_tenant(dialect, "tenant_1", schema, &[input])
}

fn live(columns: Vec<LiveColumn>) -> LiveTable {
    let mut t = LiveTable::new("tenant_1", "events");
    t.columns = columns;
    t
}

#[test]
fn plan_adds_nullable_column_with_contract_default_safely() {
    let mut meta = column("event_metadata", "Option<Value>");
    meta.nullable = true;
    meta.default_sql = Some("'{}'".into());
    let contract = events(vec![column("id", "i64"), meta]);
    let live = live(vec![LiveColumn::new("id", "bigint").not_null()]);
    let plan = plan_for(
        Dialect::Postgres,
        &contract,
        Some(&live),
        &[("id", "INT8"), ("event_metadata", "JSONB")],
    );
    assert_eq!(
        plan.statements().collect::<Vec<_>>(),
        [r#"ALTER TABLE "tenant_1"."events" ADD COLUMN "event_metadata" jsonb DEFAULT '{}'"#]
    );
    assert!(!plan.needs_approval());
    assert_eq!(plan.steps[0].lock, LockLevel::AccessExclusiveBrief);
}

#[test]
fn plan_adds_not_null_column_only_with_a_default() {
    let mut with_default = column("n", "i64");
    with_default.default_sql = Some("0".into());
    let contract = events(vec![column("id", "i64"), with_default, column("m", "i64")]);
    let live = live(vec![LiveColumn::new("id", "bigint").not_null()]);
    let plan = plan_for(
        Dialect::Postgres,
        &contract,
        Some(&live),
        &[("id", "INT8"), ("n", "INT8"), ("m", "INT8")],
    );
    assert_eq!(
        plan.statements().collect::<Vec<_>>(),
        [r#"ALTER TABLE "tenant_1"."events" ADD COLUMN "n" int8 NOT NULL DEFAULT 0"#]
    );
    assert_eq!(plan.refusals.len(), 1);
    assert_eq!(plan.refusals[0].column.as_deref(), Some("m"));
    assert!(
        plan.refusals[0].reason.contains("NOT NULL with no default"),
        "{}",
        plan.refusals[0].reason
    );
}

#[test]
fn plan_flags_volatile_default_as_rewrite() {
    let mut at = column("created_at", "DateTime<Utc>");
    at.default_sql = Some("clock_timestamp()".into());
    let contract = events(vec![at]);
    let live = live(vec![]);
    let plan = plan_for(
        Dialect::Postgres,
        &contract,
        Some(&live),
        &[("created_at", "TIMESTAMPTZ")],
    );
    assert_eq!(
        plan.hazards(),
        [Hazard::TableRewrite, Hazard::AccessExclusiveLock]
    );
}

#[test]
fn plan_creates_missing_table_with_keys() {
    let mut id = column("id", "i64");
    id.primary_key = true;
    let mut user = column("user_id", "i64");
    user.references = Reference::parse("users(id)");
    let mut note = column("note", "Option<String>");
    note.nullable = true;
    let contract = events(vec![id, user, note]);
    let plan = plan_for(
        Dialect::Postgres,
        &contract,
        None,
        &[("id", "INT8"), ("user_id", "INT8"), ("note", "TEXT")],
    );
    assert_eq!(
        plan.statements().collect::<Vec<_>>(),
        [concat!(
            r#"CREATE TABLE "tenant_1"."events" ("id" int8 NOT NULL, "user_id" int8 NOT NULL, "note" text, "#,
            r#"PRIMARY KEY ("id"), CONSTRAINT "events_user_id_fkey" FOREIGN KEY ("user_id") REFERENCES "tenant_1"."users" ("id"))"#
        )]
    );
    assert!(!plan.needs_approval());
}

#[test]
fn plan_widens_int4_to_int8_with_using_and_rewrite_hazard() {
    let contract = events(vec![column("user_id", "i64")]);
    let live = live(vec![LiveColumn::new("user_id", "integer").not_null()]);
    let plan = plan_for(
        Dialect::Postgres,
        &contract,
        Some(&live),
        &[("user_id", "INT8")],
    );
    assert_eq!(
        plan.statements().collect::<Vec<_>>(),
        [
            r#"ALTER TABLE "tenant_1"."events" ALTER COLUMN "user_id" TYPE int8 USING "user_id"::int8"#,
            r#"ANALYZE "tenant_1"."events" ("user_id")"#,
        ]
    );
    assert_eq!(
        plan.hazards(),
        [Hazard::TableRewrite, Hazard::AccessExclusiveLock]
    );
    assert!(plan.needs_approval());
    assert_eq!(Remediation::SafeOnly.select(&plan).steps.len(), 0);
    assert!(Remediation::SafeOnly.select(&plan).awaiting_approval);
    assert_eq!(
        Remediation::Approved(plan.hash.clone())
            .select(&plan)
            .steps
            .len(),
        1
    );
    assert_eq!(
        Remediation::Approved("stale".into())
            .select(&plan)
            .steps
            .len(),
        0
    );
}

#[test]
fn plan_changes_timestamp_to_timestamptz_under_utc_with_index_rebuild() {
    let contract = events(vec![column("at", "DateTime<Utc>")]);
    let live = live(vec![
        LiveColumn::new("at", "timestamp without time zone").not_null(),
    ]);
    let plan = plan_for(
        Dialect::Postgres,
        &contract,
        Some(&live),
        &[("at", "TIMESTAMPTZ")],
    );
    assert_eq!(plan.steps[0].statements[0], "SET LOCAL TimeZone = 'UTC'");
    assert_eq!(
        plan.hazards(),
        [Hazard::AccessExclusiveLock, Hazard::IndexRebuild]
    );
}

#[test]
fn plan_refuses_narrowing_may_fail_and_unknown_casts() {
    for (live_type, expected, why) in [
        ("bigint", "INT4", "narrows or loses data"),
        ("double precision", "FLOAT4", "narrows or loses data"),
        ("text", "INT8", "fails on values that do not convert"),
        ("text", "JSONB", "fails on values that do not convert"),
        ("boolean", "INT4", "no safe conversion"),
    ] {
        let contract = events(vec![column("c", "T")]);
        let live = live(vec![LiveColumn::new("c", live_type).not_null()]);
        let plan = plan_for(
            Dialect::Postgres,
            &contract,
            Some(&live),
            &[("c", expected)],
        );
        assert!(plan.steps.is_empty(), "{live_type} -> {expected}");
        assert_eq!(plan.refusals.len(), 1);
        assert!(
            plan.refusals[0].reason.contains(why),
            "{}",
            plan.refusals[0].reason
        );
    }
}

#[test]
fn plan_sets_not_null_with_the_online_sequence() {
    let contract = events(vec![column("user_id", "i64")]);
    let live = live(vec![LiveColumn::new("user_id", "bigint")]);
    let plan = plan_for(
        Dialect::Postgres,
        &contract,
        Some(&live),
        &[("user_id", "INT8")],
    );
    assert_eq!(
        plan.statements().collect::<Vec<_>>(),
        [
            r#"ALTER TABLE "tenant_1"."events" ADD CONSTRAINT "events_user_id_not_null" CHECK ("user_id" IS NOT NULL) NOT VALID"#,
            r#"ALTER TABLE "tenant_1"."events" VALIDATE CONSTRAINT "events_user_id_not_null""#,
            r#"ALTER TABLE "tenant_1"."events" ALTER COLUMN "user_id" SET NOT NULL"#,
            r#"ALTER TABLE "tenant_1"."events" DROP CONSTRAINT "events_user_id_not_null""#,
        ]
    );
    assert_eq!(plan.hazards(), [Hazard::ValidatesRows]);
}

#[test]
fn plan_adds_foreign_key_not_valid_then_validate() {
    let mut user = column("user_id", "i64");
    user.references = Reference::parse("users(id)");
    let contract = events(vec![user]);
    let live = live(vec![LiveColumn::new("user_id", "bigint").not_null()]);
    let plan = plan_for(
        Dialect::Postgres,
        &contract,
        Some(&live),
        &[("user_id", "INT8")],
    );
    assert_eq!(
        plan.statements().collect::<Vec<_>>(),
        [
            r#"ALTER TABLE "tenant_1"."events" ADD CONSTRAINT "events_user_id_fkey" FOREIGN KEY ("user_id") REFERENCES "tenant_1"."users" ("id") NOT VALID"#,
            r#"ALTER TABLE "tenant_1"."events" VALIDATE CONSTRAINT "events_user_id_fkey""#,
        ]
    );
    assert_eq!(
        plan.hazards(),
        [Hazard::ValidatesRows, Hazard::LocksReferencedTable]
    );
}

#[test]
fn plan_renames_only_a_declared_former_name() {
    let mut renamed = column("payload", "Value");
    renamed.renamed_from = Some("body".into());
    let contract = events(vec![renamed.clone()]);
    let with_old = live(vec![LiveColumn::new("body", "jsonb").not_null()]);
    let plan = plan_for(
        Dialect::Postgres,
        &contract,
        Some(&with_old),
        &[("payload", "JSONB")],
    );
    assert_eq!(
        plan.statements().collect::<Vec<_>>(),
        [r#"ALTER TABLE "tenant_1"."events" RENAME COLUMN "body" TO "payload""#]
    );
    assert_eq!(plan.hazards(), [Hazard::RenamesColumn]);
    // Without the old column there is nothing to rename; a NOT NULL add without default is refused.
    let plan = plan_for(
        Dialect::Postgres,
        &contract,
        Some(&live(vec![])),
        &[("payload", "JSONB")],
    );
    assert!(plan.steps.is_empty());
    assert_eq!(plan.refusals.len(), 1);
}

#[test]
fn plan_never_drops_extra_columns() {
    let contract = events(vec![column("id", "i64")]);
    let live = live(vec![
        LiveColumn::new("id", "bigint").not_null(),
        LiveColumn::new("legacy", "text"),
    ]);
    let plan = plan_for(Dialect::Postgres, &contract, Some(&live), &[("id", "INT8")]);
    assert!(plan.is_empty());
}

#[test]
fn plan_mysql_adds_instantly_and_refuses_type_changes() {
    let mut note = column("note", "Option<String>");
    note.nullable = true;
    let contract = events(vec![column("id", "i64"), note]);
    let live_table = live(vec![LiveColumn::new("id", "int").not_null()]);
    let plan = plan_for(
        Dialect::MySql,
        &contract,
        Some(&live_table),
        &[("id", "BIGINT"), ("note", "VARCHAR")],
    );
    assert_eq!(
        plan.statements().collect::<Vec<_>>(),
        ["ALTER TABLE `tenant_1`.`events` ADD COLUMN `note` TEXT, ALGORITHM=INSTANT"]
    );
    assert_eq!(plan.refusals.len(), 1);
    assert!(
        plan.refusals[0]
            .reason
            .contains("copies the table on MySQL"),
        "{}",
        plan.refusals[0].reason
    );
}

#[test]
fn plan_mysql_adds_json_fields_as_json_not_binary() {
    // sqlx names the MySQL type of `Json<T>` and `serde_json::Value` `BINARY`, like `Uuid`.
    let mut meta = column(
        "event_metadata",
        "Option<sqlx::types::Json<serde_json::Value>>",
    );
    meta.nullable = true;
    meta.default_sql = Some("'{}'".into());
    let mut raw = column("raw", "Option<Value>");
    raw.nullable = true;
    let mut id = column("user_uuid", "Option<Uuid>");
    id.nullable = true;
    let contract = events(vec![column("id", "i64"), meta, raw, id]);
    let live_table = live(vec![LiveColumn::new("id", "bigint").not_null()]);
    let plan = plan_for(
        Dialect::MySql,
        &contract,
        Some(&live_table),
        &[
            ("id", "BIGINT"),
            ("event_metadata", "BINARY"),
            ("raw", "BINARY"),
            ("user_uuid", "BINARY"),
        ],
    );
    assert_eq!(
        plan.statements().collect::<Vec<_>>(),
        [
            "ALTER TABLE `tenant_1`.`events` ADD COLUMN `event_metadata` JSON DEFAULT '{}', ALGORITHM=INSTANT",
            "ALTER TABLE `tenant_1`.`events` ADD COLUMN `raw` JSON, ALGORITHM=INSTANT",
            "ALTER TABLE `tenant_1`.`events` ADD COLUMN `user_uuid` BINARY(16), ALGORITHM=INSTANT",
        ]
    );
}

#[test]
fn plan_sqlite_adds_columns_unqualified_and_refuses_rebuilds() {
    let mut note = column("note", "Option<String>");
    note.nullable = true;
    let contract = events(vec![column("id", "i64"), note]);
    let live_table = live(vec![LiveColumn::new("id", "TEXT").not_null()]);
    let plan = plan_for(
        Dialect::Sqlite,
        &contract,
        Some(&live_table),
        &[("id", "INTEGER"), ("note", "TEXT")],
    );
    assert_eq!(
        plan.statements().collect::<Vec<_>>(),
        [r#"ALTER TABLE "events" ADD COLUMN "note" TEXT"#]
    );
    assert!(plan.refusals[0].reason.contains("table rebuild"));
}

#[test]
fn plan_is_deterministic_and_hash_depends_on_sql_and_tenant() {
    let contract = events(vec![column("user_id", "i64")]);
    let live = live(vec![LiveColumn::new("user_id", "integer").not_null()]);
    let a = plan_for(
        Dialect::Postgres,
        &contract,
        Some(&live),
        &[("user_id", "INT8")],
    );
    let b = plan_for(
        Dialect::Postgres,
        &contract,
        Some(&live),
        &[("user_id", "INT8")],
    );
    assert_eq!(a, b);
    assert_eq!(a.hash.len(), 64);
    let other = TenantPlan::new("tenant_2", Dialect::Postgres, a.steps.clone(), vec![]);
    assert_ne!(a.hash, other.hash);
}

#[test]
fn plan_quotes_hostile_identifiers_and_hashes_long_constraint_names() {
    let mut user = column("u\"; DROP TABLE x; --", "i64");
    user.references = Reference::parse("users(id)");
    let contract = TableContract {
        struct_name: "E".into(),
        schema: None,
        table: "t".repeat(60),
        columns: vec![user],
    };
    let plan = plan_for(
        Dialect::Postgres,
        &contract,
        None,
        &[("u\"; DROP TABLE x; --", "INT8")],
    );
    let sql = plan.statements().next().unwrap_or_default().to_owned();
    assert!(sql.contains(r#""u""; DROP TABLE x; --" int8"#), "{sql}");
    let fk = sql
        .split("CONSTRAINT \"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_default();
    assert_eq!(fk.len(), 63, "{fk}");
}
