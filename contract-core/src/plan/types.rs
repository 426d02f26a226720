//! SQL type names: what to create a column with, and how live and expected PostgreSQL
//! type names compare (for the type-change matrix).

use crate::error::IdentError;
use crate::ident::Dialect;

/// The DDL type for a column whose field sqlx maps to `sqlx_name` (for example `INT8`,
/// `VARCHAR`, `conf.mood`), in `dialect`.
///
/// Plain names are kept (lowercased on PostgreSQL); MySQL types that need a length get a
/// sensible one; anything else (a custom type) is quoted part by part, never pasted.
///
/// # Errors
///
/// [`IdentError`] when a custom type name cannot be quoted.
pub fn ddl_type(dialect: Dialect, sqlx_name: &str) -> Result<String, IdentError> {
    let (base, arrays) = split_array(sqlx_name);
    let plain = !base.is_empty()
        && base
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ' ');
    let rendered = if plain {
        match dialect {
            Dialect::Postgres => base.to_ascii_lowercase(),
            Dialect::MySql => match base.to_ascii_uppercase().as_str() {
                "VARCHAR" | "CHAR" => "TEXT".to_owned(),
                "VARBINARY" => "BLOB".to_owned(),
                "BINARY" => "BINARY(16)".to_owned(),
                other => other.to_owned(),
            },
            Dialect::Sqlite => base.to_ascii_uppercase(),
        }
    } else {
        let parts: Result<Vec<String>, IdentError> =
            base.split('.').map(|p| dialect.quote(p)).collect();
        parts?.join(".")
    };
    Ok(format!("{rendered}{}", "[]".repeat(arrays)))
}

fn split_array(name: &str) -> (&str, usize) {
    let mut base = name.trim();
    let mut arrays = 0;
    while let Some(stripped) = base.strip_suffix("[]") {
        base = stripped;
        arrays += 1;
    }
    (base, arrays)
}

/// A PostgreSQL type name in canonical short form, without modifiers: `format_type`
/// output (`integer`, `character varying(10)`, `timestamp with time zone`) and sqlx names
/// (`INT4`, `VARCHAR`, `TIMESTAMPTZ`) both map to `int4`, `varchar`, `timestamptz`.
#[must_use]
pub fn pg_canonical(name: &str) -> String {
    let (base, arrays) = split_array(name);
    let lower = base.to_ascii_lowercase();
    let no_mod = match lower.find('(') {
        Some(i) => {
            let tail = lower[lower.find(')').map_or(lower.len(), |j| j + 1)..]
                .trim()
                .to_owned();
            format!(
                "{}{}",
                lower[..i].trim(),
                if tail.is_empty() {
                    String::new()
                } else {
                    format!(" {tail}")
                }
            )
        }
        None => lower,
    };
    let canonical = match no_mod.as_str() {
        "smallint" => "int2",
        "integer" | "int" => "int4",
        "bigint" => "int8",
        "real" => "float4",
        "double precision" => "float8",
        "boolean" => "bool",
        "character varying" => "varchar",
        "character" | "char" => "bpchar",
        "timestamp without time zone" | "timestamp" => "timestamp",
        "timestamp with time zone" => "timestamptz",
        "time without time zone" => "time",
        "time with time zone" => "timetz",
        "decimal" => "numeric",
        other => other,
    };
    format!("{canonical}{}", "[]".repeat(arrays))
}

/// How a PostgreSQL `ALTER COLUMN TYPE` from `from` to `to` behaves
/// (`ARCHITECTURE.md` section 5, type changes; measured on PostgreSQL 15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PgTypeChange {
    /// Metadata-only: brief ACCESS EXCLUSIVE.
    MetadataOnly,
    /// No rewrite, but indexes on the column are rebuilt (timestamp ↔ timestamptz under UTC).
    IndexRebuild,
    /// Full table and index rewrite, value-preserving.
    Rewrite,
    /// Narrowing or lossy: may fail or silently lose data.
    Lossy,
    /// A cast that may fail on existing values (text → int, ...).
    MayFail,
    /// No conversion known.
    Unknown,
}

/// Classifies a PostgreSQL type change between canonical names (see [`pg_canonical`]).
#[must_use]
pub fn pg_type_change(from: &str, to: &str) -> PgTypeChange {
    use PgTypeChange::{IndexRebuild, Lossy, MayFail, MetadataOnly, Rewrite, Unknown};
    let rank = |t: &str| match t {
        "int2" => Some(1),
        "int4" => Some(2),
        "int8" => Some(3),
        "numeric" => Some(4),
        _ => None,
    };
    match (from, to) {
        (f, t) if f == t => MetadataOnly,
        ("varchar", "text") | ("text", "varchar") => MetadataOnly,
        ("timestamp", "timestamptz") | ("timestamptz", "timestamp") => IndexRebuild,
        ("float4", "float8")
        | ("json", "jsonb")
        | ("jsonb", "json")
        | ("date", "timestamp")
        | ("date", "timestamptz") => Rewrite,
        ("int2" | "int4", "float8") | ("bpchar", "text" | "varchar") => Rewrite,
        ("int2[]", "int4[]" | "int8[]")
        | ("int4[]", "int8[]")
        | ("float4[]", "float8[]")
        | ("varchar[]", "text[]") => Rewrite,
        ("float8", "float4")
        | ("numeric", "float8" | "float4")
        | ("timestamptz" | "timestamp", "date") => Lossy,
        (f, "text") if f != "bytea" => Rewrite,
        ("text" | "varchar" | "bpchar", _) => MayFail,
        (f, t) => match (rank(f), rank(t)) {
            (Some(a), Some(b)) if a < b => Rewrite,
            (Some(_), Some(_)) => Lossy,
            _ => Unknown,
        },
    }
}

/// The type modifiers of a PostgreSQL type name: `character varying(10)` → `[10]`,
/// `numeric(12,2)` → `[12, 2]`, `timestamp(3) with time zone` → `[3]`, `text` → `[]`.
#[must_use]
pub fn pg_typmods(name: &str) -> Vec<u32> {
    let Some((_, rest)) = name.split_once('(') else {
        return Vec::new();
    };
    let Some((inside, _)) = rest.split_once(')') else {
        return Vec::new();
    };
    inside
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

/// How changing a PostgreSQL column from `live` to `declared` behaves when the two differ
/// only in their modifiers (`varchar(50)` → `varchar(100)`, `numeric(10,2)` →
/// `numeric(12,2)`); `None` when the base types differ or nothing differs.
#[must_use]
pub fn pg_typmod_change(live: &str, declared: &str) -> Option<PgTypeChange> {
    use PgTypeChange::{Lossy, MetadataOnly, Rewrite, Unknown};
    let base = pg_canonical(live);
    if base != pg_canonical(declared) {
        return None;
    }
    let (from, to) = (pg_typmods(live), pg_typmods(declared));
    if from == to {
        return None;
    }
    let grows = |a: Option<&u32>, b: Option<&u32>| match (a, b) {
        (_, None) => true,        // unbounded target
        (None, Some(_)) => false, // bounding an unbounded column
        (Some(a), Some(b)) => b >= a,
    };
    Some(match base.as_str() {
        "varchar" | "timestamp" | "timestamptz" | "time" | "timetz" | "interval" | "varbit" => {
            if grows(from.first(), to.first()) {
                MetadataOnly
            } else {
                Lossy
            }
        }
        "numeric" => match (from.as_slice(), to.as_slice()) {
            (_, []) => MetadataOnly,
            ([p, s], [p2, s2]) if s2 == s && p2 >= p => MetadataOnly,
            ([p, s], [p2, s2]) if s2 >= s && p2 - s2 >= p - s => Rewrite,
            _ => Lossy,
        },
        "bpchar" => {
            if grows(from.first(), to.first()) {
                Rewrite
            } else {
                Lossy
            }
        }
        _ => Unknown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_canonical_maps_catalog_and_sqlx_spellings_together() {
        for (a, b) in [
            ("integer", "INT4"),
            ("bigint", "INT8"),
            ("character varying(10)", "VARCHAR"),
            ("timestamp with time zone", "TIMESTAMPTZ"),
            ("timestamp(3) without time zone", "TIMESTAMP"),
            ("numeric(12,2)", "NUMERIC"),
            ("integer[]", "INT4[]"),
            ("double precision", "FLOAT8"),
        ] {
            assert_eq!(pg_canonical(a), pg_canonical(b), "{a} vs {b}");
        }
    }

    #[test]
    fn pg_type_change_follows_the_measured_matrix() {
        assert_eq!(pg_type_change("int4", "int8"), PgTypeChange::Rewrite);
        assert_eq!(pg_type_change("int2", "int4"), PgTypeChange::Rewrite);
        assert_eq!(pg_type_change("int8", "int4"), PgTypeChange::Lossy);
        assert_eq!(
            pg_type_change("varchar", "text"),
            PgTypeChange::MetadataOnly
        );
        assert_eq!(
            pg_type_change("timestamp", "timestamptz"),
            PgTypeChange::IndexRebuild
        );
        assert_eq!(pg_type_change("text", "int8"), PgTypeChange::MayFail);
        assert_eq!(pg_type_change("text", "jsonb"), PgTypeChange::MayFail);
        assert_eq!(pg_type_change("float8", "float4"), PgTypeChange::Lossy);
        assert_eq!(pg_type_change("int4[]", "int8[]"), PgTypeChange::Rewrite);
        assert_eq!(pg_type_change("bool", "int4"), PgTypeChange::Unknown);
        assert_eq!(pg_type_change("uuid", "text"), PgTypeChange::Rewrite);
    }

    #[test]
    fn pg_typmod_change_widens_without_rewrite_and_refuses_narrowing() {
        assert_eq!(
            pg_typmod_change("character varying(50)", "varchar(100)"),
            Some(PgTypeChange::MetadataOnly)
        );
        assert_eq!(
            pg_typmod_change("character varying(50)", "varchar"),
            Some(PgTypeChange::MetadataOnly)
        );
        assert_eq!(
            pg_typmod_change("character varying(100)", "varchar(50)"),
            Some(PgTypeChange::Lossy)
        );
        assert_eq!(
            pg_typmod_change("numeric(10,2)", "numeric(12,2)"),
            Some(PgTypeChange::MetadataOnly)
        );
        assert_eq!(
            pg_typmod_change("numeric(10,2)", "numeric(12,3)"),
            Some(PgTypeChange::Rewrite)
        );
        assert_eq!(
            pg_typmod_change("numeric(10,2)", "numeric(10,3)"),
            Some(PgTypeChange::Lossy)
        );
        assert_eq!(
            pg_typmod_change("timestamp(3) with time zone", "timestamptz(6)"),
            Some(PgTypeChange::MetadataOnly)
        );
        assert_eq!(
            pg_typmod_change("character varying(50)", "varchar(50)"),
            None
        );
        assert_eq!(pg_typmod_change("integer", "bigint"), None);
    }

    #[test]
    fn ddl_type_quotes_custom_types_and_fixes_mysql_lengths() {
        assert_eq!(ddl_type(Dialect::Postgres, "INT8").unwrap(), "int8");
        assert_eq!(ddl_type(Dialect::Postgres, "INT4[]").unwrap(), "int4[]");
        assert_eq!(
            ddl_type(Dialect::Postgres, "conf.mood").unwrap(),
            r#""conf"."mood""#
        );
        assert_eq!(
            ddl_type(Dialect::Postgres, "x\"; drop").unwrap(),
            r#""x""; drop""#
        );
        assert_eq!(ddl_type(Dialect::MySql, "VARCHAR").unwrap(), "TEXT");
        assert_eq!(
            ddl_type(Dialect::MySql, "BIGINT UNSIGNED").unwrap(),
            "BIGINT UNSIGNED"
        );
        assert_eq!(ddl_type(Dialect::Sqlite, "INTEGER").unwrap(), "INTEGER");
    }
}
