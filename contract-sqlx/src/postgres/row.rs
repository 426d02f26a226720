//! Typed catalog rows.

/// One row of [`super::query::COLUMNS`].
#[derive(Debug, sqlx::FromRow)]
pub(super) struct ColumnRow {
    pub schema_name: String,
    pub table_name: String,
    pub column_name: Option<String>,
    pub data_type: Option<String>,
    pub type_key: Option<String>,
    pub nullable: Option<bool>,
    pub default_expr: Option<String>,
    pub enum_labels: Option<Vec<String>>,
    pub pk_position: Option<i32>,
    pub ref_schema: Option<String>,
    pub ref_table: Option<String>,
    pub ref_column: Option<String>,
}
