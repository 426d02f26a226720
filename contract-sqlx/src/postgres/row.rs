//! Typed catalog rows, borrowed from the driver's rows: at fleet scale (tens of thousands
//! of rows) decoding by position into `&str` avoids a name lookup per field and an
//! allocation per repeated schema and table name.

use sqlx::Row;
use sqlx::postgres::PgRow;

/// One row of [`super::query::COLUMNS`], in its column order.
#[derive(Debug)]
pub(super) struct ColumnRow<'r> {
    pub schema_name: &'r str,
    pub table_name: &'r str,
    pub column_name: Option<&'r str>,
    pub attnum: Option<i32>,
    pub data_type: Option<&'r str>,
    pub type_key: Option<&'r str>,
    pub nullable: Option<bool>,
    pub default_expr: Option<&'r str>,
    pub enum_labels: Option<Vec<String>>,
    pub pk_position: Option<i32>,
    pub ref_schema: Option<&'r str>,
    pub ref_table: Option<&'r str>,
    pub ref_column: Option<&'r str>,
    pub table_oid: i64,
    /// `pg_class.relkind`: `r` table, `p` partitioned table, `v` view, `m` materialized
    /// view, `f` foreign table.
    pub relkind: &'r str,
    /// The enum an array or domain column's labels are of (`LiveColumn::enum_type_key`).
    pub enum_type_key: Option<&'r str>,
}

impl<'r> ColumnRow<'r> {
    /// Decodes by position without sqlx's per-value type check: the query's column types
    /// are fixed (casts in the SQL) and covered by the introspection tests.
    pub fn decode(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            schema_name: row.try_get_unchecked(0)?,
            table_name: row.try_get_unchecked(1)?,
            column_name: row.try_get_unchecked(2)?,
            attnum: row.try_get_unchecked(3)?,
            data_type: row.try_get_unchecked(4)?,
            type_key: row.try_get_unchecked(5)?,
            nullable: row.try_get_unchecked(6)?,
            default_expr: row.try_get_unchecked(7)?,
            enum_labels: row.try_get_unchecked(8)?,
            pk_position: row.try_get_unchecked(9)?,
            ref_schema: row.try_get_unchecked(10)?,
            ref_table: row.try_get_unchecked(11)?,
            ref_column: row.try_get_unchecked(12)?,
            table_oid: row.try_get_unchecked(13)?,
            relkind: row.try_get_unchecked(14)?,
            enum_type_key: row.try_get_unchecked(15)?,
        })
    }
}
