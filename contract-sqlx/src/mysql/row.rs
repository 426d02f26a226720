//! Typed catalog rows.

/// One row of [`super::query::columns`].
#[derive(Debug, sqlx::FromRow)]
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
#[derive(Debug, sqlx::FromRow)]
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
#[derive(Debug, sqlx::FromRow)]
pub(super) struct JsonCheckRow {
    pub schema_name: String,
    pub table_name: String,
    pub column_name: String,
    pub check_clause: String,
}
