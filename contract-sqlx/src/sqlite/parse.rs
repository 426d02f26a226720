//! Catalog rows → live tables.

use std::collections::HashMap;

use contract_core::{LiveColumn, LiveForeignKey, LiveTable};

use super::row::{ColumnRow, ForeignKeyRow, SchemaObjectRow};
use crate::check::fingerprint;

/// Groups rows (ordered by database, table, column id) into tables, attaches foreign keys
/// and the schema objects a rebuild needs (see [`attach_objects`]), and names each table's
/// schema after the tenant(s) its database holds: `labels` maps a connection database
/// (`main` or an attached name) to tenant names; unmapped databases are dropped.
pub(super) fn tables(
    rows: Vec<ColumnRow>,
    fks: Vec<ForeignKeyRow>,
    objects: Vec<SchemaObjectRow>,
    labels: &HashMap<String, Vec<String>>,
) -> Vec<LiveTable> {
    let mut tables: Vec<LiveTable> = Vec::new();
    for row in rows {
        let same = tables
            .last()
            .is_some_and(|t| t.schema == row.schema_name && t.name == row.table_name);
        if !same {
            let mut table = LiveTable::new(row.schema_name.clone(), row.table_name.clone());
            // A view is no table: the planner refuses what only `ALTER TABLE` could fix.
            if row.table_type == "view" {
                table.kind = contract_core::RelationKind::View;
            }
            table.primary_key = row
                .pk_json
                .as_deref()
                .and_then(|j| serde_json::from_str(j).ok())
                .unwrap_or_default();
            tables.push(table);
        }
        let (Some(table), Some(name)) = (tables.last_mut(), row.column_name) else {
            continue;
        };
        let declared = row.declared_type.unwrap_or_default();
        // An `INTEGER PRIMARY KEY` column is the rowid: it never holds NULL, whatever
        // `notnull` says. Not when an index enforces the key: `INTEGER PRIMARY KEY DESC`
        // (a documented quirk) is an ordinary column, and holds NULL when an insert leaves
        // it out.
        let rowid = table.primary_key == [name.as_str()]
            && declared.eq_ignore_ascii_case("INTEGER")
            && row.pk_indexes == 0;
        table.columns.push(LiveColumn {
            type_key: type_key(&declared),
            data_type: declared,
            nullable: !(row.not_null.unwrap_or(false) || rowid),
            default: row.default_expr,
            enum_labels: None,
            enum_type_key: None,
            name,
        });
    }
    attach_foreign_keys(&mut tables, fks);
    attach_objects(&mut tables, &objects);
    let mut labelled = Vec::with_capacity(tables.len());
    for table in tables {
        for label in labels.get(&table.schema).into_iter().flatten() {
            let mut copy = table.clone();
            copy.schema.clone_from(label);
            for fk in &mut copy.foreign_keys {
                fk.ref_schema.clone_from(label);
            }
            copy.fingerprint = fingerprint(&copy);
            labelled.push(copy);
        }
    }
    labelled
}

/// The type key of a SQLite column: its declared type, trimmed and uppercased (what
/// SQLite's affinity rules and sqlx's declared-type mapping both read).
pub(super) fn type_key(declared: &str) -> String {
    declared.trim().to_ascii_uppercase()
}

/// Records each table's `CREATE TABLE` text, the SQL of its explicit indexes and triggers
/// (in `objects` order: by name), and the views and other tables' triggers whose SQL
/// mentions its name (a case-insensitive substring: a false positive only makes the
/// planner refuse a rebuild it could have done).
fn attach_objects(tables: &mut [LiveTable], objects: &[SchemaObjectRow]) {
    for table in tables {
        let needle = table.name.to_lowercase();
        for object in objects.iter().filter(|o| o.schema_name == table.schema) {
            // A trigger's `tbl_name` keeps the spelling of its `ON` clause (SQLite names
            // are ASCII case-insensitive); an index's is the table's own.
            let own = object.tbl_name.eq_ignore_ascii_case(&table.name);
            match object.kind.as_str() {
                "table" if own && object.name == table.name => {
                    table.definition = Some(object.sql.clone());
                }
                "index" | "trigger" if own => table.dependents.push(object.sql.clone()),
                "view" | "trigger" if object.sql.to_lowercase().contains(&needle) => {
                    let mut what = format!("{} {}", object.kind, quoted(&object.name));
                    if object.kind == "trigger" {
                        what.push_str(&format!(" on {}", quoted(&object.tbl_name)));
                    }
                    table.referenced_by.push(what);
                }
                _ => {}
            }
        }
    }
}

/// `"name"` for messages (never executed).
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn attach_foreign_keys(tables: &mut [LiveTable], fks: Vec<ForeignKeyRow>) {
    // Contracts declare single-column foreign keys only: skip composite ones.
    let mut width: HashMap<(&str, &str, i64), usize> = HashMap::new();
    for fk in &fks {
        *width
            .entry((fk.schema_name.as_str(), fk.table_name.as_str(), fk.fk_id))
            .or_default() += 1;
    }
    let single: Vec<&ForeignKeyRow> = fks
        .iter()
        .filter(|fk| width[&(fk.schema_name.as_str(), fk.table_name.as_str(), fk.fk_id)] == 1)
        .collect();
    for fk in single {
        let Some(table) = tables
            .iter_mut()
            .find(|t| t.schema == fk.schema_name && t.name == fk.table_name)
        else {
            continue;
        };
        // `REFERENCES users` without a column means the referenced table's primary key;
        // that is only known for a table in the result, so such a key is left out.
        let Some(ref_column) = fk.ref_column.clone() else {
            continue;
        };
        table.foreign_keys.push(LiveForeignKey {
            column: fk.column_name.clone(),
            ref_schema: fk.schema_name.clone(),
            ref_table: fk.ref_table.clone(),
            ref_column,
        });
    }
    for table in tables {
        table.foreign_keys.sort_by(|a, b| a.column.cmp(&b.column));
    }
}
