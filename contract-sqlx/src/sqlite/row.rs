//! Typed catalog rows.

/// One row of [`super::query::columns`].
#[derive(Debug, sqlx::FromRow)]
pub(super) struct ColumnRow {
    pub schema_name: String,
    pub table_name: String,
    pub column_name: Option<String>,
    pub declared_type: Option<String>,
    pub not_null: Option<bool>,
    pub default_expr: Option<String>,
    pub pk_json: Option<String>,
}

/// One row of [`super::query::foreign_keys`].
#[derive(Debug, sqlx::FromRow)]
pub(super) struct ForeignKeyRow {
    pub schema_name: String,
    pub table_name: String,
    pub fk_id: i64,
    pub column_name: String,
    pub ref_table: String,
    pub ref_column: Option<String>,
}

/// One row of [`super::query::schema_objects`], with the database it came from.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct SchemaObjectRow {
    #[sqlx(skip)]
    pub schema_name: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub name: String,
    pub tbl_name: String,
    pub sql: String,
}
