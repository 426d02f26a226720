//! Conformance on PostgreSQL: for every (Rust field type, column type) pair, the guard's
//! verdict equals what real decoding does with a non-NULL row (`ARCHITECTURE.md` D1).
//!
//! The guard side runs the real pipeline: bulk introspection, the fleet-wide type probe,
//! sqlx's `compatible()`, the diff. The decoding side reads one non-NULL row with
//! `sqlx::query_as::<_, (T,)>` (tuple `FromRow`).

use crate::support;

use std::collections::HashMap;

use contract_sqlx::{
    TenantDirectory,
    check::{ContractEntry, ContractSet, TypeCheck},
    check_fleet,
    model::{ColumnContract, TableContract},
    report::DriftKind,
};
use sqlx::{PgPool, Postgres, types::Json};
use support::PgScratch;

/// `(column name, SQL type, non-NULL literal)`.
const COLUMNS: &[(&str, &str, &str)] = &[
    ("c_int2", "int2", "7"),
    ("c_int4", "int4", "7"),
    ("c_int8", "int8", "7"),
    ("c_float4", "float4", "1.5"),
    ("c_float8", "float8", "1.5"),
    ("c_numeric", "numeric(12,2)", "12.50"),
    ("c_bool", "bool", "true"),
    ("c_text", "text", "'hello'"),
    ("c_varchar", "varchar(20)", "'hello'"),
    ("c_bpchar", "char(5)", "'hello'"),
    ("c_name", "name", "'hello'"),
    ("c_char", "\"char\"", "'a'"),
    ("c_json", "json", r#"'{"a": 1}'"#),
    ("c_jsonb", "jsonb", r#"'{"a": 1}'"#),
    ("c_bytea", "bytea", r"'\x0102'"),
    ("c_uuid", "uuid", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'"),
    ("c_date", "date", "'2024-05-06'"),
    ("c_time", "time", "'12:34:56'"),
    ("c_timestamp", "timestamp", "'2024-05-06 12:34:56'"),
    ("c_timestamptz", "timestamptz", "'2024-05-06 12:34:56+00'"),
    ("c_interval", "interval", "'1 day'"),
    ("c_int4_arr", "int4[]", "'{1,2}'"),
    ("c_int8_arr", "int8[]", "'{1,2}'"),
    ("c_text_arr", "text[]", "'{a,b}'"),
    ("c_bool_arr", "bool[]", "'{true}'"),
    ("c_float8_arr", "float8[]", "'{1.5}'"),
    ("c_mood", "conf.mood", "'happy'"),
    ("c_posint", "conf.posint", "5"),
    ("c_oid", "oid", "7"),
];

#[derive(Debug, sqlx::Type)]
#[sqlx(type_name = "conf.mood", rename_all = "lowercase")]
#[allow(dead_code)] // only decoded, never built
enum Mood {
    Happy,
    Sad,
}

/// Guard verdicts and decode results of one Rust type against every column.
struct Row {
    rust_type: &'static str,
    guard: HashMap<String, bool>,
    decode: HashMap<String, Result<(), String>>,
}

async fn decode_all<T>(pool: &PgPool) -> HashMap<String, Result<(), String>>
where
    T: for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres> + Send + Unpin,
{
    let mut out = HashMap::new();
    for (column, _, _) in COLUMNS {
        let sql = format!("SELECT {column} FROM conf.matrix");
        let result = sqlx::query_as::<_, (T,)>(sqlx::AssertSqlSafe(sql))
            .fetch_one(pool)
            .await;
        out.insert(
            (*column).to_owned(),
            result.map(|_| ()).map_err(|e| e.to_string()),
        );
    }
    out
}

fn entry_for<T: contract_sqlx::check::Decodable<Postgres>>(
    rust_type: &'static str,
) -> ContractEntry<Postgres> {
    let columns = COLUMNS
        .iter()
        .map(|(c, _, _)| ColumnContract::new(*c, rust_type))
        .collect();
    let checks = COLUMNS
        .iter()
        .map(|(c, _, _)| TypeCheck::of::<T>(c, rust_type))
        .collect();
    ContractEntry {
        contract: TableContract {
            struct_name: rust_type.to_owned(),
            schema: None,
            table: "matrix".into(),
            columns,
        },
        checks,
    }
}

async fn guard_verdicts(pool: &PgPool, entry: ContractEntry<Postgres>) -> HashMap<String, bool> {
    let mut contracts = ContractSet::<Postgres>::new();
    contracts.push_entry(entry);
    let tenant = contract_sqlx::TenantName::new("conf").expect("tenant");
    let directory = TenantDirectory::new().add(pool.clone(), vec![tenant]);
    let report = check_fleet(&directory, &contracts).await.expect("check");
    let mismatched: Vec<&str> = report
        .findings()
        .filter(|f| f.kind == DriftKind::TypeMismatch)
        .filter_map(|f| f.column.as_deref())
        .collect();
    assert!(
        report.findings().all(|f| f.kind == DriftKind::TypeMismatch),
        "unexpected finding kinds: {report}"
    );
    COLUMNS
        .iter()
        .map(|(c, _, _)| ((*c).to_owned(), !mismatched.contains(c)))
        .collect()
}

macro_rules! matrix {
    ($pool:expr; $($ty:ty),+ $(,)?) => {{
        let mut rows = Vec::new();
        $(
            rows.push(Row {
                rust_type: stringify!($ty),
                guard: guard_verdicts($pool, entry_for::<$ty>(stringify!($ty))).await,
                decode: decode_all::<$ty>($pool).await,
            });
        )+
        rows
    }};
}

#[tokio::test]
async fn guard_verdict_equals_decoding_for_every_pair() {
    let scratch = PgScratch::create("contract_conformance").await;
    let pool = &scratch.pool;
    let mut ddl = String::from(
        "CREATE SCHEMA conf; CREATE TYPE conf.mood AS ENUM ('happy', 'sad'); \
         CREATE DOMAIN conf.posint AS int8 CHECK (VALUE > 0); CREATE TABLE conf.matrix (",
    );
    ddl.push_str(
        &COLUMNS
            .iter()
            .map(|(c, t, _)| format!("{c} {t} NOT NULL"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    ddl.push_str("); INSERT INTO conf.matrix VALUES (");
    ddl.push_str(
        &COLUMNS
            .iter()
            .map(|(_, t, v)| format!("{v}::{t}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    ddl.push_str(");");
    sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
        .execute(pool)
        .await
        .expect("matrix table");

    let rows = matrix!(pool;
        i8, i16, i32, i64, f32, f64, bool, String, Vec<u8>,
        serde_json::Value, Json<HashMap<String, i64>>, Json<serde_json::Value>,
        uuid::Uuid,
        chrono::NaiveDate, chrono::NaiveTime, chrono::NaiveDateTime, chrono::DateTime<chrono::Utc>,
        time::Date, time::Time, time::PrimitiveDateTime, time::OffsetDateTime,
        rust_decimal::Decimal,
        Vec<i32>, Vec<i64>, Vec<String>, Vec<bool>, Vec<f64>,
        Mood, sqlx::postgres::types::PgInterval, sqlx::postgres::types::Oid, Option<i64>,
    );

    let mut pairs = 0;
    let mut compatible_pairs = 0;
    let mut disagreements = Vec::new();
    for row in &rows {
        for (column, sql_type, _) in COLUMNS {
            pairs += 1;
            let guard = row.guard[*column];
            let decode = &row.decode[*column];
            compatible_pairs += usize::from(guard);
            if guard != decode.is_ok() {
                disagreements.push(format!(
                    "{} vs {sql_type}: guard={guard} decode={decode:?}",
                    row.rust_type
                ));
            }
        }
    }
    println!(
        "postgres conformance: {} Rust types x {} column types = {pairs} pairs, {compatible_pairs} compatible, {} disagreements",
        rows.len(),
        COLUMNS.len(),
        disagreements.len()
    );
    scratch.drop_db().await;
    assert!(
        disagreements.is_empty(),
        "disagreements:\n{}",
        disagreements.join("\n")
    );
    assert_eq!(
        (rows.len(), COLUMNS.len(), pairs),
        (31, 29, 899),
        "the matrix the README reports"
    );
}
