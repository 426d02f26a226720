//! Custom types in generated DDL. PostgreSQL remediation pins `search_path` to
//! `pg_catalog, pg_temp`, so a column type the contract names without a schema (an enum
//! `mood`) would not resolve there: it is written qualified with the schema the fleet has
//! it in: the tenant's own schema first, then the contract's fixed schema, then `public`.
//! Built-in types stay as written.

use std::collections::{BTreeMap, BTreeSet};

use super::types::ddl_type;
use crate::ident::Dialect;
use crate::model::{ColumnContract, TableContract};

/// Type names of PostgreSQL's grammar that are not `pg_catalog.pg_type` names (or are
/// other types there): always built-in, never looked up.
const GRAMMAR_TYPES: [&str; 13] = [
    "bigint",
    "boolean",
    "char",
    "character",
    "dec",
    "decimal",
    "double",
    "float",
    "int",
    "integer",
    "national",
    "nchar",
    "smallint",
];

/// Where the fleet has each type name a plan may write without a schema: built in
/// (`pg_catalog`), or in which schemas. Looked up once per plan run (PostgreSQL); an empty
/// catalog ([`TypeCatalog::new`]) looked nothing up, and plans keep types as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeCatalog {
    looked_up: BTreeSet<String>,
    builtin: BTreeSet<String>,
    schemas: BTreeMap<String, BTreeSet<String>>,
}

impl TypeCatalog {
    /// A catalog that looked nothing up: every type is written as the contract names it.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `name` (as the catalog spells it: `mood`, `My Type`) was looked up;
    /// unless [`TypeCatalog::builtin`] or [`TypeCatalog::found_in`] record where it is, it
    /// exists nowhere the fleet resolves it from.
    pub fn looked_up(&mut self, name: impl Into<String>) -> &mut Self {
        self.looked_up.insert(name.into());
        self
    }

    /// Records that `name` is a `pg_catalog` type (written without a schema).
    pub fn builtin(&mut self, name: impl Into<String>) -> &mut Self {
        let name = name.into();
        self.looked_up.insert(name.clone());
        self.builtin.insert(name);
        self
    }

    /// Records that schema `schema` has a type `name`.
    pub fn found_in(&mut self, name: impl Into<String>, schema: impl Into<String>) -> &mut Self {
        let name = name.into();
        self.looked_up.insert(name.clone());
        self.schemas.entry(name).or_default().insert(schema.into());
        self
    }

    /// `written` (a DDL column type) as it must be written for a table whose type search
    /// order is `schemas`: unchanged when it is qualified, built in or was not looked up;
    /// otherwise qualified with the first of `schemas` that has it.
    ///
    /// # Errors
    ///
    /// The type was looked up and none of `schemas` has it: the reason, for a refusal.
    pub(super) fn qualify(
        &self,
        column: &ColumnContract,
        written: &str,
        schemas: &[&str],
    ) -> Result<String, String> {
        let Some(reference) = TypeRef::parse(written) else {
            return Ok(written.to_owned());
        };
        let name = reference.name.as_str();
        if reference.is_grammar_type()
            || !self.looked_up.contains(name)
            || self.builtin.contains(name)
        {
            return Ok(written.to_owned());
        }
        let found = self.schemas.get(name);
        match schemas
            .iter()
            .find(|s| found.is_some_and(|f| f.contains(**s)))
        {
            Some(schema) => {
                let qualified = Dialect::Postgres
                    .quote_qualified(Some(schema), name)
                    .map_err(|e| e.to_string())?;
                Ok(format!("{qualified}{}", reference.suffix))
            }
            None => {
                let places: Vec<String> = schemas.iter().map(|s| format!("`{s}`")).collect();
                Err(format!(
                    "column `{}` has type `{name}`, which exists in none of the schemas {} \
                     (remediation resolves a type only in the tenant's schema, the contract's \
                     schema or `public`); create the type there, or name its schema in the \
                     contract (#[contract(sql_type = \"<schema>.{name}\")])",
                    column.name,
                    places.join(", ")
                ))
            }
        }
    }
}

/// The type names, as the catalog spells them, that plans of `contract` may write without
/// a schema on `dialect` (PostgreSQL only; empty elsewhere): what a [`TypeCatalog`] must
/// look up. `expected_types` maps a column to the SQL type sqlx gives its field.
#[must_use]
pub fn type_names(
    dialect: Dialect,
    contract: &TableContract,
    expected_types: &BTreeMap<String, String>,
) -> Vec<String> {
    if dialect != Dialect::Postgres {
        return Vec::new();
    }
    let mut names: Vec<String> = contract
        .columns
        .iter()
        .filter_map(|column| match &column.sql_type {
            Some(declared) => Some(declared.clone()),
            None => ddl_type(dialect, expected_types.get(&column.name)?).ok(),
        })
        .filter_map(|written| {
            TypeRef::parse(&written)
                .filter(|reference| !reference.is_grammar_type())
                .map(|reference| reference.name)
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// An unqualified type in DDL: `mood`, `"My Type"[]`, `vector(3)`.
#[derive(Debug, PartialEq, Eq)]
struct TypeRef<'a> {
    /// The name as the catalog spells it (unquoted names fold to lower case).
    name: String,
    quoted: bool,
    /// Modifiers and array brackets, as written.
    suffix: &'a str,
}

impl<'a> TypeRef<'a> {
    /// `None` for anything else: a qualified name, a multi-word type
    /// (`double precision`, `character varying(10)`).
    fn parse(written: &'a str) -> Option<Self> {
        let text = written.trim();
        let (name, quoted, rest) = if let Some(inner) = text.strip_prefix('"') {
            let mut name = String::new();
            let mut chars = inner.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                if c != '"' {
                    name.push(c);
                } else if inner[i + 1..].starts_with('"') {
                    name.push('"');
                    chars.next();
                } else {
                    break i + 1;
                }
            };
            (name, true, &inner[end..])
        } else {
            let end = text
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
                .unwrap_or(text.len());
            let name = &text[..end];
            if !name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
                return None;
            }
            (name.to_ascii_lowercase(), false, &text[end..])
        };
        if name.is_empty() || !is_type_suffix(rest) {
            return None;
        }
        Some(Self {
            name,
            quoted,
            suffix: rest,
        })
    }

    fn is_grammar_type(&self) -> bool {
        !self.quoted && GRAMMAR_TYPES.contains(&self.name.as_str())
    }
}

/// Empty, or `(modifiers)` and/or `[]`s: `(3)`, `(12, 2)[]`, `[][]`.
fn is_type_suffix(rest: &str) -> bool {
    let mut rest = rest;
    if let Some(inner) = rest.strip_prefix('(') {
        let Some(close) = inner.find(')') else {
            return false;
        };
        if !inner[..close]
            .chars()
            .all(|c| c.is_ascii_digit() || c == ',' || c == ' ')
        {
            return false;
        }
        rest = &inner[close + 1..];
    }
    while let Some(after) = rest.strip_prefix('[') {
        let Some(close) = after.find(']') else {
            return false;
        };
        if !after[..close].chars().all(|c| c.is_ascii_digit()) {
            return false;
        }
        rest = &after[close + 1..];
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Option<(String, bool, &str)> {
        TypeRef::parse(text).map(|r| (r.name, r.quoted, r.suffix))
    }

    #[test]
    fn unqualified_single_names_are_type_references() {
        assert_eq!(parse("mood"), Some(("mood".into(), false, "")));
        assert_eq!(parse("Mood[]"), Some(("mood".into(), false, "[]")));
        assert_eq!(parse("vector(3)"), Some(("vector".into(), false, "(3)")));
        assert_eq!(
            parse("numeric(12, 2)[]"),
            Some(("numeric".into(), false, "(12, 2)[]"))
        );
        assert_eq!(
            parse(r#""My ""Type"""[]"#),
            Some((r#"My "Type""#.into(), true, "[]"))
        );
        for other in [
            "conf.mood",
            r#""conf"."mood""#,
            "double precision",
            "character varying(10)",
            "timestamp(3) with time zone",
            "1abc",
            r#""unterminated"#,
            "",
            "mood(x)",
        ] {
            assert_eq!(parse(other), None, "{other}");
        }
    }

    #[test]
    fn only_names_outside_the_grammar_are_looked_up() {
        let mut contract = TableContract {
            struct_name: "Event".into(),
            schema: None,
            table: "events".into(),
            columns: ["id", "mood", "n", "tags", "score"]
                .iter()
                .map(|c| ColumnContract::new(*c, "T"))
                .collect(),
        };
        contract.columns[2].sql_type = Some("integer".into());
        contract.columns[4].sql_type = Some("numeric(12,2)".into());
        let expected: BTreeMap<String, String> = [
            ("id", "INT8"),
            ("mood", "mood"),
            ("tags", "TEXT[]"),
            ("score", "ignored"),
        ]
        .iter()
        .map(|(c, t)| ((*c).to_owned(), (*t).to_owned()))
        .collect();
        assert_eq!(
            type_names(Dialect::Postgres, &contract, &expected),
            ["int8", "mood", "numeric", "text"]
        );
        assert!(type_names(Dialect::MySql, &contract, &expected).is_empty());
    }

    #[test]
    fn a_custom_type_is_qualified_with_the_first_schema_that_has_it() {
        let column = ColumnContract::new("mood", "Mood");
        let mut catalog = TypeCatalog::new();
        catalog
            .builtin("int8")
            .found_in("mood", "public")
            .found_in("mood", "tenant_1")
            .looked_up("gone");
        let order = ["tenant_1", "shared", "public"];
        let q = |written: &str, schemas: &[&str]| catalog.qualify(&column, written, schemas);
        assert_eq!(q("mood", &order).unwrap(), r#""tenant_1"."mood""#);
        assert_eq!(
            q("mood[]", &["tenant_2", "public"]).unwrap(),
            r#""public"."mood"[]"#
        );
        assert_eq!(q("int8", &order).unwrap(), "int8");
        assert_eq!(q("integer", &order).unwrap(), "integer");
        assert_eq!(q("conf.mood", &order).unwrap(), "conf.mood");
        // Not looked up (another dialect, or no catalog): as written.
        assert_eq!(q("other", &order).unwrap(), "other");
        let refused = q("gone", &["tenant_2", "public"]).unwrap_err();
        assert!(
            refused.starts_with(
                "column `mood` has type `gone`, which exists in none of the schemas `tenant_2`, `public`"
            ) && refused.contains("create the type there"),
            "{refused}"
        );
    }
}
