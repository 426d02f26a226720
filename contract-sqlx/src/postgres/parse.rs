//! Catalog rows → live tables.

use std::collections::HashMap;

use contract_core::{LiveColumn, LiveForeignKey, LiveTable};

use super::row::ColumnRow;
use crate::fingerprint::fingerprint;

/// Groups rows by (schema, table) in one pass (the query is unordered: an ORDER BY
/// spills to disk at fleet scale), then orders each table's columns by attnum and the
/// tables by name, so the result is deterministic.
pub(super) fn tables(rows: Vec<ColumnRow<'_>>) -> Vec<LiveTable> {
    let mut index: HashMap<(&str, &str), usize> = HashMap::new();
    let mut grouped: Vec<(LiveTable, Vec<(i32, ColumnRow<'_>)>)> = Vec::new();
    let mut last: Option<usize> = None;
    for row in rows {
        // Rows of one table mostly arrive together: compare with the previous table before hashing.
        let slot = match last {
            Some(i)
                if grouped[i].0.schema == row.schema_name
                    && grouped[i].0.name == row.table_name =>
            {
                i
            }
            _ => *index
                .entry((row.schema_name, row.table_name))
                .or_insert_with(|| {
                    grouped.push((LiveTable::new(row.schema_name, row.table_name), Vec::new()));
                    grouped.len() - 1
                }),
        };
        last = Some(slot);
        if row.column_name.is_some() {
            grouped[slot].1.push((row.attnum.unwrap_or(0), row));
        }
    }
    let mut tables: Vec<LiveTable> = grouped
        .into_iter()
        .map(|(mut table, mut columns)| {
            columns.sort_by_key(|(attnum, _)| *attnum);
            fill(&mut table, columns.into_iter().map(|(_, row)| row));
            table
        })
        .collect();
    tables.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
    tables
}

fn fill<'r>(table: &mut LiveTable, rows: impl Iterator<Item = ColumnRow<'r>>) {
    let mut pk: Vec<(i32, String)> = Vec::new();
    for row in rows {
        let Some(name) = row.column_name else {
            continue;
        };
        // A column with several single-column foreign keys comes once per key.
        let repeated = table.columns.last().is_some_and(|c| c.name == name);
        if let (Some(ref_schema), Some(ref_table), Some(ref_column)) =
            (row.ref_schema, row.ref_table, row.ref_column)
        {
            table.foreign_keys.push(LiveForeignKey {
                column: name.to_owned(),
                ref_schema: ref_schema.to_owned(),
                ref_table: ref_table.to_owned(),
                ref_column: ref_column.to_owned(),
            });
        }
        if repeated {
            continue;
        }
        if let Some(position) = row.pk_position {
            pk.push((position, name.to_owned()));
        }
        let data_type = row.data_type.unwrap_or_default();
        table.columns.push(LiveColumn {
            name: name.to_owned(),
            type_key: row.type_key.unwrap_or(data_type).to_owned(),
            data_type: data_type.to_owned(),
            nullable: row.nullable.unwrap_or(true),
            default: row.default_expr.map(str::to_owned),
            enum_labels: row.enum_labels,
        });
    }
    finish(table, &mut pk);
}

fn finish(table: &mut LiveTable, pk: &mut [(i32, String)]) {
    pk.sort();
    table.primary_key = pk.iter().map(|(_, name)| name.clone()).collect();
    table.foreign_keys.sort_by(|a, b| {
        (&a.column, &a.ref_schema, &a.ref_table, &a.ref_column).cmp(&(
            &b.column,
            &b.ref_schema,
            &b.ref_table,
            &b.ref_column,
        ))
    });
    table.fingerprint = fingerprint(table);
}
