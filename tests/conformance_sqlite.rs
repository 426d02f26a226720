//! Conformance (`ARCHITECTURE.md` D1): for every Rust field type × SQLite declared column type, the
//! guard's verdict (`Backend::fit` on the introspected, resolved live column) must equal
//! what really decoding one canonical non-NULL value does. Value-dependent pairs (the
//! guard says "risk") are listed explicitly in [`RISKS`] with the reason.

use crate::support;

use contract_sqlx::{backend::Backend, check::TypeCheck};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Sqlite};
use support::conformance::{Guard, Pair, Risks, introspect_all, report};

/// (column, declared type, canonical value): the declared types whose affinity the SQLite
/// verdict distinguishes, each with a realistic value.
const COLUMNS: &[(&str, &str, &str)] = &[
    ("c_integer", "INTEGER", "42"),
    ("c_integer_nn", "INTEGER NOT NULL", "7"),
    ("c_int", "INT", "123456"),
    ("c_int4", "INT4", "1234"),
    ("c_int8", "INT8", "9000000000"),
    ("c_bigint", "BIGINT", "9000000000"),
    // 64-bit spellings SQLite's own documentation lists, and unsigned 32-bit ones
    // (helper-68: they were taken for 4-byte columns).
    ("c_ubigint", "UNSIGNED BIG INT", "9000000000"),
    ("c_int64", "INT64", "9000000000"),
    ("c_int_unsigned", "INT UNSIGNED", "4000000000"),
    ("c_smallint", "SMALLINT", "1234"),
    ("c_boolean", "BOOLEAN", "1"),
    ("c_bool", "BOOL", "0"),
    ("c_date", "DATE", "'2024-01-15'"),
    ("c_time", "TIME", "'12:34:56'"),
    ("c_datetime", "DATETIME", "'2024-01-15 10:30:00'"),
    ("c_timestamp", "TIMESTAMP", "'2024-01-15T10:30:00Z'"),
    ("c_varchar", "VARCHAR(64)", "'hello'"),
    ("c_text", "TEXT", "'hello text'"),
    ("c_text_nn", "TEXT NOT NULL", "'hello'"),
    ("c_clob", "CLOB", "'long text'"),
    (
        "c_char36",
        "CHAR(36)",
        "'67e55044-10b1-426f-9247-bb680e5fe0c8'",
    ),
    ("c_blob", "BLOB", "x'DEADBEEF'"),
    ("c_blob16", "BLOB", "x'67e5504410b1426f9247bb680e5fe0c8'"),
    ("c_real", "REAL", "1.5"),
    ("c_double", "DOUBLE", "2.5"),
    ("c_float", "FLOAT", "3.5"),
    ("c_numeric", "NUMERIC", "12.34"),
    ("c_decimal", "DECIMAL(10,2)", "42"),
    ("c_json", "JSON", r#"'{"a": 1}'"#),
    ("c_untyped", "", "42"),
];

/// Value-dependent pairs: the guard reports a risk (the storage class or the content
/// decides), and decoding the canonical value may succeed or fail. (Rust type, columns,
/// reason.) Every other pair must agree exactly.
const RISKS: &Risks = &[
    (
        "i8",
        &[
            "c_integer",
            "c_integer_nn",
            "c_int",
            "c_int4",
            "c_int8",
            "c_bigint",
            "c_ubigint",
            "c_int64",
            "c_int_unsigned",
            "c_smallint",
        ],
        "integers wider than the field overflow",
    ),
    (
        "i8",
        &["c_numeric", "c_decimal", "c_untyped"],
        "the storage class depends on the value",
    ),
    (
        "i16",
        &[
            "c_integer",
            "c_integer_nn",
            "c_int",
            "c_int4",
            "c_int8",
            "c_bigint",
            "c_ubigint",
            "c_int64",
            "c_int_unsigned",
        ],
        "integers wider than the field overflow",
    ),
    (
        "i16",
        &["c_numeric", "c_decimal", "c_untyped"],
        "the storage class depends on the value",
    ),
    (
        "i32",
        &[
            "c_int8",
            "c_bigint",
            "c_ubigint",
            "c_int64",
            "c_int_unsigned",
        ],
        "integers wider than the field overflow",
    ),
    (
        "i32",
        &["c_numeric", "c_decimal", "c_untyped"],
        "the storage class depends on the value",
    ),
    (
        "i64",
        &["c_numeric", "c_decimal", "c_untyped"],
        "the storage class depends on the value",
    ),
    (
        "u8",
        &[
            "c_integer",
            "c_integer_nn",
            "c_int",
            "c_int4",
            "c_int8",
            "c_bigint",
            "c_ubigint",
            "c_int64",
            "c_int_unsigned",
            "c_smallint",
        ],
        "integers wider than the field overflow",
    ),
    (
        "u8",
        &["c_numeric", "c_decimal", "c_untyped"],
        "the storage class depends on the value",
    ),
    (
        "u16",
        &[
            "c_integer",
            "c_integer_nn",
            "c_int",
            "c_int4",
            "c_int8",
            "c_bigint",
            "c_ubigint",
            "c_int64",
            "c_int_unsigned",
        ],
        "integers wider than the field overflow",
    ),
    (
        "u16",
        &["c_numeric", "c_decimal", "c_untyped"],
        "the storage class depends on the value",
    ),
    (
        "u32",
        &["c_int8", "c_bigint", "c_ubigint", "c_int64"],
        "integers wider than the field overflow",
    ),
    (
        "u32",
        &["c_numeric", "c_decimal", "c_untyped"],
        "the storage class depends on the value",
    ),
    (
        "f32",
        &["c_numeric", "c_decimal", "c_untyped"],
        "the storage class depends on the value",
    ),
    (
        "f64",
        &["c_numeric", "c_decimal", "c_untyped"],
        "the storage class depends on the value",
    ),
    (
        "bool",
        &["c_numeric", "c_decimal", "c_untyped"],
        "the storage class depends on the value",
    ),
    (
        "String",
        &["c_untyped"],
        "the storage class depends on the value",
    ),
    (
        "Vec<u8>",
        &["c_untyped"],
        "the storage class depends on the value",
    ),
    (
        "serde_json::Value",
        &[
            "c_date",
            "c_time",
            "c_datetime",
            "c_timestamp",
            "c_varchar",
            "c_text",
            "c_text_nn",
            "c_clob",
            "c_char36",
        ],
        "text that is not JSON fails to parse",
    ),
    (
        "serde_json::Value",
        &["c_untyped"],
        "the storage class depends on the value",
    ),
    (
        "Json<std::collections::HashMap<String, i64>>",
        &[
            "c_date",
            "c_time",
            "c_datetime",
            "c_timestamp",
            "c_varchar",
            "c_text",
            "c_text_nn",
            "c_clob",
            "c_char36",
        ],
        "text that is not JSON fails to parse",
    ),
    (
        "Json<std::collections::HashMap<String, i64>>",
        &["c_untyped"],
        "the storage class depends on the value",
    ),
    (
        "uuid::Uuid",
        &[
            "c_date",
            "c_time",
            "c_datetime",
            "c_timestamp",
            "c_varchar",
            "c_text",
            "c_text_nn",
            "c_clob",
            "c_char36",
            "c_blob",
            "c_blob16",
            "c_json",
        ],
        "only a UUID (16 bytes / UUID text) decodes",
    ),
    (
        "uuid::Uuid",
        &["c_untyped"],
        "the storage class depends on the value",
    ),
    (
        "uuid::fmt::Hyphenated",
        &[
            "c_date",
            "c_time",
            "c_datetime",
            "c_timestamp",
            "c_varchar",
            "c_text",
            "c_text_nn",
            "c_clob",
            "c_char36",
            "c_json",
        ],
        "only a UUID (16 bytes / UUID text) decodes",
    ),
    (
        "uuid::fmt::Hyphenated",
        &["c_untyped"],
        "the storage class depends on the value",
    ),
    (
        "chrono::NaiveDate",
        &[
            "c_time",
            "c_datetime",
            "c_timestamp",
            "c_varchar",
            "c_text",
            "c_text_nn",
            "c_clob",
            "c_char36",
            "c_json",
        ],
        "text that is not that date/time fails to parse",
    ),
    (
        "chrono::NaiveDate",
        &["c_untyped"],
        "the storage class depends on the value",
    ),
    (
        "chrono::NaiveDateTime",
        &[
            "c_date",
            "c_time",
            "c_varchar",
            "c_text",
            "c_text_nn",
            "c_clob",
            "c_char36",
            "c_json",
        ],
        "text that is not that date/time fails to parse",
    ),
    (
        "chrono::NaiveDateTime",
        &["c_untyped"],
        "the storage class depends on the value",
    ),
    (
        "chrono::NaiveTime",
        &[
            "c_date",
            "c_datetime",
            "c_timestamp",
            "c_varchar",
            "c_text",
            "c_text_nn",
            "c_clob",
            "c_char36",
            "c_json",
        ],
        "text that is not that date/time fails to parse",
    ),
    (
        "chrono::NaiveTime",
        &["c_untyped"],
        "the storage class depends on the value",
    ),
    (
        "chrono::DateTime<chrono::Utc>",
        &[
            "c_date",
            "c_time",
            "c_varchar",
            "c_text",
            "c_text_nn",
            "c_clob",
            "c_char36",
            "c_json",
        ],
        "text that is not that date/time fails to parse",
    ),
    (
        "chrono::DateTime<chrono::Utc>",
        &["c_untyped"],
        "the storage class depends on the value",
    ),
    (
        "time::Date",
        &[
            "c_time",
            "c_datetime",
            "c_timestamp",
            "c_varchar",
            "c_text",
            "c_text_nn",
            "c_clob",
            "c_char36",
            "c_json",
        ],
        "text that is not that date/time fails to parse",
    ),
    (
        "time::Date",
        &["c_untyped"],
        "the storage class depends on the value",
    ),
    (
        "time::PrimitiveDateTime",
        &[
            "c_date",
            "c_time",
            "c_varchar",
            "c_text",
            "c_text_nn",
            "c_clob",
            "c_char36",
            "c_json",
        ],
        "text that is not that date/time fails to parse",
    ),
    (
        "time::PrimitiveDateTime",
        &["c_numeric", "c_decimal", "c_untyped"],
        "the storage class depends on the value",
    ),
    (
        "time::OffsetDateTime",
        &[
            "c_date",
            "c_time",
            "c_varchar",
            "c_text",
            "c_text_nn",
            "c_clob",
            "c_char36",
            "c_json",
        ],
        "text that is not that date/time fails to parse",
    ),
    (
        "time::OffsetDateTime",
        &["c_numeric", "c_decimal", "c_untyped"],
        "the storage class depends on the value",
    ),
    (
        "time::Time",
        &[
            "c_date",
            "c_datetime",
            "c_timestamp",
            "c_varchar",
            "c_text",
            "c_text_nn",
            "c_clob",
            "c_char36",
            "c_json",
        ],
        "text that is not that date/time fails to parse",
    ),
    (
        "time::Time",
        &["c_untyped"],
        "the storage class depends on the value",
    ),
    (
        "Option<i64>",
        &["c_numeric", "c_decimal", "c_untyped"],
        "the storage class depends on the value",
    ),
    (
        "Option<String>",
        &["c_untyped"],
        "the storage class depends on the value",
    ),
];

macro_rules! matrix {
    ($pool:ident, $db:ident, $table:ident, $types:ident, $out:ident; $($t:ty),* $(,)?) => {$(
        for (column, _, _) in COLUMNS {
            let check = TypeCheck::<Sqlite>::of::<$t>(column, stringify!($t));
            let live = $table.column(column).unwrap_or_else(|| panic!("{column} not introspected"));
            let fit = <Sqlite as Backend>::fit(&check, live, &$types);
            let guard = match (fit.compatible, &fit.risk) {
                (false, _) => Guard::Mismatch,
                (true, Some(_)) => Guard::Risk,
                (true, None) => Guard::Fits,
            };
            let sql = format!("SELECT \"{column}\" FROM conf");
            let decoded = sqlx::query_as::<_, ($t,)>(AssertSqlSafe(sql))
                .fetch_one(&$pool)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
            $out.push(Pair { rust: stringify!($t), column, guard, risk: fit.risk, decoded });
        }
    )*};
}

#[tokio::test]
async fn sqlite_guard_verdict_equals_real_decoding() {
    // One connection: an in-memory database lives as long as its connection.
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    let db = "tenant_conf".to_owned();
    let ddl: Vec<String> = COLUMNS
        .iter()
        .map(|(c, t, _)| format!("\"{c}\" {t}"))
        .collect();
    let names: Vec<String> = COLUMNS.iter().map(|(c, _, _)| format!("\"{c}\"")).collect();
    let values: Vec<&str> = COLUMNS.iter().map(|(_, _, v)| *v).collect();
    for sql in [
        format!("CREATE TABLE conf ({})", ddl.join(", ")),
        format!(
            "INSERT INTO conf ({}) VALUES ({})",
            names.join(", "),
            values.join(", ")
        ),
    ] {
        sqlx::raw_sql(AssertSqlSafe(sql.clone()))
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let live = introspect_all(&pool, &db, COLUMNS).await;
    assert_eq!(
        live.schema, db,
        "the live table is labelled with the tenant name"
    );
    let types = <Sqlite as Backend>::resolve_types(&pool, std::slice::from_ref(&live))
        .await
        .expect("resolve types");
    let table = live;
    let mut out: Vec<Pair> = Vec::new();
    matrix!(pool, db, table, types, out;
        i8, i16, i32, i64, u8, u16, u32, f32, f64, bool, String, Vec<u8>,
        serde_json::Value, Json<std::collections::HashMap<String, i64>>, uuid::Uuid, uuid::fmt::Hyphenated,
        chrono::NaiveDate, chrono::NaiveDateTime, chrono::NaiveTime, chrono::DateTime<chrono::Utc>,
        time::Date, time::PrimitiveDateTime, time::OffsetDateTime, time::Time,
        Option<i64>, Option<String>,
    );
    report("sqlite", &out, RISKS, 780, 207);
}
