//! Catalog rows → live tables, built while the rows stream in (the server keeps sending
//! while the client decodes, so on a multi-core host the parsing hides behind the query).

use std::collections::HashMap;

use contract_core::{LiveColumn, LiveForeignKey, LiveTable, RelationKind};

use super::row::ColumnRow;
use super::views::ViewColumns;
use crate::check::fingerprint;

/// Accumulates rows (in any order: the query has no ORDER BY, which spills to disk at
/// fleet scale) and groups them by table (its oid: no names hashed or copied per row).
#[derive(Debug)]
pub(super) struct TablesBuilder {
    index: HashMap<i64, usize>,
    tables: Vec<Draft>,
    /// Contracted columns per table, at most (the capacity of each table's column list).
    columns: usize,
    last: Option<usize>,
}

/// A table being built: its columns keyed by attnum, each with its primary-key position.
#[derive(Debug)]
struct Draft {
    oid: i64,
    table: LiveTable,
    columns: Vec<(i32, Option<i32>, LiveColumn)>,
}

impl TablesBuilder {
    /// A builder sized for about `tables` tables of up to `columns` contracted columns
    /// (growing a large table list reallocates and copies it, and frees big blocks the
    /// allocator then consolidates).
    pub fn with_capacity(tables: usize, columns: usize) -> Self {
        Self {
            index: HashMap::with_capacity(tables),
            tables: Vec::with_capacity(tables),
            columns,
            last: None,
        }
    }

    /// Adds one row.
    pub fn push(&mut self, row: &ColumnRow<'_>) {
        // Rows of one table mostly arrive together: compare with the previous table first.
        let slot = match self.last {
            Some(i) if self.tables[i].oid == row.table_oid => i,
            _ => {
                let (tables, columns) = (&mut self.tables, self.columns);
                *self.index.entry(row.table_oid).or_insert_with(|| {
                    let mut table = LiveTable::new(row.schema_name, row.table_name);
                    table.kind = relation_kind(row.relkind);
                    tables.push(Draft {
                        oid: row.table_oid,
                        table,
                        columns: Vec::with_capacity(columns),
                    });
                    tables.len() - 1
                })
            }
        };
        self.last = Some(slot);
        let Some(name) = row.column_name else { return };
        let draft = &mut self.tables[slot];
        if let (Some(ref_schema), Some(ref_table), Some(ref_column)) =
            (row.ref_schema, row.ref_table, row.ref_column)
        {
            draft.table.foreign_keys.push(LiveForeignKey {
                column: name.to_owned(),
                ref_schema: ref_schema.to_owned(),
                ref_table: ref_table.to_owned(),
                ref_column: ref_column.to_owned(),
            });
        }
        let attnum = row.attnum.unwrap_or(0);
        // A column with several single-column foreign keys comes once per key.
        if draft.columns.iter().any(|(n, _, _)| *n == attnum) {
            return;
        }
        let data_type = row.data_type.unwrap_or_default();
        draft.columns.push((
            attnum,
            row.pk_position,
            LiveColumn {
                name: name.to_owned(),
                type_key: row.type_key.unwrap_or(data_type).to_owned(),
                data_type: data_type.to_owned(),
                nullable: row.nullable.unwrap_or(true),
                default: row.default_expr.map(str::to_owned),
                enum_labels: row.enum_labels.clone(),
                enum_type_key: row.enum_type_key.map(str::to_owned),
            },
        ));
    }

    /// The tables (in no particular order: the snapshot keys them by name), columns in
    /// attnum order, keys and fingerprints filled in: each table deterministic whatever
    /// the row order. Plus, per view, the attnums of its nullable contracted columns (what
    /// a view can return is settled afterwards, from the tables it reads).
    pub fn finish(self) -> (Vec<LiveTable>, Vec<ViewColumns>) {
        let mut views = Vec::new();
        let tables = self
            .tables
            .into_iter()
            .enumerate()
            .map(|(index, mut draft)| {
                draft.columns.sort_by_key(|(attnum, _, _)| *attnum);
                if draft.table.kind == RelationKind::View {
                    let columns: Vec<(i32, usize)> = draft
                        .columns
                        .iter()
                        .enumerate()
                        .filter(|(_, (_, _, c))| c.nullable)
                        .map(|(i, (attnum, _, _))| (*attnum, i))
                        .collect();
                    if !columns.is_empty() {
                        views.push(ViewColumns {
                            table: index,
                            oid: draft.oid,
                            columns,
                        });
                    }
                }
                draft.finish()
            })
            .collect();
        (tables, views)
    }
}

/// `pg_class.relkind` → the relation kind (tables and partitioned tables are tables).
fn relation_kind(relkind: &str) -> RelationKind {
    match relkind {
        "v" => RelationKind::View,
        "m" => RelationKind::MaterializedView,
        "f" => RelationKind::ForeignTable,
        _ => RelationKind::Table,
    }
}

impl Draft {
    /// Columns already in attnum order.
    fn finish(self) -> LiveTable {
        let mut pk: Vec<(i32, String)> = self
            .columns
            .iter()
            .filter_map(|(_, position, c)| position.map(|p| (p, c.name.clone())))
            .collect();
        pk.sort();
        let mut table = self.table;
        table.primary_key = pk.into_iter().map(|(_, name)| name).collect();
        table.columns = self.columns.into_iter().map(|(_, _, c)| c).collect();
        table.foreign_keys.sort_by(|a, b| {
            (&a.column, &a.ref_schema, &a.ref_table, &a.ref_column).cmp(&(
                &b.column,
                &b.ref_schema,
                &b.ref_table,
                &b.ref_column,
            ))
        });
        table.fingerprint = fingerprint(&table);
        table
    }
}
