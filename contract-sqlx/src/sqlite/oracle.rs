//! The SQLite type verdict.
//!
//! SQLite decoding checks the *value's* storage class (`sqlite3_value_type`), not the
//! declared type (`ARCHITECTURE.md` section 4, SQLite). So the verdict predicts which storage
//! classes the column's typical values have — from SQLite's affinity rules
//! ([`contract_core::rules::sqlite_affinity`]) refined by sqlx's own reading of the
//! declared type — and asks sqlx's `compatible()` about the *real* runtime type info of
//! each class (taken from a probe row, never built by hand):
//!
//! * every predicted class compatible → fits, unless decoding parses or narrows the value
//!   (JSON, UUID, date/time text not declared as that type, narrow integers on wide
//!   columns): then a value-dependent risk;
//! * some compatible → fits with a risk (the class depends on the value);
//! * none → mismatch.

use contract_core::rules::{self, Affinity};
use sqlx::sqlite::SqliteTypeInfo;
use sqlx::{Sqlite, TypeInfo};

use crate::backend::TypeMap;
use crate::check::TypeCheck;

/// The storage classes, named as sqlx names their runtime type infos.
pub(super) const CLASSES: [&str; 5] = ["INTEGER", "REAL", "TEXT", "BLOB", "NULL"];

/// The type-map key of a storage class's runtime type info (a NUL byte cannot start a
/// declared type).
pub(super) fn class_key(class: &str) -> String {
    format!("\0{class}")
}

/// The storage classes typical values of a column declared `declared` have. `decl_name`
/// is sqlx's reading of the declared type (`DATETIME`, `BOOLEAN`, ... or `NULL` when it
/// does not recognise it).
pub(super) fn predicted_classes(declared: &str, decl_name: &str) -> &'static [&'static str] {
    match rules::sqlite_affinity(declared) {
        Affinity::Integer => &["INTEGER"],
        Affinity::Text => &["TEXT"],
        Affinity::Real => &["REAL"],
        // No declared type: values keep whatever class they were written with.
        Affinity::Blob if declared.trim().is_empty() => &["INTEGER", "REAL", "TEXT", "BLOB"],
        Affinity::Blob => &["BLOB"],
        Affinity::Numeric => match decl_name {
            "BOOLEAN" => &["INTEGER"],
            // sqlx writes dates and times as ISO-8601 text, which NUMERIC affinity keeps.
            "DATE" | "TIME" | "DATETIME" => &["TEXT"],
            _ => {
                let upper = declared.to_ascii_uppercase();
                if is_json(declared) {
                    // JSON documents are text; NUMERIC affinity keeps non-numeric text.
                    &["TEXT"]
                } else if upper.contains("NUM") || upper.contains("DEC") {
                    &["INTEGER", "REAL"]
                } else {
                    &["INTEGER", "REAL", "TEXT"]
                }
            }
        },
    }
}

/// `(compatible, risk)` for a field checked by `check` on a column declared `declared`.
pub(super) fn verdict(
    check: &TypeCheck<Sqlite>,
    declared: &str,
    types: &TypeMap<Sqlite>,
) -> (bool, Option<String>) {
    let decl_name = types
        .get(&super::parse::type_key(declared))
        .map_or("NULL", SqliteTypeInfo::name);
    let classes = predicted_classes(declared, decl_name);
    let fits: Vec<bool> = classes
        .iter()
        .map(|c| {
            types
                .get(&class_key(c))
                .is_some_and(|ti| check.is_compatible(ti))
        })
        .collect();
    let shown = if declared.trim().is_empty() {
        "untyped column"
    } else {
        declared
    };
    let expected = check.expected_sql_type();
    if !fits.contains(&true) {
        return (false, None);
    }
    if fits.contains(&false) {
        let ok: Vec<&str> = classes
            .iter()
            .zip(&fits)
            .filter(|(_, f)| **f)
            .map(|(c, _)| *c)
            .collect();
        return (
            true,
            Some(format!(
                "{shown} (holds {} values depending on the value; {expected} decodes only {})",
                classes.join(" or "),
                ok.join(" or ")
            )),
        );
    }
    (
        true,
        content_risk(check, declared, decl_name, classes, &expected, shown),
    )
}

/// Every class fits, but decoding parses or narrows the value.
fn content_risk(
    check: &TypeCheck<Sqlite>,
    declared: &str,
    decl_name: &str,
    classes: &[&str],
    expected: &str,
    shown: &str,
) -> Option<String> {
    let name = rules::rust_type_name(check.rust_type());
    let text = classes.contains(&"TEXT");
    match name {
        "Json" | "Value" | "JsonValue" | "RawValue" if !is_json(declared) => Some(format!(
            "{shown} (values that are not valid JSON fail to decode)"
        )),
        "Uuid" | "Hyphenated" | "Simple" => Some(format!(
            "{shown} (values that are not a UUID fail to decode)"
        )),
        _ if text && matches!(expected, "DATE" | "TIME" | "DATETIME") && decl_name != expected => {
            Some(format!(
                "{shown} (text that is not a {} fails to decode)",
                expected.to_ascii_lowercase()
            ))
        }
        _ => {
            let field = integer_bits(name)?;
            let column = declared_integer_bits(declared);
            (classes.contains(&"INTEGER") && column > field)
                .then(|| format!("{shown} (values wider than {name} fail to decode)"))
        }
    }
}

/// A column declared `JSON` / `JSONB`: its values are meant to be JSON documents.
fn is_json(declared: &str) -> bool {
    declared.trim().to_ascii_uppercase().starts_with("JSON")
}

/// The magnitude bits of a narrow Rust integer type (`None` for 64-bit and
/// non-integers): `i32` 31, `u32` 32.
fn integer_bits(rust_name: &str) -> Option<u8> {
    match rust_name {
        "i8" => Some(7),
        "u8" => Some(8),
        "i16" => Some(15),
        "u16" => Some(16),
        "i32" => Some(31),
        "u32" => Some(32),
        _ => None,
    }
}

/// The magnitude bits the declared integer type suggests: SQLite stores every integer in
/// up to 8 bytes, but `INT`/`INTEGER` conventionally map to `i32` (as sqlx's own `i32`
/// does). Spaces do not count (`UNSIGNED BIG INT` is a 64-bit name), and `UNSIGNED` adds
/// the sign bit (`INT UNSIGNED` holds what `u32` does, not `i32`).
fn declared_integer_bits(declared: &str) -> u8 {
    let upper: String = declared
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase();
    let bytes = if upper.contains("BIGINT") || upper.contains("INT8") || upper.contains("INT64") {
        8
    } else if upper.contains("TINYINT") || upper.starts_with("BOOL") {
        1
    } else if upper.contains("SMALLINT") || upper.contains("INT2") {
        2
    } else if upper.contains("MEDIUMINT") {
        3
    } else {
        4
    };
    bytes * 8 - u8::from(!upper.contains("UNSIGNED"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicted_classes_follow_affinity_and_sqlx_declared_types() {
        assert_eq!(predicted_classes("BIGINT", "INTEGER"), ["INTEGER"]);
        assert_eq!(predicted_classes("VARCHAR(10)", "TEXT"), ["TEXT"]);
        assert_eq!(predicted_classes("DOUBLE", "REAL"), ["REAL"]);
        assert_eq!(predicted_classes("BLOB", "BLOB"), ["BLOB"]);
        assert_eq!(predicted_classes("", "NULL").len(), 4);
        assert_eq!(predicted_classes("BOOLEAN", "BOOLEAN"), ["INTEGER"]);
        assert_eq!(predicted_classes("DATETIME", "DATETIME"), ["TEXT"]);
        assert_eq!(predicted_classes("NUMERIC", "NULL"), ["INTEGER", "REAL"]);
        assert_eq!(predicted_classes("JSON", "NULL"), ["TEXT"]);
        assert_eq!(
            predicted_classes("STRING", "NULL"),
            ["INTEGER", "REAL", "TEXT"]
        );
    }

    #[test]
    fn declared_integer_bits_reads_common_spellings() {
        assert_eq!(declared_integer_bits("BIGINT"), 63);
        assert_eq!(declared_integer_bits("integer"), 31);
        assert_eq!(declared_integer_bits("SMALLINT"), 15);
        assert_eq!(declared_integer_bits("UNSIGNED BIG INT"), 64);
        assert_eq!(declared_integer_bits("int64"), 63);
        assert_eq!(declared_integer_bits("INT UNSIGNED"), 32);
    }
}
