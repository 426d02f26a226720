//! FromRow parity: the columns a contract lists are exactly the columns `sqlx::FromRow`
//! reads. For structs using every `#[sqlx(...)]` attribute, a table built from the
//! contract's column names decodes with FromRow, and dropping any one non-optional contract
//! column makes FromRow fail with `ColumnNotFound` naming that column (optional columns may
//! be dropped). Runs on in-memory SQLite and on PostgreSQL (scratch schema).
#![allow(dead_code)]

use crate::support;

use contract_sqlx::{Contract, check::TypeChecks};
use serde::Deserialize;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::types::Json;
use sqlx::{Connection, FromRow};

#[derive(Debug, Default, Deserialize)]
struct Payload {
    kind: String,
}

#[derive(FromRow, Contract)]
#[contract(embedded)]
struct Audit {
    created_by: String,
    #[sqlx(rename = "audit_at")]
    at: i64,
}

#[derive(FromRow, Contract)]
#[contract(table = "events")]
struct Event {
    id: i64,
    #[sqlx(rename = "UserRef")]
    user_id: i64,
    #[sqlx(default)]
    retries: i64,
    #[sqlx(skip)]
    cache: Vec<u8>,
    #[sqlx(flatten)]
    audit: Audit,
    #[sqlx(try_from = "i64")]
    seen: u32,
    #[sqlx(json)]
    payload: Payload,
    #[sqlx(json(nullable))]
    extra: Option<Payload>,
    data: Json<Payload>,
    maybe: Option<String>,
    r#type: String,
}

#[derive(FromRow, Contract, Default)]
#[contract(embedded)]
struct Note {
    note: Option<String>,
}

#[derive(FromRow, Contract, Default)]
#[contract(table = "defaults")]
#[sqlx(default)]
struct ContainerDefault {
    a: i64,
    b: Option<String>,
    #[sqlx(flatten)]
    note: Note,
}

/// What a `flatten` + `try_from` field converts from.
struct AuditView {
    by: String,
}

impl TryFrom<Audit> for AuditView {
    type Error = String;
    fn try_from(audit: Audit) -> Result<Self, Self::Error> {
        Ok(AuditView {
            by: audit.created_by,
        })
    }
}

#[derive(FromRow, Contract)]
#[contract(table = "wrapped")]
struct Wrapped {
    id: i64,
    #[sqlx(flatten, try_from = "Audit")]
    audit: AuditView,
    #[sqlx(json, try_from = "Payload")]
    kind: Kind,
}

struct Kind(String);

impl TryFrom<Payload> for Kind {
    type Error = String;
    fn try_from(p: Payload) -> Result<Self, Self::Error> {
        Ok(Kind(p.kind))
    }
}

macro_rules! rename_all_structs {
    ($($name:ident = $rule:literal),* $(,)?) => {$(
        #[derive(FromRow, Contract)]
        #[contract(table = "renamed")]
        #[sqlx(rename_all = $rule)]
        struct $name {
            user_id: i64,
            http_url_2: String,
            r#type: i64,
            #[sqlx(rename = "Exact")]
            renamed: i64,
        }
    )*};
}

rename_all_structs!(
    Lower = "lowercase",
    Snake = "snake_case",
    Upper = "UPPERCASE",
    Screaming = "SCREAMING_SNAKE_CASE",
    Kebab = "kebab-case",
    Camel = "camelCase",
    Pascal = "PascalCase",
);

/// (column name, SQL type, optional) in contract order, the SQL type being the one sqlx
/// maps the decoded type to on that backend.
fn columns<T: Contract + TypeChecks<DB>, DB: sqlx::Database>() -> Vec<(String, String, bool)> {
    let contract = T::contract();
    let checks = T::type_checks();
    let names: Vec<_> = contract.columns.iter().map(|c| c.name.as_str()).collect();
    let check_names: Vec<_> = checks.iter().map(|c| c.column()).collect();
    assert_eq!(
        names, check_names,
        "{}: type checks follow columns()",
        contract.struct_name
    );
    contract
        .columns
        .iter()
        .zip(&checks)
        .map(|(c, t)| (c.name.clone(), t.expected_sql_type(), c.optional))
        .collect()
}

/// A value of `sql_type` that every field type used above decodes from.
fn literal(sql_type: &str) -> &'static str {
    let t = sql_type.to_ascii_uppercase();
    if t.contains("INT") {
        "1"
    } else if t.contains("BOOL") {
        "TRUE"
    } else if t.contains("JSON") || t.contains("TEXT") {
        r#"'{"kind":"x"}'"#
    } else {
        panic!("no test literal for SQL type {sql_type}")
    }
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `CREATE TABLE` + `INSERT` for every column but `omit`.
fn table_sql(
    table: &str,
    cols: &[(String, String, bool)],
    omit: Option<usize>,
) -> (String, String) {
    let kept: Vec<_> = cols
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != omit)
        .map(|(_, c)| c)
        .collect();
    let defs: Vec<_> = kept
        .iter()
        .map(|(n, t, _)| format!("{} {t}", quote(n)))
        .collect();
    let names: Vec<_> = kept.iter().map(|(n, _, _)| quote(n)).collect();
    let values: Vec<_> = kept.iter().map(|(_, t, _)| literal(t)).collect();
    (
        format!("CREATE TABLE {table} ({})", defs.join(", ")),
        format!(
            "INSERT INTO {table} ({}) VALUES ({})",
            names.join(", "),
            values.join(", ")
        ),
    )
}

/// Checks one outcome: all columns → decodes; an optional column dropped → decodes; a
/// required column dropped → `ColumnNotFound` naming it.
fn assert_outcome<T>(
    name: &str,
    cols: &[(String, String, bool)],
    omit: Option<usize>,
    result: Result<T, sqlx::Error>,
) {
    match (omit.map(|i| &cols[i]), result) {
        (None, Ok(_)) => {}
        (Some((_, _, true)), Ok(_)) => {}
        (Some((col, _, false)), Err(sqlx::Error::ColumnNotFound(missing))) => {
            assert_eq!(
                &missing, col,
                "{name}: FromRow missed a different column than the one dropped"
            );
        }
        (omit, Ok(_)) => panic!("{name}: decoded although required column {omit:?} was dropped"),
        (omit, Err(e)) => panic!("{name}: dropping {omit:?}: unexpected FromRow error: {e}"),
    }
}

async fn sqlite_parity<T>()
where
    T: Contract + TypeChecks<sqlx::Sqlite> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin,
{
    let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:")
        .await
        .unwrap();
    let cols = columns::<T, sqlx::Sqlite>();
    for (n, omit) in std::iter::once(None)
        .chain((0..cols.len()).map(Some))
        .enumerate()
    {
        let table = format!("t{n}");
        let (create, insert) = table_sql(&table, &cols, omit);
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("{create}; {insert}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let result = sqlx::query_as::<_, T>(sqlx::AssertSqlSafe(format!("SELECT * FROM {table}")))
            .fetch_one(&mut conn)
            .await;
        assert_outcome(T::STRUCT_NAME, &cols, omit, result);
    }
}

async fn postgres_parity<T>(pool: &sqlx::PgPool, schema: &str)
where
    T: Contract + TypeChecks<sqlx::Postgres> + for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    let cols = columns::<T, sqlx::Postgres>();
    for (n, omit) in std::iter::once(None)
        .chain((0..cols.len()).map(Some))
        .enumerate()
    {
        let table = format!(
            "{}.{}",
            quote(schema),
            quote(&format!("{}_{n}", T::STRUCT_NAME.to_lowercase()))
        );
        let (create, insert) = table_sql(&table, &cols, omit);
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("{create}; {insert}")))
            .execute(pool)
            .await
            .unwrap();
        let result = sqlx::query_as::<_, T>(sqlx::AssertSqlSafe(format!("SELECT * FROM {table}")))
            .fetch_one(pool)
            .await;
        assert_outcome(T::STRUCT_NAME, &cols, omit, result);
    }
}

macro_rules! for_each_struct {
    ($m:ident $(, $arg:expr)*) => {
        $m::<Event>($($arg),*).await;
        $m::<ContainerDefault>($($arg),*).await;
        $m::<Wrapped>($($arg),*).await;
        $m::<Lower>($($arg),*).await;
        $m::<Snake>($($arg),*).await;
        $m::<Upper>($($arg),*).await;
        $m::<Screaming>($($arg),*).await;
        $m::<Kebab>($($arg),*).await;
        $m::<Camel>($($arg),*).await;
        $m::<Pascal>($($arg),*).await;
    };
}

#[test]
fn contract_names_are_the_from_row_names() {
    let event: Vec<_> = Event::contract()
        .columns
        .into_iter()
        .map(|c| (c.name, c.optional))
        .collect();
    let expected = [
        ("id", false),
        ("UserRef", false),
        ("retries", true),
        ("created_by", false),
        ("audit_at", false),
        ("seen", false),
        ("payload", false),
        ("extra", false),
        ("data", false),
        ("maybe", false),
        ("type", false),
    ];
    assert_eq!(event, expected.map(|(n, o)| (n.to_owned(), o)));
    let wrapped: Vec<_> = Wrapped::contract()
        .columns
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(wrapped, ["id", "created_by", "audit_at", "kind"]);
}

#[tokio::test]
async fn sqlite_from_row_reads_exactly_the_contract_columns() {
    for_each_struct!(sqlite_parity);
}

#[tokio::test]
async fn postgres_from_row_reads_exactly_the_contract_columns() {
    let pool = support::pg_pool().await;
    let schemas = support::PgSchemas::create(&pool, vec![support::unique_name("parity")]).await;
    let schema = schemas.names[0].clone();
    for_each_struct!(postgres_parity, &pool, &schema);
    schemas.drop_all().await;
}
