//! The live-schema model: what introspection found in one tenant.

use serde::{Deserialize, Serialize};

use crate::ident::Dialect;

/// One live column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveColumn {
    /// Column name, exact case.
    pub name: String,
    /// The column's type as the catalog spells it, with modifiers
    /// (`character varying(10)`, `int unsigned`, `BIGINT`).
    pub data_type: String,
    /// The type without modifiers, schema-qualified when not on the search path
    /// (`tenant_42.mood`); the key the type oracle resolves.
    pub type_key: String,
    /// `true` when the column can hold NULL: unless it is declared `NOT NULL`, or, in a
    /// view, unless what the view returns for it cannot be NULL (PostgreSQL: a plain
    /// reference to a `NOT NULL` base-table column, with no outer join or grouping sets on
    /// the way).
    pub nullable: bool,
    /// The column default expression, if any.
    pub default: Option<String>,
    /// Labels of an enum column, in declaration order; also of the enum an array column's
    /// elements or a domain column's base type are (PostgreSQL).
    pub enum_labels: Option<Vec<String>>,
    /// The enum type whose labels `enum_labels` lists when it is not the column's own type
    /// (the elements' type of an array, the base type of a domain), named like
    /// `type_key`: the type `ALTER TYPE … ADD VALUE` changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enum_type_key: Option<String>,
}

impl LiveColumn {
    /// A nullable column of type `data_type` (also used as its type key).
    #[must_use]
    pub fn new(name: impl Into<String>, data_type: impl Into<String>) -> Self {
        let data_type = data_type.into();
        Self {
            name: name.into(),
            type_key: data_type.clone(),
            data_type,
            nullable: true,
            default: None,
            enum_labels: None,
            enum_type_key: None,
        }
    }

    /// The same column, `NOT NULL`.
    #[must_use]
    pub fn not_null(mut self) -> Self {
        self.nullable = false;
        self
    }
}

/// A live foreign key (single column: the contracts only declare single-column keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveForeignKey {
    /// Referencing column.
    pub column: String,
    /// Schema of the referenced table.
    pub ref_schema: String,
    /// Referenced table.
    pub ref_table: String,
    /// Referenced column.
    pub ref_column: String,
}

/// What kind of relation a contracted name is: remediation changes only tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RelationKind {
    /// A table (PostgreSQL: also a partitioned table).
    #[default]
    Table,
    /// A view.
    View,
    /// A materialized view (PostgreSQL).
    MaterializedView,
    /// A foreign table (PostgreSQL).
    ForeignTable,
}

impl RelationKind {
    /// `true` for [`RelationKind::Table`].
    #[must_use]
    pub fn is_table(&self) -> bool {
        *self == RelationKind::Table
    }

    /// The kind in words (`view`, `materialized view`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            RelationKind::Table => "table",
            RelationKind::View => "view",
            RelationKind::MaterializedView => "materialized view",
            RelationKind::ForeignTable => "foreign table",
        }
    }
}

impl std::fmt::Display for RelationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One live table (or view: see [`LiveTable::kind`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveTable {
    /// Schema (PostgreSQL), database (MySQL) or tenant file stem (SQLite).
    pub schema: String,
    /// Table name.
    pub name: String,
    /// A table, or a view the consumer reads like one (snapshots taken before this field
    /// existed read as tables).
    #[serde(default, skip_serializing_if = "RelationKind::is_table")]
    pub kind: RelationKind,
    /// Columns in ordinal order.
    pub columns: Vec<LiveColumn>,
    /// Primary-key columns, in key order.
    pub primary_key: Vec<String>,
    /// Foreign keys.
    pub foreign_keys: Vec<LiveForeignKey>,
    /// SQLite only: the table's `CREATE TABLE` text as stored in `sqlite_schema` (what a
    /// table rebuild re-creates with a changed column type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
    /// SQLite only: the SQL of the table's explicit indexes and triggers, ordered by name
    /// (re-created verbatim after a table rebuild).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependents: Vec<String>,
    /// SQLite only: other schema objects whose SQL mentions the table (`view "v"`,
    /// `trigger "t" on "users"`). A rebuild drops the table for a moment, which SQLite
    /// refuses while a view or another table's trigger refers to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub referenced_by: Vec<String>,
    /// A digest of the contracted part of the table definition: equal digests mean equal
    /// definitions, so an unchanged tenant need not be diffed again.
    pub fingerprint: String,
}

impl LiveTable {
    /// An empty table (no columns yet).
    #[must_use]
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
            name: name.into(),
            kind: RelationKind::Table,
            columns: Vec::new(),
            primary_key: Vec::new(),
            foreign_keys: Vec::new(),
            definition: None,
            dependents: Vec::new(),
            referenced_by: Vec::new(),
            fingerprint: String::new(),
        }
    }

    /// Looks a column up by exact name (PostgreSQL's rule; see [`LiveTable::column_in`]).
    #[must_use]
    pub fn column(&self, name: &str) -> Option<&LiveColumn> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Looks a column up as `dialect` resolves column names ([`Dialect::same_column`]): on
    /// SQLite and MySQL `user_id` finds a column declared `User_Id`. An exact match wins.
    #[must_use]
    pub fn column_in(&self, dialect: Dialect, name: &str) -> Option<&LiveColumn> {
        self.column(name).or_else(|| {
            self.columns
                .iter()
                .find(|c| dialect.same_column(&c.name, name))
        })
    }

    /// Adds a column (builder style, for tests and snapshots).
    #[must_use]
    pub fn with_column(mut self, column: LiveColumn) -> Self {
        self.columns.push(column);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::{LiveTable, RelationKind};

    #[test]
    fn snapshots_without_a_kind_read_as_tables_and_tables_write_none() {
        let old = r#"{"schema":"t","name":"events","columns":[],"primary_key":[],"foreign_keys":[],"fingerprint":""}"#;
        let table: LiveTable = serde_json::from_str(old).expect("parse");
        assert_eq!(table.kind, RelationKind::Table);
        assert_eq!(serde_json::to_string(&table).expect("json"), old);
        let mut view = table;
        view.kind = RelationKind::MaterializedView;
        let json = serde_json::to_string(&view).expect("json");
        assert!(json.contains(r#""kind":"materialized_view""#), "{json}");
        assert_eq!(
            serde_json::from_str::<LiveTable>(&json).expect("parse"),
            view
        );
    }
}
