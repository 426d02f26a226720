//! Conformance (`ARCHITECTURE.md` D1): for every Rust field type × MySQL/MariaDB column type, the
//! guard's verdict (`Backend::fit` on the introspected, resolved live column) must equal
//! what really decoding one canonical non-NULL value does. Value-dependent pairs (the
//! guard says "risk") are listed explicitly in [`RISKS`] with the reason.

use contract_sqlx::{backend::Backend, check::TypeCheck};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, MySql};
use support::conformance::{Guard, Pair, Risks, introspect_all, report};

use crate::support;

/// (column, declared type, canonical value).
const COLUMNS: &[(&str, &str, &str)] = &[
    ("c_tinyint", "TINYINT", "42"),
    ("c_smallint", "SMALLINT", "1234"),
    ("c_mediumint", "MEDIUMINT", "123456"),
    ("c_int", "INT", "123456789"),
    ("c_int_nn", "INT NOT NULL", "7"),
    ("c_bigint", "BIGINT", "9000000000"),
    ("c_tinyint_u", "TINYINT UNSIGNED", "200"),
    ("c_int_u", "INT UNSIGNED", "3000000000"),
    ("c_bigint_u", "BIGINT UNSIGNED", "42"),
    ("c_bool", "BOOLEAN", "1"),
    ("c_decimal", "DECIMAL(10,2)", "12.34"),
    ("c_float", "FLOAT", "1.5"),
    ("c_double", "DOUBLE", "2.5"),
    ("c_char", "CHAR(10)", "'abc'"),
    ("c_varchar", "VARCHAR(64)", "'hello'"),
    ("c_varchar_nn", "VARCHAR(64) NOT NULL", "'hello'"),
    ("c_text", "TEXT", "'hello text'"),
    (
        "c_char36",
        "CHAR(36)",
        "'67e55044-10b1-426f-9247-bb680e5fe0c8'",
    ),
    ("c_blob", "BLOB", "x'DEADBEEF'"),
    ("c_varbinary", "VARBINARY(16)", "x'0102'"),
    (
        "c_binary16",
        "BINARY(16)",
        "x'67e5504410b1426f9247bb680e5fe0c8'",
    ),
    ("c_json", "JSON", r#"'{"a": 1}'"#),
    ("c_date", "DATE", "'2024-01-15'"),
    ("c_datetime", "DATETIME", "'2024-01-15 10:30:00'"),
    ("c_timestamp", "TIMESTAMP NULL", "'2024-01-15 10:30:00'"),
    ("c_time", "TIME", "'12:34:56'"),
    ("c_enum", "ENUM('a','b')", "'a'"),
    ("c_enum_nn", "ENUM('a','b') NOT NULL", "'b'"),
    ("c_bit", "BIT(8)", "b'101'"),
    ("c_year", "YEAR", "2024"),
];

/// Value-dependent pairs: the guard reports a risk (`compatible()` accepts the column,
/// decoding fails on some values), and decoding the canonical value may succeed or fail.
/// (Rust type, columns, reason.) Every other pair must agree exactly.
const RISKS: &Risks = &[
    (
        "i8",
        &["c_smallint", "c_mediumint", "c_int", "c_int_nn", "c_bigint"],
        "values wider than i8 overflow",
    ),
    (
        "i16",
        &["c_mediumint", "c_int", "c_int_nn", "c_bigint"],
        "values wider than i16 overflow",
    ),
    ("i32", &["c_bigint"], "values wider than i32 overflow"),
    (
        "u8",
        &["c_int_u", "c_bigint_u", "c_year"],
        "values wider than u8 overflow (YEAR is 1901..2155)",
    ),
    (
        "u16",
        &["c_int_u", "c_bigint_u"],
        "values wider than u16 overflow",
    ),
    ("u32", &["c_bigint_u"], "values wider than u32 overflow"),
    (
        "bool",
        &[
            "c_smallint",
            "c_mediumint",
            "c_int",
            "c_int_nn",
            "c_bigint",
            "c_int_u",
            "c_bigint_u",
        ],
        "sqlx decodes bool through i8: values outside -128..127 overflow",
    ),
    (
        "serde_json::Value",
        &[
            "c_char",
            "c_varchar",
            "c_varchar_nn",
            "c_text",
            "c_char36",
            "c_enum",
            "c_enum_nn",
            "c_blob",
            "c_varbinary",
            "c_binary16",
        ],
        "text or bytes that are not JSON fail to parse",
    ),
    (
        "Json<std::collections::HashMap<String, i64>>",
        &[
            "c_char",
            "c_varchar",
            "c_varchar_nn",
            "c_text",
            "c_char36",
            "c_enum",
            "c_enum_nn",
            "c_blob",
            "c_varbinary",
            "c_binary16",
        ],
        "text or bytes that are not JSON fail to parse",
    ),
    (
        "uuid::Uuid",
        &[
            "c_char",
            "c_varchar",
            "c_varchar_nn",
            "c_text",
            "c_char36",
            "c_enum",
            "c_enum_nn",
            "c_blob",
            "c_varbinary",
            "c_json",
        ],
        "only values of exactly 16 bytes decode (BINARY(16) is exact)",
    ),
    (
        "uuid::fmt::Hyphenated",
        &[
            "c_char",
            "c_varchar",
            "c_varchar_nn",
            "c_text",
            "c_char36",
            "c_enum",
            "c_enum_nn",
            "c_json",
        ],
        "only text that is a UUID decodes",
    ),
];

macro_rules! matrix {
    ($pool:ident, $db:ident, $table:ident, $types:ident, $out:ident; $($t:ty),* $(,)?) => {$(
        for (column, _, _) in COLUMNS {
            let check = TypeCheck::<MySql>::of::<$t>(column, stringify!($t));
            let live = $table.column(column).unwrap_or_else(|| panic!("{column} not introspected"));
            let fit = <MySql as Backend>::fit(&check, live, &$types);
            let guard = match (fit.compatible, &fit.risk) {
                (false, _) => Guard::Mismatch,
                (true, Some(_)) => Guard::Risk,
                (true, None) => Guard::Fits,
            };
            let sql = format!("SELECT `{column}` FROM `{}`.conf", $db);
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
async fn mysql_guard_verdict_equals_real_decoding() {
    let pool = support::mysql_pool().await;
    let db = support::unique_name("ct_my_conf");
    let _cleanup = support::MySqlDatabases(vec![db.clone()]);
    let ddl: Vec<String> = COLUMNS
        .iter()
        .map(|(c, t, _)| format!("`{c}` {t}"))
        .collect();
    let names: Vec<String> = COLUMNS.iter().map(|(c, _, _)| format!("`{c}`")).collect();
    let values: Vec<&str> = COLUMNS.iter().map(|(_, _, v)| *v).collect();
    for sql in [
        format!("CREATE DATABASE `{db}`"),
        format!("CREATE TABLE `{db}`.conf ({})", ddl.join(", ")),
        format!(
            "INSERT INTO `{db}`.conf ({}) VALUES ({})",
            names.join(", "),
            values.join(", ")
        ),
    ] {
        sqlx::raw_sql(AssertSqlSafe(sql.clone()))
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let pairs = async {
        let live = introspect_all(&pool, &db, COLUMNS).await;
        let types = <MySql as Backend>::resolve_types(&pool, std::slice::from_ref(&live)).await.expect("resolve types");
        let table = live;
        let mut out: Vec<Pair> = Vec::new();
        matrix!(pool, db, table, types, out;
            i8, i16, i32, i64, u8, u16, u32, u64, f32, f64, bool, String, Vec<u8>,
            serde_json::Value, Json<std::collections::HashMap<String, i64>>, uuid::Uuid, uuid::fmt::Hyphenated,
            chrono::NaiveDate, chrono::NaiveDateTime, chrono::NaiveTime, chrono::DateTime<chrono::Utc>,
            time::Date, time::PrimitiveDateTime, time::OffsetDateTime, time::Time,
            rust_decimal::Decimal, Option<i64>, Option<String>,
        );
        out
    }
    .await;
    report("mysql", &pairs, RISKS, 840, 61);
}
