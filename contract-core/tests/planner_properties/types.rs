//! The column types a case draws from, per dialect, and a model of sqlx's type verdicts
//! (the oracle the diff asks): a field's SQL type fits the live column when both name the
//! same type family, as sqlx's `compatible()` decides for these types.

use contract_core::plan::types::pg_typmod_change;
use contract_core::{ColumnContract, Dialect, LiveColumn, TableContract, TypeFit, TypeOracle};

/// One field type: its Rust name, the SQL type sqlx maps it to, how the catalog spells a
/// live column of it, and the declared `sql_type` a contract may give it.
#[derive(Debug)]
pub struct Ty {
    pub rust: &'static str,
    pub sqlx: &'static str,
    pub live: &'static str,
    pub declared: Option<&'static str>,
}

const fn ty(rust: &'static str, sqlx: &'static str, live: &'static str) -> Ty {
    Ty {
        rust,
        sqlx,
        live,
        declared: None,
    }
}

const PG: [Ty; 19] = [
    ty("i64", "INT8", "bigint"),
    ty("i16", "INT2", "smallint"),
    ty("i32", "INT4", "integer"),
    ty("f32", "FLOAT4", "real"),
    ty("f64", "FLOAT8", "double precision"),
    ty("bool", "BOOL", "boolean"),
    Ty {
        declared: Some("varchar(50)"),
        ..ty("String", "TEXT", "text")
    },
    ty("String", "TEXT", "character varying(40)"),
    ty("Vec<u8>", "BYTEA", "bytea"),
    ty("Uuid", "UUID", "uuid"),
    ty("DateTime<Utc>", "TIMESTAMPTZ", "timestamp with time zone"),
    ty("NaiveDateTime", "TIMESTAMP", "timestamp without time zone"),
    ty("NaiveDate", "DATE", "date"),
    ty("Value", "JSONB", "jsonb"),
    ty("Value", "JSONB", "json"),
    Ty {
        declared: Some("numeric(12,2)"),
        ..ty("Decimal", "NUMERIC", "numeric(12,2)")
    },
    ty("Vec<i32>", "INT4[]", "integer[]"),
    ty("Vec<String>", "TEXT[]", "text[]"),
    ty("Mood", "mood", "mood"),
];

const MYSQL: [Ty; 16] = [
    ty("i64", "BIGINT", "bigint"),
    ty("i8", "TINYINT", "tinyint"),
    ty("i16", "SMALLINT", "smallint"),
    ty("i32", "INT", "int"),
    ty("u32", "INT UNSIGNED", "int unsigned"),
    ty("u64", "BIGINT UNSIGNED", "bigint unsigned"),
    ty("f64", "DOUBLE", "double"),
    ty("bool", "BOOLEAN", "tinyint(1)"),
    ty("String", "VARCHAR", "varchar(255)"),
    ty("String", "VARCHAR", "text"),
    ty("Vec<u8>", "VARBINARY", "blob"),
    ty("Value", "BINARY", "json"),
    ty("DateTime<Utc>", "TIMESTAMP", "timestamp"),
    ty("NaiveDateTime", "DATETIME", "datetime"),
    ty("NaiveDate", "DATE", "date"),
    ty("Uuid", "BINARY", "binary(16)"),
];

const SQLITE: [Ty; 9] = [
    ty("i64", "INTEGER", "INTEGER"),
    ty("i32", "INTEGER", "INT"),
    ty("f64", "REAL", "REAL"),
    ty("String", "TEXT", "TEXT"),
    ty("String", "TEXT", "VARCHAR(40)"),
    ty("Vec<u8>", "BLOB", "BLOB"),
    ty("bool", "BOOLEAN", "BOOLEAN"),
    ty("DateTime<Utc>", "DATETIME", "DATETIME"),
    ty("Value", "TEXT", "JSON"),
];

pub fn by_dialect(dialect: Dialect) -> &'static [Ty] {
    match dialect {
        Dialect::Postgres => &PG,
        Dialect::MySql => &MYSQL,
        Dialect::Sqlite => &SQLITE,
    }
}

impl Ty {
    /// A nullable live column of this type, as introspection reports it (the enum type
    /// qualified unless it is in `public`, on the search path).
    pub fn live_column(
        &self,
        name: &str,
        dialect: Dialect,
        enum_schema: Option<&str>,
    ) -> LiveColumn {
        let mut column = LiveColumn::new(name, self.live);
        column.type_key = type_key(dialect, self.live);
        if self.rust == "Mood" {
            let key = match enum_schema {
                Some("public") | None => "mood".to_owned(),
                Some(schema) => format!("{schema}.mood"),
            };
            column.data_type = key.clone();
            column.type_key = key;
        }
        column
    }
}

/// Live spellings related to a field type: narrower relatives the planner may widen, and
/// types it must refuse to convert from.
pub fn related(dialect: Dialect, rust: &str) -> &'static [&'static str] {
    match (dialect, rust) {
        (Dialect::Postgres, "i64") => &["integer", "smallint", "numeric(20,0)", "text"],
        (Dialect::Postgres, "i32") => &["smallint", "bigint"],
        (Dialect::Postgres, "f64") => &["real", "integer", "numeric"],
        (Dialect::Postgres, "String") => &[
            "character varying(40)",
            "character(10)",
            "uuid",
            "integer",
            "bytea",
            "text[]",
        ],
        (Dialect::Postgres, "Value") => &["json", "text"],
        (Dialect::Postgres, "DateTime<Utc>") => &["timestamp without time zone", "date"],
        (Dialect::Postgres, "NaiveDateTime") => &["date", "timestamp with time zone"],
        (Dialect::Postgres, "Decimal") => &["integer", "bigint", "double precision"],
        (Dialect::Postgres, "Vec<i32>") => &["smallint[]", "bigint[]"],
        (Dialect::Postgres, "Vec<String>") => &["character varying(20)[]"],
        (Dialect::MySql, "i64") => &["int", "smallint", "bigint unsigned"],
        (Dialect::MySql, "i32") => &["bigint", "tinyint"],
        (Dialect::MySql, "String") => &["int", "varchar(10)"],
        (Dialect::Sqlite, "i64" | "i32") => &["TEXT", "REAL", "NUMERIC", "STRING", ""],
        (Dialect::Sqlite, "f64") => &["INTEGER", "TEXT"],
        (Dialect::Sqlite, "String") => &["INTEGER", "BLOB", "VARCHAR(10)"],
        (Dialect::Sqlite, "Value") => &["TEXT", "BLOB"],
        (Dialect::Sqlite, "bool") => &["INTEGER", "TEXT"],
        _ => &[],
    }
}

/// The type key introspection reports for a column declared `written`: the PostgreSQL
/// type without modifiers, the MySQL/SQLite type as written.
pub fn type_key(dialect: Dialect, written: &str) -> String {
    match dialect {
        Dialect::Postgres => pg_family(written),
        Dialect::MySql | Dialect::Sqlite => written.to_owned(),
    }
}

/// A declared type with its modifier halved (narrower) or doubled (wider).
pub fn resized(declared: &str, wider: bool) -> String {
    let scale = |n: u32| if wider { n * 2 } else { n / 2 };
    match declared {
        "varchar(50)" => format!("character varying({})", scale(50)),
        _ => format!("numeric({},2)", scale(12).max(3)),
    }
}

/// PostgreSQL type name → family: modifiers dropped, the catalog's long names folded to
/// the short ones, a qualified custom type to its last part.
pub fn pg_family(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    let arrays = lower.matches("[]").count();
    let base = lower.trim_end_matches("[]");
    let base = match base.split_once('(') {
        Some((head, tail)) => format!(
            "{}{}",
            head.trim(),
            tail.split_once(')').map_or("", |(_, t)| t)
        ),
        None => base.to_owned(),
    };
    let short = match base.trim() {
        "smallint" => "int2",
        "integer" | "int" => "int4",
        "bigint" => "int8",
        "real" => "float4",
        "double precision" => "float8",
        "boolean" => "bool",
        "character varying" => "varchar",
        "character" | "char" => "bpchar",
        "timestamp with time zone" => "timestamptz",
        "timestamp without time zone" => "timestamp",
        "decimal" => "numeric",
        other => other,
    };
    let short = short.rsplit('.').next().unwrap_or(short).replace('"', "");
    format!("{short}{}", "[]".repeat(arrays))
}

/// PostgreSQL built-in type families (anything else is a custom type).
pub const PG_BUILTIN: [&str; 17] = [
    "int2",
    "int4",
    "int8",
    "float4",
    "float8",
    "bool",
    "text",
    "varchar",
    "bpchar",
    "bytea",
    "uuid",
    "timestamptz",
    "timestamp",
    "date",
    "jsonb",
    "json",
    "numeric",
];

/// A MySQL type name → (family, integer rank, unsigned).
fn mysql_family(name: &str) -> (String, u8, bool) {
    let upper = name.trim().to_ascii_uppercase();
    let unsigned = upper.contains("UNSIGNED");
    let base = upper.replace(" UNSIGNED", "");
    let (head, size) = match base.split_once('(') {
        Some((h, rest)) => (h.trim().to_owned(), rest.trim_end_matches(')').to_owned()),
        None => (base.trim().to_owned(), String::new()),
    };
    let rank = match head.as_str() {
        "TINYINT" if size == "1" => return ("BOOL".into(), 0, false),
        "BOOLEAN" | "BOOL" => return ("BOOL".into(), 0, false),
        "TINYINT" => 1,
        "SMALLINT" => 2,
        "MEDIUMINT" => 3,
        "INT" | "INTEGER" => 4,
        "BIGINT" => 5,
        _ => 0,
    };
    if rank > 0 {
        return ("INT".into(), rank, unsigned);
    }
    let family = match head.as_str() {
        "VARCHAR" | "CHAR" | "TEXT" | "TINYTEXT" | "MEDIUMTEXT" | "LONGTEXT" => "TEXT",
        "VARBINARY" | "BLOB" | "LONGBLOB" | "MEDIUMBLOB" => "BLOB",
        "BINARY" => "BINARY",
        "TIMESTAMP" | "DATETIME" => "DATETIME",
        other => other,
    };
    (family.to_owned(), 0, false)
}

/// A SQLite declared type → family.
fn sqlite_family(name: &str) -> &'static str {
    let upper = name.to_ascii_uppercase();
    if upper.starts_with("BOOL") {
        "BOOL"
    } else if upper.contains("INT") {
        "INT"
    } else if upper.contains("CHAR") || upper.contains("CLOB") || upper.contains("TEXT") {
        "TEXT"
    } else if upper.contains("BLOB") {
        "BLOB"
    } else if upper.contains("REAL") || upper.contains("FLOA") || upper.contains("DOUB") {
        "REAL"
    } else if upper.starts_with("DATETIME") || upper.starts_with("TIMESTAMP") {
        "DATETIME"
    } else if upper == "JSON" {
        "JSON"
    } else {
        "OTHER"
    }
}

/// The model oracle.
pub struct Oracle {
    pub dialect: Dialect,
    pub expected: std::collections::BTreeMap<String, String>,
}

impl TypeOracle for Oracle {
    fn fit(&self, _: &TableContract, column: &ColumnContract, live: &LiveColumn) -> TypeFit {
        let expected = self.expected.get(&column.name).cloned().unwrap_or_default();
        let (compatible, risk) = match self.dialect {
            Dialect::Postgres => {
                let (want, have) = (pg_family(&expected), pg_family(&live.type_key));
                let compatible = want == have
                    || (want == "text" && matches!(have.as_str(), "varchar" | "bpchar"))
                    || (want == "jsonb" && have == "json");
                let risk = column
                    .sql_type
                    .as_deref()
                    .filter(|declared| {
                        compatible && pg_typmod_change(&live.data_type, declared).is_some()
                    })
                    .map(|declared| {
                        format!("{} (the contract declares {declared})", live.data_type)
                    });
                (compatible, risk)
            }
            Dialect::MySql => {
                let (want, want_rank, want_unsigned) = mysql_family(&expected);
                let (have, have_rank, have_unsigned) = mysql_family(&live.type_key);
                if column.rust_type == "Value" {
                    (have == "JSON", None)
                } else if want == "INT" && have == "INT" {
                    let risk = (have_rank > want_rank || have_unsigned != want_unsigned)
                        .then(|| format!("{} holds values wider than the field", live.data_type));
                    (true, risk)
                } else {
                    (want == have, None)
                }
            }
            Dialect::Sqlite => {
                let have = sqlite_family(&live.type_key);
                let want = match column.rust_type.as_str() {
                    "Value" => "JSON",
                    _ => sqlite_family(&expected),
                };
                match (want, have) {
                    ("JSON", "TEXT") => (true, Some("TEXT affinity".to_owned())),
                    (w, h) => (w == h, None),
                }
            }
        };
        TypeFit {
            compatible,
            expected_sql_type: expected,
            risk,
        }
    }
}
