//! Catalog rows → live tables.

use contract_core::{LiveColumn, LiveForeignKey, LiveTable};

use super::row::ColumnRow;
use crate::fingerprint::fingerprint;

/// Groups rows (ordered by schema, table, attnum) into tables.
pub(super) fn tables(rows: Vec<ColumnRow>) -> Vec<LiveTable> {
    let mut tables: Vec<LiveTable> = Vec::new();
    let mut pk: Vec<(i32, String)> = Vec::new();
    for row in rows {
        let same = tables
            .last()
            .is_some_and(|t| t.schema == row.schema_name && t.name == row.table_name);
        if !same {
            finish(tables.last_mut(), &mut pk);
            tables.push(LiveTable::new(
                row.schema_name.clone(),
                row.table_name.clone(),
            ));
        }
        let (Some(table), Some(name)) = (tables.last_mut(), row.column_name) else {
            continue;
        };
        if let Some(position) = row.pk_position {
            pk.push((position, name.clone()));
        }
        if let (Some(ref_schema), Some(ref_table), Some(ref_column)) =
            (row.ref_schema, row.ref_table, row.ref_column)
        {
            table.foreign_keys.push(LiveForeignKey {
                column: name.clone(),
                ref_schema,
                ref_table,
                ref_column,
            });
        }
        let data_type = row.data_type.unwrap_or_default();
        table.columns.push(LiveColumn {
            name,
            type_key: row.type_key.unwrap_or_else(|| data_type.clone()),
            data_type,
            nullable: row.nullable.unwrap_or(true),
            default: row.default_expr,
            enum_labels: row.enum_labels,
        });
    }
    finish(tables.last_mut(), &mut pk);
    tables
}

fn finish(table: Option<&mut LiveTable>, pk: &mut Vec<(i32, String)>) {
    if let Some(table) = table {
        pk.sort();
        table.primary_key = pk.drain(..).map(|(_, name)| name).collect();
        table.fingerprint = fingerprint(table);
    }
    pk.clear();
}
