//! Several contracts on one table (two structs reading it, or two versions of one) are
//! planned as one: the table is created once with every column any of them reads, and a
//! column is added, retyped or renamed once. Planned apart, the second `CREATE TABLE` or
//! `ADD COLUMN` of the same name failed, and the plan rolled back on every pass.
//!
//! A column several contracts read gets the strictest reading: `NOT NULL` unless every
//! contract reads it as an `Option`; the first contract's type, default, former name and
//! reference unless it has none. When the contracts expect different SQL types for it, no
//! column type satisfies them all: its type findings are refused with that reason (never
//! planned: a change for one contract breaks the other, or changes nothing, every pass).

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::TableInput;
use crate::drift::{DriftKind, Finding};
use crate::ident::Dialect;
use crate::live::LiveTable;
use crate::model::TableContract;

/// The planning input of one table.
pub(super) struct Merged<'a> {
    contract: Cow<'a, TableContract>,
    live: Option<&'a LiveTable>,
    findings: Cow<'a, [Finding]>,
    expected_types: Cow<'a, BTreeMap<String, String>>,
    /// Type findings of columns the contracts disagree on, and why they are refused.
    pub(super) refused: Vec<(Finding, String)>,
}

impl Merged<'_> {
    pub(super) fn input(&self) -> TableInput<'_> {
        TableInput {
            contract: &self.contract,
            live: self.live,
            findings: &self.findings,
            expected_types: &self.expected_types,
        }
    }
}

/// `tables` with the inputs of one table merged, at the place of the first.
pub(super) fn by_table<'a>(
    dialect: Dialect,
    schema: Option<&str>,
    tables: &[TableInput<'a>],
) -> Vec<Merged<'a>> {
    let key = |input: &TableInput<'_>| match dialect {
        Dialect::Sqlite => None,
        _ => input.contract.schema.clone().or(schema.map(str::to_owned)),
    };
    let mut groups: Vec<Vec<&TableInput<'a>>> = Vec::new();
    for input in tables {
        let same = groups.iter_mut().find(|g| {
            key(g[0]) == key(input)
                && dialect.same_table(&g[0].contract.table, &input.contract.table)
        });
        match same {
            Some(group) => group.push(input),
            None => groups.push(vec![input]),
        }
    }
    groups.into_iter().map(merge).collect()
}

fn merge<'a>(group: Vec<&TableInput<'a>>) -> Merged<'a> {
    let first = group[0];
    if group.len() == 1 {
        return Merged {
            contract: Cow::Borrowed(first.contract),
            live: first.live,
            findings: Cow::Borrowed(first.findings),
            expected_types: Cow::Borrowed(first.expected_types),
            refused: Vec::new(),
        };
    }
    let mut contract = first.contract.clone();
    let mut findings: Vec<Finding> = Vec::new();
    let mut expected = BTreeMap::new();
    // Column → (struct, SQL type) of each contract that reads it.
    let mut readers: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for input in &group {
        for column in &input.contract.columns {
            if let Some(sql_type) = input.expected_types.get(&column.name) {
                readers
                    .entry(column.name.as_str())
                    .or_default()
                    .push((input.contract.struct_name.as_str(), sql_type.as_str()));
            }
        }
    }
    for input in &group {
        for column in &input.contract.columns {
            match contract.columns.iter_mut().find(|c| c.name == column.name) {
                None => contract.columns.push(column.clone()),
                Some(merged) => {
                    merged.nullable &= column.nullable;
                    merged.optional &= column.optional;
                    merged.primary_key |= column.primary_key;
                    merged.json |= column.json;
                    if merged.default_sql.is_none() {
                        merged.default_sql.clone_from(&column.default_sql);
                    }
                    if merged.sql_type.is_none() {
                        merged.sql_type.clone_from(&column.sql_type);
                    }
                    if merged.renamed_from.is_none() {
                        merged.renamed_from.clone_from(&column.renamed_from);
                    }
                    if merged.references.is_none() {
                        merged.references.clone_from(&column.references);
                    }
                    if merged.enum_labels.is_none() {
                        merged.enum_labels.clone_from(&column.enum_labels);
                    }
                }
            }
        }
        for finding in input.findings {
            let known = findings.iter().any(|f| {
                f.kind == finding.kind && f.column == finding.column && f.actual == finding.actual
            });
            if !known {
                findings.push(finding.clone());
            }
        }
        for (column, sql_type) in input.expected_types {
            expected
                .entry(column.clone())
                .or_insert_with(|| sql_type.clone());
        }
    }
    readers.retain(|_, r| r.iter().any(|(_, t)| *t != r[0].1));
    let why = |column: &str| {
        let read: Vec<String> = readers
            .get(column)
            .into_iter()
            .flatten()
            .map(|(name, sql_type)| format!("`{name}` as {sql_type}"))
            .collect();
        format!(
            "the contracts on this table read `{column}` as different SQL types ({}), which \
             no one column type satisfies; make the field types agree",
            read.join(", ")
        )
    };
    let mut refused = Vec::new();
    findings.retain(|finding| {
        let column = finding.column.as_deref().unwrap_or_default();
        let disagree = matches!(finding.kind, DriftKind::TypeMismatch | DriftKind::Width)
            && readers.contains_key(column);
        if disagree {
            refused.push((finding.clone(), why(column)));
        }
        !disagree
    });
    // A column the plan creates is created with the first contract's type: say now that
    // the others cannot be satisfied, not only once the column exists.
    for column in readers.keys() {
        let created = findings.iter().find(|f| {
            f.kind == DriftKind::MissingTable
                || (f.kind == DriftKind::MissingColumn && f.column.as_deref() == Some(*column))
        });
        let known = refused
            .iter()
            .any(|(f, _)| f.column.as_deref() == Some(*column));
        if let Some(created) = created.filter(|_| !known) {
            let finding = Finding {
                column: Some((*column).to_owned()),
                kind: DriftKind::TypeMismatch,
                ..created.clone()
            };
            refused.push((finding, why(column)));
        }
    }
    Merged {
        contract: Cow::Owned(contract),
        live: first.live,
        findings: Cow::Owned(findings),
        expected_types: Cow::Owned(expected),
        refused,
    }
}
