//! Dialect rules that sqlx's `compatible()` does not cover (`ARCHITECTURE.md` D1): MySQL integer
//! width and SQLite type affinity. Pure functions, used by the backends' type oracles.

use serde::{Deserialize, Serialize};

/// Byte width of a MySQL integer type name (`tinyint` … `bigint`, any case, with or
/// without `unsigned`), or `None` for a non-integer type. `boolean` (sqlx reads it as an
/// `i8`), `year` (1901–2155) and `bit(n)` (⌈n/8⌉ bytes) count as integers too.
#[must_use]
pub fn mysql_integer_width(type_name: &str) -> Option<u8> {
    let type_name = type_name.trim().to_ascii_lowercase();
    let base = type_name.split([' ', '(']).next().unwrap_or("");
    match base {
        "bit" => {
            let bits: u16 = type_name
                .strip_prefix("bit(")
                .and_then(|r| r.split(')').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            u8::try_from(bits.div_ceil(8)).ok()
        }
        "year" => Some(2),
        "bool" | "boolean" | "tinyint" => Some(1),
        "smallint" => Some(2),
        "mediumint" => Some(3),
        "int" | "integer" => Some(4),
        "bigint" => Some(8),
        _ => None,
    }
}

/// The value-dependent hazard of reading a MySQL integer column into a narrower field.
///
/// sqlx's `compatible()` accepts any signed integer column for any signed integer field and
/// fails only when a value does not fit ("out of range integral type conversion
/// attempted"), so a wider column is a risk, not a mismatch.
///
/// ```
/// use contract_core::rules::mysql_width_risk;
/// assert!(mysql_width_risk("INT", "bigint").is_some());
/// assert!(mysql_width_risk("BIGINT", "int").is_none());
/// ```
#[must_use]
pub fn mysql_width_risk(expected_sql_type: &str, live_type: &str) -> Option<String> {
    let (expected, live) = (
        mysql_integer_width(expected_sql_type)?,
        mysql_integer_width(live_type)?,
    );
    (live > expected)
        .then(|| format!("{live_type} (values wider than {expected_sql_type} fail to decode)"))
}

/// The name of a Rust type as written, without `Option<...>`, generic arguments or path:
/// `Option<sqlx::types::Json<Payload>>` → `Json`. Lets the type oracles recognise the
/// field types whose decoding parses the value (UUIDs, JSON), which sqlx's type infos do
/// not tell apart from plain bytes or text.
///
/// ```
/// use contract_core::rules::rust_type_name;
/// assert_eq!(rust_type_name("Option<uuid::Uuid>"), "Uuid");
/// assert_eq!(rust_type_name("sqlx::types::Json<Vec<u8>>"), "Json");
/// ```
#[must_use]
pub fn rust_type_name(rust_type: &str) -> &str {
    let rust_type = rust_type.trim();
    let (head, args) = match rust_type.split_once('<') {
        Some((head, rest)) => (head.trim(), rest.strip_suffix('>').unwrap_or(rest)),
        None => (rust_type, ""),
    };
    let name = head.rsplit("::").next().unwrap_or(head).trim();
    if name == "Option" && !args.is_empty() {
        rust_type_name(args)
    } else {
        name
    }
}

/// SQLite column affinity, from the declared type (SQLite docs §3.1, "Determination of
/// Column Affinity").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Affinity {
    /// Declared type contains `INT`.
    Integer,
    /// Contains `CHAR`, `CLOB` or `TEXT`.
    Text,
    /// Contains `BLOB`, or no declared type.
    Blob,
    /// Contains `REAL`, `FLOA` or `DOUB`.
    Real,
    /// Anything else (`NUMERIC`, `DECIMAL`, `BOOLEAN`, `DATETIME`, ...).
    Numeric,
}

/// The affinity SQLite gives a column declared as `declared`.
///
/// ```
/// use contract_core::rules::{sqlite_affinity, Affinity};
/// assert_eq!(sqlite_affinity("BIGINT"), Affinity::Integer);
/// assert_eq!(sqlite_affinity("VARCHAR(10)"), Affinity::Text);
/// assert_eq!(sqlite_affinity(""), Affinity::Blob);
/// assert_eq!(sqlite_affinity("DATETIME"), Affinity::Numeric);
/// ```
#[must_use]
pub fn sqlite_affinity(declared: &str) -> Affinity {
    let t = declared.to_ascii_uppercase();
    if t.contains("INT") {
        Affinity::Integer
    } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
        Affinity::Text
    } else if t.contains("BLOB") || t.trim().is_empty() {
        Affinity::Blob
    } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
        Affinity::Real
    } else {
        Affinity::Numeric
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_width_risk_only_for_wider_integer_columns() {
        assert!(mysql_width_risk("INT", "bigint").is_some());
        assert!(mysql_width_risk("TINYINT", "smallint").is_some());
        assert!(mysql_width_risk("SMALLINT", "mediumint").is_some());
        assert!(mysql_width_risk("INT", "int").is_none());
        assert!(mysql_width_risk("BIGINT", "tinyint").is_none());
        assert!(mysql_width_risk("VARCHAR", "text").is_none());
        assert!(mysql_width_risk("INT UNSIGNED", "bigint unsigned").is_some());
    }

    #[test]
    fn mysql_width_counts_boolean_year_and_bit() {
        assert!(mysql_width_risk("BOOLEAN", "int(11)").is_some());
        assert!(mysql_width_risk("BOOLEAN", "tinyint(1)").is_none());
        assert!(mysql_width_risk("TINYINT UNSIGNED", "year(4)").is_some());
        assert!(mysql_width_risk("SMALLINT UNSIGNED", "year(4)").is_none());
        assert_eq!(mysql_integer_width("bit(9)"), Some(2));
        assert_eq!(mysql_integer_width("bit"), Some(1));
        assert!(mysql_width_risk("BOOLEAN", "bit(1)").is_none());
    }

    #[test]
    fn rust_type_name_strips_option_paths_and_generics() {
        assert_eq!(rust_type_name("i64"), "i64");
        assert_eq!(
            rust_type_name("std::option::Option<chrono::DateTime<Utc>>"),
            "DateTime"
        );
        assert_eq!(rust_type_name("Option < Uuid >"), "Uuid");
        assert_eq!(rust_type_name("Vec<u8>"), "Vec");
    }

    #[test]
    fn sqlite_affinity_follows_the_documented_order() {
        // "INT" wins over "CHAR" because rule 1 comes first.
        assert_eq!(sqlite_affinity("CHARINT"), Affinity::Integer);
        assert_eq!(sqlite_affinity("FLOATING POINT"), Affinity::Integer);
        assert_eq!(sqlite_affinity("clob"), Affinity::Text);
        assert_eq!(sqlite_affinity("DOUBLE PRECISION"), Affinity::Real);
        assert_eq!(sqlite_affinity("BOOLEAN"), Affinity::Numeric);
        assert_eq!(sqlite_affinity("STRING"), Affinity::Numeric);
    }
}
