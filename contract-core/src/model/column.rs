//! What a consumer expects of one column.

use serde::{Deserialize, Serialize};

/// One column a consumer reads, as `sqlx::FromRow` will read it.
///
/// Built by `#[derive(Contract)]`; the name is the label FromRow looks up (after
/// `rename` / `rename_all`), the Rust type is the one FromRow decodes (the `try_from`
/// source type, `Json<T>` for `#[sqlx(json)]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnContract {
    /// Column name exactly as FromRow looks it up (case-sensitive).
    pub name: String,
    /// The Rust type decoded from the column, as written in the source.
    pub rust_type: String,
    /// `true` when the decoded type accepts NULL (`Option<_>`, `json(nullable)`).
    pub nullable: bool,
    /// `true` when the column may be absent (`#[sqlx(default)]` on the field or the struct).
    pub optional: bool,
    /// `true` for `#[sqlx(json)]` and `Json<T>` / `serde_json::Value` fields.
    pub json: bool,
    /// SQL expression used as the default when remediation adds the column
    /// (`#[contract(default = "...")]`).
    pub default_sql: Option<String>,
    /// SQL type to create the column with, overriding the one sqlx reports for the field
    /// type (`#[contract(sql_type = "...")]`).
    pub sql_type: Option<String>,
    /// A former name: remediation may rename this column instead of adding a new one
    /// (`#[contract(renamed_from = "...")]`).
    pub renamed_from: Option<String>,
    /// Part of the primary key (`#[contract(primary_key)]`).
    pub primary_key: bool,
    /// Foreign key target (`#[contract(references = "users(id)")]`).
    pub references: Option<Reference>,
    /// The labels the field's enum type decodes (`#[contract(enum_labels = "a, b")]`),
    /// compared with a live enum column's labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enum_labels: Option<Vec<String>>,
}

impl ColumnContract {
    /// A required, non-null column with no remediation hints.
    ///
    /// ```
    /// use contract_core::ColumnContract;
    /// let c = ColumnContract::new("id", "i64");
    /// assert!(!c.nullable && !c.optional);
    /// ```
    #[must_use]
    pub fn new(name: impl Into<String>, rust_type: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            rust_type: rust_type.into(),
            nullable: false,
            optional: false,
            json: false,
            default_sql: None,
            sql_type: None,
            renamed_from: None,
            primary_key: false,
            references: None,
            enum_labels: None,
        }
    }
}

/// The target of a foreign key: `table(column)`, optionally schema-qualified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    /// A fixed schema, or `None` for "the same tenant as the referencing table".
    pub schema: Option<String>,
    /// Referenced table.
    pub table: String,
    /// Referenced column.
    pub column: String,
}

impl Reference {
    /// Parses `table(column)` or `schema.table(column)`.
    ///
    /// ```
    /// use contract_core::Reference;
    /// let r = Reference::parse("users(id)").unwrap();
    /// assert_eq!((r.table.as_str(), r.column.as_str()), ("users", "id"));
    /// assert!(Reference::parse("users.id").is_none());
    /// ```
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let (target, rest) = text.trim().split_once('(')?;
        let column = rest.strip_suffix(')')?.trim();
        let (schema, table) = match target.trim().split_once('.') {
            Some((schema, table)) => (Some(schema.trim()), table.trim()),
            None => (None, target.trim()),
        };
        let valid = |s: &str| !s.is_empty() && !s.contains(['(', ')', ',', '.']);
        if !valid(table) || !valid(column) || schema.is_some_and(|s| !valid(s)) {
            return None;
        }
        Some(Self {
            schema: schema.map(str::to_owned),
            table: table.to_owned(),
            column: column.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_parse_accepts_qualified_and_plain() {
        let r = Reference::parse(" audit.users ( id ) ").unwrap();
        assert_eq!(r.schema.as_deref(), Some("audit"));
        assert_eq!(r.table, "users");
        assert_eq!(r.column, "id");
    }

    #[test]
    fn reference_parse_rejects_malformed() {
        for bad in [
            "users",
            "users()",
            "(id)",
            "users(id",
            "users(a,b)",
            "a.b.c(id)",
            "users(id))",
        ] {
            assert!(Reference::parse(bad).is_none(), "{bad}");
        }
    }
}
