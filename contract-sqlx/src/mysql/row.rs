//! Typed catalog rows.

use sqlx::mysql::MySqlRow;

use crate::from_row::impl_from_row;

/// One row of [`super::query::columns`].
#[derive(Debug)]
pub(super) struct ColumnRow {
    pub schema_name: String,
    pub table_name: String,
    pub column_name: Option<String>,
    pub data_type: Option<String>,
    pub column_type: Option<String>,
    pub is_nullable: Option<String>,
    pub default_expr: Option<String>,
    pub collation_name: Option<String>,
    pub column_key: Option<String>,
    pub extra: Option<String>,
}

/// One row of [`super::query::keys`].
#[derive(Debug)]
pub(super) struct KeyRow {
    pub schema_name: String,
    pub table_name: String,
    pub column_name: String,
    pub constraint_name: String,
    pub ref_schema: Option<String>,
    pub ref_table: Option<String>,
    pub ref_column: Option<String>,
}

/// One row of [`super::query::json_checks`].
#[derive(Debug)]
pub(super) struct JsonCheckRow {
    pub schema_name: String,
    pub table_name: String,
    pub column_name: String,
    pub check_clause: String,
}

impl_from_row!(MySqlRow => ColumnRow {
    schema_name, table_name, column_name, data_type, column_type, is_nullable, default_expr,
    collation_name, column_key, extra,
});
impl_from_row!(MySqlRow => KeyRow {
    schema_name, table_name, column_name, constraint_name, ref_schema, ref_table, ref_column,
});
impl_from_row!(MySqlRow => JsonCheckRow { schema_name, table_name, column_name, check_clause });
