//! Catalog SQL for SQLite: the table-valued pragma functions, one round trip per pool
//! covering `main` and every attached database (`ARCHITECTURE.md` D3).
//!
//! SQLite has no array parameters, so the `IN (...)` lists are built with one `?`
//! placeholder per value and every value is bound. Table and column names are compared
//! `COLLATE NOCASE` (ASCII case folding), as SQLite resolves identifiers: a table created
//! as `Events` is the one `FROM events` reads.

use crate::backend::binds::placeholders;

/// One row per contracted column of each contracted table in every database of the
/// connection (`main` and attached ones), plus one row with NULL column fields for a table
/// that has none of the contracted columns. `pk_json` is the whole primary key, in key
/// order, as a JSON array.
///
/// Binds: column names (contracted and `renamed_from`), then table names.
///
/// Docs: <https://sqlite.org/pragma.html#pragma_table_xinfo>,
/// <https://sqlite.org/pragma.html#pragfunc>
pub(super) fn columns(columns: usize, tables: usize) -> String {
    // language=SQL
    format!(
        r#"
SELECT t.schema            AS schema_name,
       t.name              AS table_name,
       t.type              AS table_type,
       c.name              AS column_name,
       c.type              AS declared_type,
       c."notnull"         AS not_null,
       c.dflt_value        AS default_expr,
       (SELECT json_group_array(k.name)
          FROM (SELECT name FROM pragma_table_xinfo(t.name, t.schema) WHERE pk > 0 ORDER BY pk) k
       )                   AS pk_json,
       (SELECT count(*) FROM pragma_index_list(t.name, t.schema) WHERE origin = 'pk')
                           AS pk_indexes
FROM pragma_table_list t
LEFT JOIN pragma_table_xinfo(t.name, t.schema) c ON c.name COLLATE NOCASE IN ({})
WHERE t.name COLLATE NOCASE IN ({}) AND t.type IN ('table', 'view') AND t.schema <> 'temp'
ORDER BY t.schema, t.name, c.cid"#,
        placeholders(columns),
        placeholders(tables),
    )
}

/// Foreign keys of the contracted tables, one row per column of each key.
///
/// Binds: table names.
///
/// Docs: <https://sqlite.org/pragma.html#pragma_foreign_key_list>
pub(super) fn foreign_keys(tables: usize) -> String {
    // language=SQL
    format!(
        r#"
SELECT t.schema  AS schema_name,
       t.name    AS table_name,
       f.id      AS fk_id,
       f."from"  AS column_name,
       f."table" AS ref_table,
       f."to"    AS ref_column
FROM pragma_table_list t
JOIN pragma_foreign_key_list(t.name, t.schema) f
WHERE t.name COLLATE NOCASE IN ({}) AND t.type = 'table' AND t.schema <> 'temp'
ORDER BY t.schema, t.name, f.id, f.seq"#,
        placeholders(tables),
    )
}

/// The schema objects of one database (`<db>` is quoted by the caller) a table rebuild
/// needs: the contracted tables' `CREATE TABLE` text and the SQL of their indexes and
/// triggers, plus every view and trigger (to find those that refer to a contracted table).
/// Automatic indexes (`sql IS NULL`) come back with the `CREATE TABLE`.
///
/// Binds: table names.
///
/// Docs: <https://sqlite.org/schematab.html>
pub(super) fn schema_objects(database: &str, tables: usize) -> String {
    // language=SQL
    format!(
        r#"
SELECT type, name, tbl_name, sql
FROM {database}.sqlite_schema
WHERE sql IS NOT NULL
  AND (type IN ('view', 'trigger') OR (type IN ('table', 'index') AND tbl_name COLLATE NOCASE IN ({})))
ORDER BY name"#,
        placeholders(tables),
    )
}

/// Attached databases (not `main` or `temp`) whose name is `LIKE ?`.
///
/// Docs: <https://sqlite.org/pragma.html#pragma_database_list>
// language=SQL
pub(super) const ATTACHED_LIKE: &str = "SELECT name FROM pragma_database_list WHERE name NOT IN ('main', 'temp') AND name LIKE ? ORDER BY name";

/// Every database name of the connection.
// language=SQL
pub(super) const DATABASES: &str = "SELECT name FROM pragma_database_list";

/// One value of each storage class: their runtime type infos are what decoding checks.
// language=SQL
pub(super) const STORAGE_CLASSES: &str = "SELECT 1, 1.5, 'a', x'00', NULL";
