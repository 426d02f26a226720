//! Catalog SQL for MySQL / MariaDB: `information_schema`, one round trip per query for
//! every tenant database's contracted tables (`ARCHITECTURE.md` D3).
//!
//! MySQL has no array parameters, so the `IN (...)` lists are built with one `?`
//! placeholder per value and every value is bound; only the placeholder count depends on
//! the input, never its text.

use crate::backend::binds::placeholders;

/// One row per contracted column of each contracted table in the given databases, plus
/// one row with NULL column fields for a table that has none of the contracted columns
/// (so it is not reported as missing).
///
/// Binds: database names, table names, column names (contracted and `renamed_from`).
///
/// Docs: <https://mariadb.com/kb/en/information-schema-columns-table/>
pub(super) fn columns(schemas: usize, tables: usize, columns: usize) -> String {
    // language=SQL
    format!(
        r"
SELECT t.TABLE_SCHEMA        AS schema_name,
       t.TABLE_NAME          AS table_name,
       c.COLUMN_NAME         AS column_name,
       c.DATA_TYPE           AS data_type,
       c.COLUMN_TYPE         AS column_type,
       c.IS_NULLABLE         AS is_nullable,
       c.COLUMN_DEFAULT      AS default_expr,
       c.COLLATION_NAME      AS collation_name,
       c.COLUMN_KEY          AS column_key,
       c.EXTRA               AS extra,
       c.ORDINAL_POSITION    AS ordinal_position
FROM information_schema.TABLES t
LEFT JOIN information_schema.COLUMNS c
       ON c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME AND c.COLUMN_NAME IN ({})
WHERE t.TABLE_SCHEMA IN ({}) AND t.TABLE_NAME IN ({})
ORDER BY t.TABLE_SCHEMA, t.TABLE_NAME, c.ORDINAL_POSITION",
        placeholders(columns),
        placeholders(schemas),
        placeholders(tables),
    )
}

/// Primary-key and foreign-key columns of the contracted tables.
///
/// Binds: database names, table names.
///
/// Docs: <https://mariadb.com/kb/en/information-schema-key_column_usage-table/>
pub(super) fn keys(schemas: usize, tables: usize) -> String {
    // language=SQL
    format!(
        r"
SELECT TABLE_SCHEMA            AS schema_name,
       TABLE_NAME              AS table_name,
       COLUMN_NAME             AS column_name,
       CONSTRAINT_NAME         AS constraint_name,
       ORDINAL_POSITION        AS ordinal_position,
       REFERENCED_TABLE_SCHEMA AS ref_schema,
       REFERENCED_TABLE_NAME   AS ref_table,
       REFERENCED_COLUMN_NAME  AS ref_column
FROM information_schema.KEY_COLUMN_USAGE
WHERE TABLE_SCHEMA IN ({}) AND TABLE_NAME IN ({})
  AND (CONSTRAINT_NAME = 'PRIMARY' OR REFERENCED_TABLE_NAME IS NOT NULL)
ORDER BY TABLE_SCHEMA, TABLE_NAME, CONSTRAINT_NAME, ORDINAL_POSITION",
        placeholders(schemas),
        placeholders(tables),
    )
}

/// MariaDB's `JSON` is an alias of `LONGTEXT` with a column-level
/// `CHECK (json_valid(col))` constraint named after the column; this finds those
/// columns. MySQL has a real `JSON` type and no `TABLE_NAME` in this view: there the query
/// fails and is ignored.
///
/// Binds: database names, table names.
///
/// Docs: <https://mariadb.com/kb/en/json-data-type/>
pub(super) fn json_checks(schemas: usize, tables: usize) -> String {
    // language=SQL
    format!(
        r"
SELECT CONSTRAINT_SCHEMA AS schema_name,
       TABLE_NAME        AS table_name,
       CONSTRAINT_NAME   AS column_name,
       CHECK_CLAUSE      AS check_clause
FROM information_schema.CHECK_CONSTRAINTS
WHERE CONSTRAINT_SCHEMA IN ({}) AND TABLE_NAME IN ({}) AND LEVEL = 'Column'
  AND CHECK_CLAUSE LIKE 'json\_valid(%'",
        placeholders(schemas),
        placeholders(tables),
    )
}

/// Databases whose name is `LIKE ?`.
// language=SQL
pub(super) const SCHEMAS_LIKE: &str = "SELECT SCHEMA_NAME AS schema_name FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE ? ORDER BY SCHEMA_NAME";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_bind_every_value_and_never_paste() {
        let sql = columns(2, 1, 3);
        assert_eq!(sql.matches('?').count(), 6);
    }
}
