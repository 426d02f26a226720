//! Planner rules, each with its exact SQL or refusal.

use std::collections::BTreeMap;

use super::*;
use crate::diff::{DiffScope, TypeFit, TypeOracle, diff};
use crate::drift::DriftKind;
use crate::live::{LiveColumn, LiveTable};
use crate::model::{ColumnContract, Reference};

/// Judges by canonical PostgreSQL name, like sqlx would for built-ins.
pub(super) struct ByName<'a>(pub(super) &'a BTreeMap<String, String>);
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

pub(super) fn column(name: &str, rust: &str) -> ColumnContract {
    ColumnContract::new(name, rust)
}

/// A nullable (`Option<_>`) contracted column.
pub(super) fn nullable(name: &str, rust: &str) -> ColumnContract {
    let mut c = column(name, rust);
    c.nullable = true;
    c
}

pub(super) fn events(columns: Vec<ColumnContract>) -> TableContract {
    TableContract {
        struct_name: "Event".into(),
        schema: None,
        table: "events".into(),
        columns,
    }
}

pub(super) fn plan_for(
    dialect: Dialect,
    contract: &TableContract,
    live: Option<&LiveTable>,
    types: &[(&str, &str)],
) -> TenantPlan {
    plan_for_tenant("tenant_1", dialect, contract, live, types)
}

fn plan_for_tenant(
    tenant: &str,
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
            tenant,
            schema: tenant,
            dialect,
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
    let schema = (dialect != Dialect::Sqlite).then_some(tenant);
    plan_tenant(dialect, tenant, schema, &[input], &TypeCatalog::new())
}

pub(super) fn live(columns: Vec<LiveColumn>) -> LiveTable {
    let mut t = LiveTable::new("tenant_1", "events");
    t.columns = columns;
    t
}

#[test]
fn plan_adds_nullable_column_with_contract_default_safely() {
    let mut meta = nullable("event_metadata", "Option<Value>");
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
    let note = nullable("note", "Option<String>");
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
    let note = nullable("note", "Option<String>");
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
    let mut meta = nullable(
        "event_metadata",
        "Option<sqlx::types::Json<serde_json::Value>>",
    );
    meta.default_sql = Some("'{}'".into());
    let raw = nullable("raw", "Option<Value>");
    let id = nullable("user_uuid", "Option<Uuid>");
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
fn plan_sqlite_adds_json_fields_as_json_not_text() {
    // sqlx names the SQLite type of `Json<T>` `TEXT`; a `TEXT` column is at risk for a JSON
    // field (the oracle says so), so the remediation must declare `JSON` to converge.
    let mut meta = nullable(
        "event_metadata",
        "Option<sqlx::types::Json<serde_json::Value>>",
    );
    meta.default_sql = Some("'{}'".into());
    let contract = events(vec![column("id", "i64"), meta]);
    let live_table = live(vec![LiveColumn::new("id", "INTEGER").not_null()]);
    let plan = plan_for(
        Dialect::Sqlite,
        &contract,
        Some(&live_table),
        &[("id", "INTEGER"), ("event_metadata", "TEXT")],
    );
    assert_eq!(
        plan.statements().collect::<Vec<_>>(),
        [r#"ALTER TABLE "events" ADD COLUMN "event_metadata" JSON DEFAULT '{}'"#]
    );
}

#[test]
fn plan_renames_a_column_whose_name_differs_only_in_case() {
    let contract = events(vec![column("id", "i64"), column("user_id", "i64")]);
    let mixed = live(vec![
        LiveColumn::new("id", "BIGINT").not_null(),
        LiveColumn::new("User_Id", "BIGINT").not_null(),
    ]);
    let types = [("id", "BIGINT"), ("user_id", "BIGINT")];
    // SQLite and MySQL: adding `user_id` would collide with `User_Id`; renaming fixes the
    // spelling rows carry (an approval: readers of `User_Id` by exact name would break).
    for (dialect, statement) in [
        (
            Dialect::Sqlite,
            r#"ALTER TABLE "events" RENAME COLUMN "User_Id" TO "user_id""#,
        ),
        (
            Dialect::MySql,
            "ALTER TABLE `tenant_1`.`events` RENAME COLUMN `User_Id` TO `user_id`, ALGORITHM=INPLACE, LOCK=NONE",
        ),
    ] {
        let plan = plan_for(dialect, &contract, Some(&mixed), &types);
        assert_eq!(plan.statements().collect::<Vec<_>>(), [statement]);
        assert_eq!(plan.hazards(), [Hazard::RenamesColumn]);
    }
    // PostgreSQL: `"User_Id"` is another column; `user_id` is added (refused here: NOT
    // NULL without a default).
    let plan = plan_for(Dialect::Postgres, &contract, Some(&mixed), &types);
    assert!(plan.steps.is_empty());
    assert!(plan.refusals[0].reason.contains("NOT NULL with no default"));
}

#[test]
fn plan_sqlite_rebuilds_a_table_named_in_another_case_under_its_own_name() {
    let contract = events(vec![column("id", "i64"), column("user_id", "i64")]);
    let mut live_table = sqlite_events(
        vec![
            LiveColumn::new("id", "INTEGER").not_null(),
            LiveColumn::new("USER_ID", "TEXT").not_null(),
        ],
        "CREATE TABLE Events (id INTEGER PRIMARY KEY, USER_ID TEXT NOT NULL)",
        &["CREATE INDEX events_user ON Events (USER_ID)"],
    );
    live_table.name = "Events".into();
    let plan = plan_for(
        Dialect::Sqlite,
        &contract,
        Some(&live_table),
        &[("id", "INTEGER"), ("user_id", "INTEGER")],
    );
    assert!(plan.refusals.is_empty(), "{:?}", plan.refusals);
    let statements: Vec<&str> = plan.statements().collect();
    assert_eq!(
        statements[0],
        r#"CREATE TABLE "Events__contract_rebuild" (id INTEGER PRIMARY KEY, USER_ID INTEGER NOT NULL)"#
    );
    // The rebuild keeps the live names; the rename of the column's spelling comes after.
    assert_eq!(
        &statements[statements.len() - 4..],
        [
            r#"DROP TABLE "Events""#,
            r#"ALTER TABLE "Events__contract_rebuild" RENAME TO "Events""#,
            "CREATE INDEX events_user ON Events (USER_ID)",
            r#"ALTER TABLE "events" RENAME COLUMN "USER_ID" TO "user_id""#,
        ]
    );
}

/// A SQLite `events` table as introspected, with its definition text and dependents.
pub(super) fn sqlite_events(
    columns: Vec<LiveColumn>,
    definition: &str,
    dependents: &[&str],
) -> LiveTable {
    let mut t = live(columns);
    t.definition = Some(definition.to_owned());
    t.dependents = dependents.iter().map(|d| (*d).to_owned()).collect();
    t
}

#[test]
fn plan_sqlite_adds_columns_unqualified_and_rebuilds_for_a_type_change_first() {
    let note = nullable("note", "Option<String>");
    let contract = events(vec![column("id", "i64"), note]);
    let live_table = sqlite_events(
        vec![LiveColumn::new("id", "TEXT").not_null()],
        "CREATE TABLE events (id TEXT NOT NULL)",
        &[],
    );
    let plan = plan_for(
        Dialect::Sqlite,
        &contract,
        Some(&live_table),
        &[("id", "INTEGER"), ("note", "TEXT")],
    );
    assert!(plan.refusals.is_empty(), "{:?}", plan.refusals);
    // The rebuild re-creates the table from its current definition, so it runs before the
    // table's other steps (an added column would otherwise be lost by the copy).
    assert_eq!(
        plan.statements().collect::<Vec<_>>(),
        [
            r#"CREATE TABLE "events__contract_rebuild" (id INTEGER NOT NULL)"#,
            r#"INSERT INTO "events__contract_rebuild" SELECT * FROM "events""#,
            r#"CREATE TEMP TABLE "contract_rebuild_check" ("id" INTEGER CONSTRAINT "id_values_convert_to_integer" CHECK ("id"))"#,
            r#"INSERT INTO "temp"."contract_rebuild_check" SELECT NOT EXISTS (SELECT 1 FROM "events__contract_rebuild" WHERE typeof("id") NOT IN ('integer', 'null'))"#,
            r#"DROP TABLE "temp"."contract_rebuild_check""#,
            r#"DROP TABLE "events""#,
            r#"ALTER TABLE "events__contract_rebuild" RENAME TO "events""#,
            r#"ALTER TABLE "events" ADD COLUMN "note" TEXT"#,
        ]
    );
    assert_eq!(plan.steps[0].action, Action::ChangeType);
    assert_eq!(plan.steps[0].column.as_deref(), Some("id"));
    assert_eq!(
        plan.hazards(),
        [Hazard::ValidatesRows, Hazard::TableRebuild]
    );
    assert!(plan.needs_approval());
    // SafeOnly adds the column; the rebuild waits for an approval of this exact plan.
    let safe = Remediation::SafeOnly.select(&plan);
    assert_eq!(safe.steps.len(), 1);
    assert!(safe.awaiting_approval);
    assert_eq!(
        Remediation::Approved(plan.hash.clone())
            .select(&plan)
            .steps
            .len(),
        2
    );
}

#[test]
fn plan_sqlite_rebuild_rewrites_only_the_type_and_keeps_indexes_triggers_and_expressions() {
    let hostile = "we\"ird) col";
    let note = nullable("note", "Option<String>");
    let mut score = column("score", "f64");
    score.nullable = false;
    let contract = events(vec![
        column("id", "i64"),
        column(hostile, "i64"),
        note,
        score,
    ]);
    let definition = concat!(
        "CREATE TABLE events (\n",
        "  id INTEGER PRIMARY KEY AUTOINCREMENT,\n",
        "  \"we\"\"ird) col\" varchar (20) NOT NULL CHECK (\"we\"\"ird) col\" <> 'x)'),\n",
        "  note TEXT DEFAULT (printf('%s(%d)', 'a,b', 1)), -- a comment (with parens\n",
        "  score /* untyped */ NOT NULL DEFAULT (0.5),\n",
        "  CHECK (length(note) < 100)\n",
        ")"
    );
    let index = r#"CREATE INDEX "events_weird" ON events ("we""ird) col")"#;
    let trigger = "CREATE TRIGGER events_touch AFTER UPDATE ON events BEGIN UPDATE events SET note = 'x;y' WHERE id = new.id; END";
    let live_table = sqlite_events(
        vec![
            LiveColumn::new("id", "INTEGER").not_null(),
            LiveColumn::new(hostile, "varchar (20)").not_null(),
            LiveColumn::new("note", "TEXT"),
            LiveColumn::new("score", "").not_null(),
        ],
        definition,
        &[index, trigger],
    );
    let plan = plan_for(
        Dialect::Sqlite,
        &contract,
        Some(&live_table),
        &[
            ("id", "INTEGER"),
            (hostile, "INTEGER"),
            ("note", "TEXT"),
            ("score", "REAL"),
        ],
    );
    assert!(plan.refusals.is_empty(), "{:?}", plan.refusals);
    assert_eq!(plan.steps.len(), 1, "one rebuild for both columns");
    assert_eq!(plan.steps[0].column, None);
    assert_eq!(
        plan.statements().collect::<Vec<_>>(),
        [
            concat!(
                "CREATE TABLE \"events__contract_rebuild\" (\n",
                "  id INTEGER PRIMARY KEY AUTOINCREMENT,\n",
                "  \"we\"\"ird) col\" INTEGER NOT NULL CHECK (\"we\"\"ird) col\" <> 'x)'),\n",
                "  note TEXT DEFAULT (printf('%s(%d)', 'a,b', 1)), -- a comment (with parens\n",
                "  score REAL /* untyped */ NOT NULL DEFAULT (0.5),\n",
                "  CHECK (length(note) < 100)\n",
                ")"
            ),
            r#"INSERT INTO "events__contract_rebuild" SELECT * FROM "events""#,
            concat!(
                r#"CREATE TEMP TABLE "contract_rebuild_check" ("#,
                r#""we""ird) col" INTEGER CONSTRAINT "we""ird) col_values_convert_to_integer" CHECK ("we""ird) col"), "#,
                r#""score" INTEGER CONSTRAINT "score_values_convert_to_real" CHECK ("score"))"#
            ),
            concat!(
                r#"INSERT INTO "temp"."contract_rebuild_check" SELECT "#,
                r#"NOT EXISTS (SELECT 1 FROM "events__contract_rebuild" WHERE typeof("we""ird) col") NOT IN ('integer', 'null')), "#,
                r#"NOT EXISTS (SELECT 1 FROM "events__contract_rebuild" WHERE typeof("score") NOT IN ('real', 'null'))"#
            ),
            r#"DROP TABLE "temp"."contract_rebuild_check""#,
            "DELETE FROM sqlite_sequence WHERE name = 'events__contract_rebuild'",
            "INSERT INTO sqlite_sequence (name, seq) SELECT 'events__contract_rebuild', seq FROM sqlite_sequence WHERE name = 'events'",
            r#"DROP TABLE "events""#,
            r#"ALTER TABLE "events__contract_rebuild" RENAME TO "events""#,
            index,
            trigger,
        ]
    );
    // Same inputs, same SQL and hash; a changed index changes the plan.
    let again = plan_for(
        Dialect::Sqlite,
        &contract,
        Some(&live_table),
        &[
            ("id", "INTEGER"),
            (hostile, "INTEGER"),
            ("note", "TEXT"),
            ("score", "REAL"),
        ],
    );
    assert_eq!(plan, again);
    let mut other = live_table.clone();
    other.dependents.pop();
    let changed = plan_for(
        Dialect::Sqlite,
        &contract,
        Some(&other),
        &[
            ("id", "INTEGER"),
            (hostile, "INTEGER"),
            ("note", "TEXT"),
            ("score", "REAL"),
        ],
    );
    assert_ne!(plan.hash, changed.hash);
}

#[test]
fn plan_sqlite_refuses_rebuilds_it_cannot_plan_unambiguously() {
    let contract = events(vec![column("id", "i64"), column("user_id", "i64")]);
    let columns = || {
        vec![
            LiveColumn::new("id", "INTEGER").not_null(),
            LiveColumn::new("user_id", "TEXT").not_null(),
        ]
    };
    let plain = "CREATE TABLE events (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL)";
    let mut viewed = sqlite_events(columns(), plain, &[]);
    viewed.referenced_by = vec![r#"view "recent_events""#.into()];
    let mut undefined = sqlite_events(columns(), plain, &[]);
    undefined.definition = None;
    let cases = [
        (viewed, "INTEGER", r#"refer to it: view "recent_events""#),
        (undefined, "INTEGER", "was not introspected"),
        (
            sqlite_events(
                columns(),
                "CREATE TABLE events (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL, u2 INTEGER AS (user_id + 1))",
                &[],
            ),
            "INTEGER",
            "generated column",
        ),
        (
            sqlite_events(
                columns(),
                "CREATE TABLE events (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL) STRICT",
                &[],
            ),
            "BOOLEAN",
            "STRICT table",
        ),
        (
            sqlite_events(columns(), plain, &[]),
            "STRING",
            "no storage-class check",
        ),
        (
            sqlite_events(
                columns(),
                "CREATE TABLE events (id INTEGER PRIMARY KEY, user_id VARCHAR NOT NULL)",
                &[],
            ),
            "INTEGER",
            "the catalog as `TEXT`",
        ),
        (
            sqlite_events(
                columns(),
                "CREATE VIRTUAL TABLE events USING fts5(user_id)",
                &[],
            ),
            "INTEGER",
            "not a plain CREATE TABLE",
        ),
    ];
    for (live_table, to, why) in cases {
        let plan = plan_for(
            Dialect::Sqlite,
            &contract,
            Some(&live_table),
            &[("id", "INTEGER"), ("user_id", to)],
        );
        assert!(plan.steps.is_empty(), "{why}: {:?}", plan.steps);
        assert_eq!(plan.refusals.len(), 1, "{why}");
        assert_eq!(plan.refusals[0].kind, DriftKind::TypeMismatch);
        assert_eq!(plan.refusals[0].column.as_deref(), Some("user_id"));
        assert!(
            plan.refusals[0].reason.contains(why),
            "{why}: {}",
            plan.refusals[0].reason
        );
    }
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

fn mood_column(
    expected: &[&str],
    live_labels: &[&str],
    type_key: &str,
) -> (TableContract, LiveTable) {
    let mut mood = column("mood", "Mood");
    mood.enum_labels = Some(expected.iter().map(|l| (*l).to_owned()).collect());
    let mut live_mood = LiveColumn::new("mood", type_key).not_null();
    live_mood.enum_labels = Some(live_labels.iter().map(|l| (*l).to_owned()).collect());
    (events(vec![mood]), live(vec![live_mood]))
}

#[test]
fn plan_adds_missing_enum_labels_safely_and_refuses_to_remove_any() {
    let (contract, table) = mood_column(
        &["happy", "sad", "it's meh"],
        &["happy", "sad"],
        "tenant_1.mood",
    );
    let plan = plan_for(
        Dialect::Postgres,
        &contract,
        Some(&table),
        &[("mood", "tenant_1.mood")],
    );
    assert_eq!(
        plan.statements().collect::<Vec<_>>(),
        [r#"ALTER TYPE "tenant_1"."mood" ADD VALUE IF NOT EXISTS 'it''s meh'"#]
    );
    assert!(!plan.needs_approval());

    let (contract, table) = mood_column(&["happy"], &["happy", "angry"], "tenant_1.mood");
    let plan = plan_for(
        Dialect::Postgres,
        &contract,
        Some(&table),
        &[("mood", "tenant_1.mood")],
    );
    assert!(plan.steps.is_empty());
    assert!(
        plan.refusals[0]
            .reason
            .contains("add the variants to the Rust enum"),
        "{}",
        plan.refusals[0].reason
    );

    let (contract, table) = mood_column(&["happy", "sad"], &["happy"], "mood");
    let plan = plan_for(
        Dialect::Postgres,
        &contract,
        Some(&table),
        &[("mood", "mood")],
    );
    assert!(
        plan.refusals[0].reason.contains("not schema-qualified"),
        "{}",
        plan.refusals[0].reason
    );
}

#[test]
fn plan_widens_a_column_narrower_than_the_declared_sql_type_in_place() {
    let mut note = column("note", "String");
    note.sql_type = Some("varchar(100)".into());
    let contract = events(vec![note.clone()]);
    let narrow = live(vec![
        LiveColumn::new("note", "character varying(50)").not_null(),
    ]);
    let finding = crate::drift::Finding {
        tenant: "tenant_1".into(),
        schema: "tenant_1".into(),
        table: "events".into(),
        column: Some("note".into()),
        kind: crate::drift::DriftKind::Width,
        severity: crate::drift::Severity::AtRisk,
        expected: "varchar(100)".into(),
        actual: "character varying(50)".into(),
        contract: "Event".into(),
    };
    let expected = BTreeMap::from([("note".to_owned(), "TEXT".to_owned())]);
    let input = TableInput {
        contract: &contract,
        live: Some(&narrow),
        findings: std::slice::from_ref(&finding),
        expected_types: &expected,
    };
    let plan = plan_tenant(
        Dialect::Postgres,
        "tenant_1",
        Some("tenant_1"),
        &[input],
        &TypeCatalog::new(),
    );
    assert_eq!(
        plan.statements().collect::<Vec<_>>(),
        [
            r#"ALTER TABLE "tenant_1"."events" ALTER COLUMN "note" TYPE varchar(100) USING "note"::varchar(100)"#
        ]
    );
    assert!(
        !plan.needs_approval(),
        "varchar(n) -> varchar(m > n) is metadata-only"
    );

    let wide = live(vec![
        LiveColumn::new("note", "character varying(200)").not_null(),
    ]);
    let input = TableInput {
        contract: &contract,
        live: Some(&wide),
        findings: std::slice::from_ref(&finding),
        expected_types: &expected,
    };
    let plan = plan_tenant(
        Dialect::Postgres,
        "tenant_1",
        Some("tenant_1"),
        &[input],
        &TypeCatalog::new(),
    );
    assert!(plan.steps.is_empty());
    assert!(
        plan.refusals[0].reason.contains("narrows or loses data"),
        "{}",
        plan.refusals[0].reason
    );
}

#[test]
fn nothing_is_altered_on_a_relation_that_is_not_a_table() {
    let mut meta = nullable("event_metadata", "Option<Value>");
    meta.default_sql = Some("'{}'".into());
    let contract = events(vec![column("id", "i64"), column("user_id", "i64"), meta]);
    for kind in [
        crate::live::RelationKind::View,
        crate::live::RelationKind::MaterializedView,
        crate::live::RelationKind::ForeignTable,
    ] {
        let mut view = live(vec![
            LiveColumn::new("id", "bigint").not_null(),
            LiveColumn::new("user_id", "bigint"),
        ]);
        view.kind = kind;
        let plan = plan_for(
            Dialect::Postgres,
            &contract,
            Some(&view),
            &[
                ("id", "INT8"),
                ("user_id", "INT8"),
                ("event_metadata", "JSONB"),
            ],
        );
        assert!(plan.steps.is_empty(), "{kind}: {:?}", plan.steps);
        let refused: Vec<(Option<&str>, DriftKind)> = plan
            .refusals
            .iter()
            .map(|r| (r.column.as_deref(), r.kind))
            .collect();
        assert_eq!(
            refused,
            [
                (Some("user_id"), DriftKind::Nullability),
                (Some("event_metadata"), DriftKind::MissingColumn)
            ]
        );
        let reason = &plan.refusals[0].reason;
        assert!(
            reason.starts_with(&format!(
                "not remediable: relation `tenant_1.events` is a {kind} (ALTER TABLE cannot change it)"
            )) && reason.contains("make the field an Option"),
            "{reason}"
        );
    }
}

#[test]
fn custom_types_are_written_with_the_schema_the_fleet_has_them_in() {
    let mut mood = column("mood", "Mood");
    mood.nullable = true;
    let contract = events(vec![column("id", "i64"), mood]);
    let expected: BTreeMap<String, String> = [("id", "INT8"), ("mood", "mood")]
        .iter()
        .map(|(c, t)| ((*c).to_owned(), (*t).to_owned()))
        .collect();
    let mut types = TypeCatalog::new();
    types.builtin("int8").found_in("mood", "tenant_1");
    let plan = |live: Option<&LiveTable>, tenant: &str| {
        let findings = diff(
            DiffScope {
                tenant,
                schema: tenant,
                dialect: Dialect::Postgres,
            },
            &contract,
            live,
            &ByName(&expected),
        );
        let input = TableInput {
            contract: &contract,
            live,
            findings: &findings,
            expected_types: &expected,
        };
        plan_tenant(Dialect::Postgres, tenant, Some(tenant), &[input], &types)
    };
    let created = plan(None, "tenant_1");
    assert_eq!(
        created.statements().collect::<Vec<_>>(),
        [r#"CREATE TABLE "tenant_1"."events" ("id" int8 NOT NULL, "mood" "tenant_1"."mood")"#]
    );
    let mut without_mood = LiveTable::new("tenant_1", "events");
    without_mood.columns = vec![LiveColumn::new("id", "bigint").not_null()];
    assert_eq!(
        plan(Some(&without_mood), "tenant_1")
            .statements()
            .collect::<Vec<_>>(),
        [r#"ALTER TABLE "tenant_1"."events" ADD COLUMN "mood" "tenant_1"."mood""#]
    );
    // tenant_2 has no `mood`, nor has `public`: refused, with what to do.
    let refused = plan(None, "tenant_2");
    assert!(refused.steps.is_empty());
    assert_eq!(refused.refusals.len(), 1);
    assert!(
        refused.refusals[0]
            .reason
            .contains("has type `mood`, which exists in none of the schemas `tenant_2`, `public`"),
        "{}",
        refused.refusals[0].reason
    );
}

#[test]
fn tenants_with_the_same_drift_share_a_shape_but_not_a_hash() {
    let contract = events(vec![
        column("id", "i64"),
        nullable("note", "String"),
        nullable("kind", "String"),
    ]);
    let missing = |tenant: &str, present: &str| {
        let mut t = LiveTable::new(tenant, "events");
        t.columns = vec![
            LiveColumn::new("id", "int8").not_null(),
            LiveColumn::new(present, "text"),
        ];
        t
    };
    let types = [("id", "int8"), ("note", "text"), ("kind", "text")];
    for dialect in [Dialect::Postgres, Dialect::MySql] {
        let (one, two) = (missing("tenant_1", "kind"), missing("tenant_20", "kind"));
        let a = plan_for_tenant("tenant_1", dialect, &contract, Some(&one), &types);
        let b = plan_for_tenant("tenant_20", dialect, &contract, Some(&two), &types);
        assert!(!a.steps.is_empty(), "{dialect}: {a:?}");
        assert!(a.statements().all(|s| s.contains("tenant_1")), "{dialect}");
        assert_ne!(a.hash, b.hash, "{dialect}: the hash names the tenant");
        assert_eq!(a.shape, b.shape, "{dialect}: same drift, same shape");
        // A different drift has a different shape.
        let other = missing("tenant_1", "note");
        let c = plan_for_tenant("tenant_1", dialect, &contract, Some(&other), &types);
        assert_ne!(a.shape, c.shape, "{dialect}");
        // One approval of the shape approves both tenants' plans, not the other drift's.
        let fleet = Remediation::ApprovedShape(a.shape.clone());
        assert!(fleet.approves(&a) && fleet.approves(&b), "{dialect}");
        assert!(!fleet.approves(&c), "{dialect}");
        assert_eq!(fleet.select(&b).steps.len(), b.steps.len(), "{dialect}");
        assert!(!Remediation::ApprovedShape(String::new()).approves(&a));
        assert_eq!(fleet.to_string(), format!("approved shape {}", a.shape));
    }
}

#[test]
fn a_plan_reads_in_words_with_its_full_hash() {
    let contract = events(vec![column("id", "i64"), column("user_id", "i64")]);
    let live = live(vec![
        LiveColumn::new("id", "int8").not_null(),
        LiveColumn::new("user_id", "int4").not_null(),
    ]);
    let plan = plan_for(
        Dialect::Postgres,
        &contract,
        Some(&live),
        &[("id", "int8"), ("user_id", "int8")],
    );
    let text = plan.to_string();
    assert!(text.contains(&plan.hash), "{text}");
    assert!(text.contains("rewrites the whole table"), "{text}");
    assert!(text.contains("ACCESS EXCLUSIVE"), "{text}");
    assert!(text.contains("waits for approval"), "{text}");
    assert!(
        !text.contains("TableRewrite") && !text.contains('['),
        "{text}"
    );
}
