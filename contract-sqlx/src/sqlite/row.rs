//! Typed catalog rows.

use sqlx::sqlite::SqliteRow;

use crate::from_row::impl_from_row;

/// One row of [`super::query::columns`].
#[derive(Debug)]
pub(super) struct ColumnRow {
    pub schema_name: String,
    pub table_name: String,
    /// `table` or `view`.
    pub table_type: String,
    pub column_name: Option<String>,
    pub declared_type: Option<String>,
    pub not_null: Option<bool>,
    pub default_expr: Option<String>,
    pub pk_json: Option<String>,
    /// Indexes that enforce the primary key: none when it is the rowid.
    pub pk_indexes: i64,
}

/// One row of [`super::query::foreign_keys`].
#[derive(Debug)]
pub(super) struct ForeignKeyRow {
    pub schema_name: String,
    pub table_name: String,
    pub fk_id: i64,
    pub column_name: String,
    pub ref_table: String,
    pub ref_column: Option<String>,
}

/// One row of [`super::query::schema_objects`], with the database it came from.
#[derive(Debug)]
pub(super) struct SchemaObjectRow {
    /// Filled in by the caller.
    pub schema_name: String,
    /// The `type` column.
    pub kind: String,
    pub name: String,
    pub tbl_name: String,
    pub sql: String,
}

impl_from_row!(SqliteRow => ColumnRow {
    schema_name, table_name, table_type, column_name, declared_type, not_null, default_expr,
    pk_json, pk_indexes,
});
impl_from_row!(SqliteRow => ForeignKeyRow {
    schema_name, table_name, fk_id, column_name, ref_table, ref_column,
});
impl_from_row!(SqliteRow => SchemaObjectRow { kind = "type", name, tbl_name, sql } default: schema_name);
