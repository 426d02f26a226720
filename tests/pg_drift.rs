//! Drift detection on PostgreSQL: the seed scenario (47 tenant schemas, two drifts),
//! tenant sources, hostile tenant names, and unreachable servers.

use crate::support;

use contract_sqlx::{
    Contract, Error, TenantDirectory, Tenants,
    check::ContractSet,
    check_fleet,
    report::{DriftKind, Severity, Verdict},
};
use sqlx::Postgres;
use support::PgScratch;

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct EventPayload {
    kind: String,
}

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "events")]
#[allow(dead_code)]
struct Event {
    #[contract(primary_key)]
    id: i64,
    user_id: i64,
    event_data: sqlx::types::Json<EventPayload>,
    #[contract(default = "'{}'")]
    event_metadata: Option<serde_json::Value>,
}

const EVENTS_DDL: &str = "CREATE TABLE {s}.events (id int8 PRIMARY KEY, user_id int8 NOT NULL, \
     event_data jsonb NOT NULL, event_metadata jsonb, extra_column text);";

async fn seed(scratch: &PgScratch, tenants: usize) {
    let mut ddl = String::new();
    for i in 1..=tenants {
        let s = format!("tenant_{i}");
        ddl.push_str(&format!("CREATE SCHEMA {s};"));
        ddl.push_str(&EVENTS_DDL.replace("{s}", &s));
    }
    if tenants >= 42 {
        ddl.push_str("ALTER TABLE tenant_42.events DROP COLUMN event_metadata;");
        ddl.push_str("ALTER TABLE tenant_19.events ALTER COLUMN user_id TYPE int4;");
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
        .execute(&scratch.pool)
        .await
        .expect("seed tenants");
}

#[tokio::test]
async fn seed_scenario_reports_exactly_the_two_drifts() {
    let scratch = PgScratch::create("contract_seed").await;
    seed(&scratch, 47).await;
    let contracts = ContractSet::<Postgres>::new().with::<Event>();
    let directory = TenantDirectory::new()
        .discover(&scratch.pool, &Tenants::schemas_like("tenant_%"))
        .await
        .expect("discover");
    let report = check_fleet(&directory, &contracts).await.expect("check");

    assert_eq!(report.tenants.len(), 47);
    let drifted: Vec<&str> = report
        .tenants_with("drifted")
        .map(|t| t.tenant.as_str())
        .collect();
    assert_eq!(drifted, ["tenant_19", "tenant_42"]);
    assert_eq!(report.tenants_with("compliant").count(), 45);

    let findings: Vec<_> = report.findings().collect();
    assert_eq!(findings.len(), 2, "{report}");
    let missing = findings
        .iter()
        .find(|f| f.tenant == "tenant_42")
        .expect("tenant_42 finding");
    assert_eq!(
        (missing.kind, missing.severity),
        (DriftKind::MissingColumn, Severity::Breaks)
    );
    assert_eq!(
        (missing.table.as_str(), missing.column.as_deref()),
        ("events", Some("event_metadata"))
    );
    let mismatch = findings
        .iter()
        .find(|f| f.tenant == "tenant_19")
        .expect("tenant_19 finding");
    assert_eq!(
        (mismatch.kind, mismatch.severity),
        (DriftKind::TypeMismatch, Severity::Breaks)
    );
    assert_eq!(mismatch.column.as_deref(), Some("user_id"));
    assert_eq!(mismatch.actual, "integer");
    assert_eq!(mismatch.expected, "int8 (i64)");

    // The JSON shape is stable and carries the verdicts.
    let json: serde_json::Value = serde_json::from_str(&report.to_json_pretty()).expect("json");
    assert_eq!(json["dialect"], "postgres");
    assert_eq!(json["tenants"][0]["verdict"]["status"], "compliant");
    scratch.drop_db().await;
}

#[tokio::test]
async fn tenant_sources_list_and_registry_query_agree_with_pattern() {
    let scratch = PgScratch::create("contract_sources").await;
    seed(&scratch, 3).await;
    sqlx::raw_sql("CREATE TABLE public.tenants (name text); INSERT INTO public.tenants VALUES ('tenant_1'), ('tenant_3');")
        .execute(&scratch.pool)
        .await
        .expect("registry");
    let contracts = ContractSet::<Postgres>::new().with::<Event>();
    let by_query = TenantDirectory::new()
        .discover(
            &scratch.pool,
            &Tenants::query("SELECT name FROM public.tenants ORDER BY name"),
        )
        .await
        .expect("query");
    let names: Vec<&str> = by_query.tenants().iter().map(|t| t.as_str()).collect();
    assert_eq!(names, ["tenant_1", "tenant_3"]);
    let by_list = TenantDirectory::new()
        .discover(&scratch.pool, &Tenants::list(["tenant_2"]))
        .await
        .expect("list");
    let report = check_fleet(&by_list, &contracts).await.expect("check");
    assert_eq!(report.tenants.len(), 1);
    assert_eq!(report.tenants[0].verdict, Verdict::Compliant);
    scratch.drop_db().await;
}

#[tokio::test]
async fn hostile_tenant_names_are_rejected_before_any_sql() {
    // A closed pool: any SQL sent through it would fail with PoolClosed, not Ident.
    let scratch = PgScratch::create("contract_hostile").await;
    let pool = scratch.pool.clone();
    pool.close().await;
    let hostile = [
        "t\"; DROP SCHEMA public CASCADE; --",
        "t';--",
        "t\0x",
        &"a".repeat(200),
    ];
    for name in hostile {
        let err = TenantDirectory::<Postgres>::new()
            .discover(&pool, &Tenants::list(["tenant_1", name]))
            .await
            .expect_err("hostile name must be rejected");
        let text = err.to_string();
        assert!(matches!(err, Error::Ident(_)), "{text}");
        assert!(
            text.contains("no SQL was sent") && text.contains("tenant name"),
            "{text}"
        );
    }
    scratch.drop_db().await;
}

#[tokio::test]
async fn discovered_hostile_schema_is_reported_unreachable_not_queried() {
    let scratch = PgScratch::create("contract_hostile_schema").await;
    seed(&scratch, 2).await;
    sqlx::raw_sql(r#"CREATE SCHEMA "tenant_x""; DROP TABLE x; --""#)
        .execute(&scratch.pool)
        .await
        .expect("schema");
    let contracts = ContractSet::<Postgres>::new().with::<Event>();
    let directory = TenantDirectory::new()
        .discover(&scratch.pool, &Tenants::schemas_like("tenant_%"))
        .await
        .expect("discover");
    assert_eq!(directory.tenants().len(), 2);
    let report = check_fleet(&directory, &contracts).await.expect("check");
    let rejected: Vec<_> = report.tenants_with("unreachable").collect();
    assert_eq!(rejected.len(), 1);
    match &rejected[0].verdict {
        Verdict::Unreachable { error } => assert!(error.contains("contains '\"'"), "{error}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(report.tenants_with("compliant").count(), 2);
    scratch.drop_db().await;
}

#[tokio::test]
async fn server_gone_marks_tenants_unreachable_with_the_reason() {
    let scratch = PgScratch::create("contract_gone").await;
    seed(&scratch, 2).await;
    let directory = TenantDirectory::new()
        .discover(&scratch.pool, &Tenants::schemas_like("tenant_%"))
        .await
        .expect("d");
    let contracts = ContractSet::<Postgres>::new().with::<Event>();
    scratch.pool.close().await;
    let report = check_fleet(&directory, &contracts).await.expect("check");
    assert_eq!(report.tenants_with("unreachable").count(), 2);
    match &report.tenants[0].verdict {
        Verdict::Unreachable { error } => assert!(
            error.contains("introspecting tenant schemas failed"),
            "{error}"
        ),
        other => panic!("{other:?}"),
    }
    scratch.drop_db().await;
}

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "evnts")]
#[allow(dead_code)]
struct Misspelt {
    id: i64,
}

#[tokio::test]
async fn a_table_missing_in_every_tenant_gets_a_fleet_note_naming_the_likely_fix() {
    let scratch = PgScratch::create("contract_note").await;
    seed(&scratch, 3).await;
    let contracts = ContractSet::<Postgres>::new()
        .with::<Event>()
        .with::<Misspelt>();
    let directory = TenantDirectory::new()
        .discover(&scratch.pool, &Tenants::schemas_like("tenant_%"))
        .await
        .expect("discover");
    let report = check_fleet(&directory, &contracts).await.expect("check");
    assert_eq!(report.notes.len(), 1, "{report}");
    assert!(
        report.notes[0]
            .contains("contract Misspelt: table `evnts` exists in none of the 3 tenants"),
        "{}",
        report.notes[0]
    );
    assert!(report.to_string().contains("note: contract Misspelt"));
    scratch.drop_db().await;
}

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "priced")]
#[allow(dead_code)]
struct Priced {
    id: i64,
    net: i32,
    tax: i32,
    gross: i32,
    label: String,
    at: sqlx::types::chrono::DateTime<sqlx::types::chrono::Utc>,
}

/// The snapshot's defaults are PostgreSQL's own deparse, whether or not the expression
/// refers to columns (a generated column does; the introspection query deparses plain
/// defaults without opening the table).
#[tokio::test]
async fn defaults_are_deparsed_as_postgres_does_including_generated_columns() {
    let scratch = PgScratch::create("contract_defaults").await;
    sqlx::raw_sql(
        "CREATE SCHEMA tenant_1;
         CREATE TABLE tenant_1.priced (id bigserial PRIMARY KEY, net int4 NOT NULL DEFAULT 0,
             tax int4 NOT NULL DEFAULT (1 + 1), gross int4 GENERATED ALWAYS AS (net + tax) STORED,
             label text NOT NULL DEFAULT 'it''s', at timestamptz NOT NULL DEFAULT now());",
    )
    .execute(&scratch.pool)
    .await
    .expect("create table");
    let expected: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT a.attname::text, pg_get_expr(d.adbin, d.adrelid)
         FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE a.attrelid = 'tenant_1.priced'::regclass AND a.attnum > 0 ORDER BY a.attnum",
    )
    .fetch_all(&scratch.pool)
    .await
    .expect("pg_get_expr");
    assert!(
        expected
            .iter()
            .any(|(name, default)| name == "gross" && default.as_deref() == Some("(net + tax)")),
        "{expected:?}"
    );

    let contracts = ContractSet::<Postgres>::new().with::<Priced>();
    let snapshot =
        contract_sqlx::check::snapshot(&scratch.pool, &["tenant_1".to_owned()], &contracts)
            .await
            .expect("snapshot");
    let table = snapshot
        .table_for("tenant_1", &Priced::contract())
        .expect("priced table");
    let actual: Vec<(String, Option<String>)> = table
        .columns
        .iter()
        .map(|c| (c.name.clone(), c.default.clone()))
        .collect();
    assert_eq!(actual, expected);
    scratch.drop_db().await;
}

/// `events` as a view in every tenant, over `base` (the contract's columns, NOT NULL where
/// the contract says so) and `users`.
const VIEW_BASES: &str = "CREATE TABLE {s}.base (id int8 PRIMARY KEY, uid int8 NOT NULL, \
     data jsonb NOT NULL, meta jsonb, maybe_uid int8); \
     CREATE TABLE {s}.users (id int8 PRIMARY KEY, uid int8 NOT NULL);";

#[tokio::test]
async fn a_view_over_not_null_columns_is_reported_nullable() {
    let scratch = PgScratch::create("contract_views").await;
    let views = [
        // Plain references to NOT NULL columns, renamed by the view's column list.
        (
            "tenant_1",
            "CREATE VIEW tenant_1.events (id, user_id, event_data, event_metadata) AS \
             SELECT id, uid, data, meta FROM tenant_1.base",
        ),
        // A view over a view over the table.
        (
            "tenant_2",
            "CREATE VIEW tenant_2.inner_events AS SELECT id, uid AS user_id, data AS event_data, \
             meta AS event_metadata FROM tenant_2.base WHERE id > 0; \
             CREATE VIEW tenant_2.events AS SELECT * FROM tenant_2.inner_events",
        ),
        // user_id through an outer join: NULL for a base row without a user.
        (
            "tenant_3",
            "CREATE VIEW tenant_3.events AS SELECT b.id, u.uid AS user_id, b.data AS event_data, \
             b.meta AS event_metadata FROM tenant_3.base b LEFT JOIN tenant_3.users u ON u.id = b.id",
        ),
        // user_id from a nullable column, and event_data from an expression.
        (
            "tenant_4",
            "CREATE VIEW tenant_4.events AS SELECT id, maybe_uid AS user_id, \
             data || '{}' AS event_data, meta AS event_metadata FROM tenant_4.base",
        ),
    ];
    let mut ddl = String::new();
    for (schema, view) in views {
        ddl.push_str(&format!("CREATE SCHEMA {schema};"));
        ddl.push_str(&VIEW_BASES.replace("{s}", schema));
        ddl.push_str(view);
        ddl.push(';');
    }
    support::exec(&scratch.pool, ddl).await;
    let contracts = ContractSet::<Postgres>::new().with::<Event>();
    let directory = TenantDirectory::new()
        .discover(&scratch.pool, &Tenants::schemas_like("tenant_%"))
        .await
        .expect("discover");
    let report = check_fleet(&directory, &contracts).await.expect("check");
    let nullability = |tenant| {
        support::findings(&report, tenant)
            .into_iter()
            // A view has no primary key: an info finding.
            .filter(|(_, _, severity)| *severity >= Severity::AtRisk)
            .map(|(column, kind, severity)| {
                assert_eq!((kind, severity), (DriftKind::Nullability, Severity::AtRisk));
                column.unwrap_or_default()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(nullability("tenant_1"), Vec::<String>::new(), "{report}");
    assert_eq!(nullability("tenant_2"), Vec::<String>::new(), "{report}");
    // An outer join is not followed (which side a column comes from is not traced): the
    // view stays as PostgreSQL reports it, every column nullable. user_id really is.
    assert_eq!(
        nullability("tenant_3"),
        ["id", "user_id", "event_data"],
        "{report}"
    );
    assert_eq!(
        nullability("tenant_4"),
        ["user_id", "event_data"],
        "{report}"
    );
    scratch.drop_db().await;
}

#[derive(Debug, PartialEq, sqlx::Type)]
#[sqlx(type_name = "tenant_1.mood", rename_all = "lowercase")]
pub(crate) enum Mood {
    Happy,
    Sad,
    Meh,
}

/// Enum labels reached through an array and a domain.
#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "moods", backends(postgres))]
#[allow(dead_code)]
pub(crate) struct Moods {
    pub id: i64,
    #[contract(enum_labels = "happy, sad, meh")]
    pub history: Vec<Mood>,
    #[contract(enum_labels = "happy, sad, meh")]
    pub today: Mood,
}

/// `tenant_1.moods`: `history` an array of the enum `tenant_1.mood`, `today` a domain over
/// it; the enum has the labels `labels`.
pub(crate) fn moods_setup(labels: &str) -> String {
    format!(
        "CREATE SCHEMA tenant_1; CREATE TYPE tenant_1.mood AS ENUM ({labels}); \
         CREATE DOMAIN tenant_1.mood_today AS tenant_1.mood; \
         CREATE TABLE tenant_1.moods (id int8 NOT NULL, history tenant_1.mood[] NOT NULL, \
                                      today tenant_1.mood_today NOT NULL)"
    )
}

/// Labels reached three levels down, in the shapes sqlx decodes (PostgreSQL hands it the
/// domains' base type): chains of domains.
#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "deep_moods", backends(postgres))]
#[allow(dead_code)]
pub(crate) struct DeepMoods {
    pub id: i64,
    #[contract(enum_labels = "happy, sad, meh")]
    pub history: Vec<Mood>,
    #[contract(enum_labels = "happy, sad, meh")]
    pub today: Mood,
}

/// An enum three levels below its column (a domain over a domain over an array of it, a
/// domain over a domain over a domain over it) has its labels checked too: the lookup
/// stopped two levels down, so both columns passed as compliant with a label the Rust enum
/// cannot decode and without one it writes.
#[tokio::test]
async fn enum_labels_are_checked_three_levels_down() {
    history_and_today_are_off_by_grumpy_and_meh::<DeepMoods>(
        "contract_enum_deep",
        "CREATE SCHEMA tenant_1; CREATE TYPE tenant_1.mood AS ENUM ('happy', 'sad', 'grumpy'); \
         CREATE DOMAIN tenant_1.list_a AS tenant_1.mood[]; \
         CREATE DOMAIN tenant_1.list_b AS tenant_1.list_a; \
         CREATE DOMAIN tenant_1.mood_a AS tenant_1.mood; \
         CREATE DOMAIN tenant_1.mood_b AS tenant_1.mood_a; \
         CREATE DOMAIN tenant_1.mood_c AS tenant_1.mood_b NOT NULL; \
         CREATE TABLE tenant_1.deep_moods (id int8 NOT NULL, history tenant_1.list_b NOT NULL, \
                                           today tenant_1.mood_c NOT NULL)",
    )
    .await;
}

/// With `setup` in a scratch database (the enum `happy, sad, grumpy` behind the columns
/// `history` and `today`), a check of `T` (which wants `happy, sad, meh` in both) finds, for
/// each column, the label the Rust enum does not know and the one it misses, and nothing
/// else.
async fn history_and_today_are_off_by_grumpy_and_meh<T>(prefix: &str, setup: &str)
where
    T: contract_sqlx::Contract + contract_sqlx::check::TypeChecks<Postgres>,
{
    let scratch = PgScratch::create(prefix).await;
    support::exec(&scratch.pool, setup).await;
    let dir = support::pg_tenant_directory(&scratch.pool).await;
    let contracts = contract_sqlx::check::ContractSet::<Postgres>::new().with::<T>();
    let report = contract_sqlx::check_fleet(&dir, &contracts)
        .await
        .expect("check");
    let mut found: Vec<(String, String)> = report
        .findings()
        .map(|f| (f.column.clone().unwrap_or_default(), f.actual.clone()))
        .collect();
    found.sort();
    let labels = |column: &str| {
        [
            (
                column.to_owned(),
                "labels unknown to the Rust enum: grumpy".to_owned(),
            ),
            (column.to_owned(), "missing labels: meh".to_owned()),
        ]
    };
    assert_eq!(
        found,
        [labels("history"), labels("today")].concat(),
        "{report}"
    );
    scratch.drop_db().await;
}

/// The labels of an enum reached through an array column or a domain are checked like an
/// enum column's: a label the Rust enum does not know (rows holding it fail to decode) and
/// one it needs. Both columns passed as compliant: only a column of the enum type itself
/// had its labels read.
#[tokio::test]
async fn enum_labels_are_checked_through_arrays_and_domains() {
    history_and_today_are_off_by_grumpy_and_meh::<Moods>(
        "contract_enum_wrapped",
        &moods_setup("'happy', 'sad', 'grumpy'"),
    )
    .await;
}
