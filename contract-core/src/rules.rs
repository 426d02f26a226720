//! Dialect rules that sqlx's `compatible()` does not cover (DESIGN D1): MySQL integer
//! width and SQLite type affinity. Pure functions, used by the backends' type oracles.

use serde::{Deserialize, Serialize};

/// Byte width of a MySQL integer type name (`tinyint` … `bigint`, any case, with or
/// without `unsigned`), or `None` for a non-integer type.
#[must_use]
pub fn mysql_integer_width(type_name: &str) -> Option<u8> {
    let base = type_name.trim().split([' ', '(']).next().unwrap_or("").to_ascii_lowercase();
    match base.as_str() {
        "tinyint" => Some(1),
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
    let (expected, live) = (mysql_integer_width(expected_sql_type)?, mysql_integer_width(live_type)?);
    (live > expected).then(|| format!("{live_type} (values wider than {expected_sql_type} fail to decode)"))
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
