//! Catalog rows → live tables.

use std::collections::{BTreeMap, HashSet};

use contract_core::{LiveColumn, LiveForeignKey, LiveTable};

use super::row::{ColumnRow, JsonCheckRow, KeyRow};
use crate::check::fingerprint;

/// Groups rows (ordered by database, table, ordinal position) into tables, then attaches
/// keys and marks MariaDB `JSON` columns.
pub(super) fn tables(
    rows: Vec<ColumnRow>,
    keys: Vec<KeyRow>,
    json: &[JsonCheckRow],
) -> Vec<LiveTable> {
    let json: HashSet<(&str, &str, &str)> = json
        .iter()
        .filter(|j| j.check_clause.starts_with("json_valid("))
        .map(|j| {
            (
                j.schema_name.as_str(),
                j.table_name.as_str(),
                j.column_name.as_str(),
            )
        })
        .collect();
    let mut tables: Vec<LiveTable> = Vec::new();
    for row in rows {
        let same = tables
            .last()
            .is_some_and(|t| t.schema == row.schema_name && t.name == row.table_name);
        if !same {
            tables.push(LiveTable::new(
                row.schema_name.clone(),
                row.table_name.clone(),
            ));
        }
        let (Some(table), Some(name)) = (tables.last_mut(), row.column_name) else {
            continue;
        };
        let is_json = json.contains(&(
            row.schema_name.as_str(),
            row.table_name.as_str(),
            name.as_str(),
        ));
        let column_type = row.column_type.unwrap_or_default();
        let nullable = row.is_nullable.as_deref() != Some("NO");
        let type_key = type_key(&TypeKeyParts {
            column_type: &column_type,
            nullable,
            collation: row.collation_name.as_deref(),
            column_key: row.column_key.as_deref().unwrap_or(""),
            extra: row.extra.as_deref().unwrap_or(""),
            has_default: row.default_expr.is_some(),
        });
        let data_type = if is_json {
            "json".to_owned()
        } else {
            column_type.clone()
        };
        let enum_labels = (row.data_type.as_deref() == Some("enum"))
            .then(|| enum_labels(&column_type))
            .flatten();
        table.columns.push(LiveColumn {
            name,
            data_type,
            type_key,
            nullable,
            // MariaDB spells an explicit `DEFAULT NULL` as the text `NULL`.
            default: row.default_expr.filter(|d| d != "NULL"),
            enum_labels,
            enum_type_key: None,
        });
    }
    attach_keys(&mut tables, keys);
    for table in &mut tables {
        table.fingerprint = fingerprint(table);
    }
    tables
}

/// What makes two MySQL columns report different type infos to sqlx.
#[derive(Clone, Copy)]
pub(super) struct TypeKeyParts<'a> {
    /// `COLUMN_TYPE`, with length, `unsigned`, `zerofill` and enum labels.
    pub column_type: &'a str,
    /// `NOT NULL` sets a column flag.
    pub nullable: bool,
    /// The collation: `binary` makes text bytes; MariaDB `JSON` is `utf8mb4_bin`.
    pub collation: Option<&'a str>,
    /// `PRI` / `UNI` / `MUL` set key flags.
    pub column_key: &'a str,
    /// `auto_increment`, `on update current_timestamp()` set flags.
    pub extra: &'a str,
    /// `NO_DEFAULT_VALUE` is a flag.
    pub has_default: bool,
}

/// The type key of a MySQL column: every catalog fact that feeds the `MySqlTypeInfo`
/// sqlx builds from the column definition (type, length, `UNSIGNED`, the flags — which
/// string and enum equality compare exactly — and the collation). Columns with equal keys
/// get equal type infos, so one prepared statement resolves a key for the whole fleet.
pub(super) fn type_key(p: &TypeKeyParts<'_>) -> String {
    format!(
        "{}|{}|{}|{}|{}|{}",
        p.column_type.to_ascii_lowercase(),
        if p.nullable { "null" } else { "not null" },
        p.collation.unwrap_or("-"),
        p.column_key,
        p.extra.to_ascii_lowercase(),
        if p.has_default {
            "default"
        } else {
            "no default"
        },
    )
}

/// Labels of `enum('a','b''c')`, unescaped, or `None` if `column_type` is not an enum.
pub(super) fn enum_labels(column_type: &str) -> Option<Vec<String>> {
    let inner = column_type.strip_prefix("enum(")?.strip_suffix(')')?;
    let mut labels = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        match chars.next() {
            None => return Some(labels),
            Some(',') => {}
            Some('\'') => {
                let mut label = String::new();
                loop {
                    match chars.next()? {
                        '\'' if chars.peek() == Some(&'\'') => {
                            chars.next();
                            label.push('\'');
                        }
                        '\'' => break,
                        '\\' => label.push(chars.next()?),
                        c => label.push(c),
                    }
                }
                labels.push(label);
            }
            Some(_) => return None,
        }
    }
}

fn attach_keys(tables: &mut [LiveTable], keys: Vec<KeyRow>) {
    // (schema, table, constraint) → columns, in key order (rows are ordered).
    let mut constraints: BTreeMap<(String, String, String), Vec<KeyRow>> = BTreeMap::new();
    for key in keys {
        constraints
            .entry((
                key.schema_name.clone(),
                key.table_name.clone(),
                key.constraint_name.clone(),
            ))
            .or_default()
            .push(key);
    }
    for ((schema, table, constraint), columns) in constraints {
        let Some(table) = tables
            .iter_mut()
            .find(|t| t.schema == schema && t.name == table)
        else {
            continue;
        };
        if constraint == "PRIMARY" {
            table.primary_key = columns.into_iter().map(|k| k.column_name).collect();
            continue;
        }
        // Contracts declare single-column foreign keys only.
        if let [key] = columns.as_slice()
            && let (Some(ref_schema), Some(ref_table), Some(ref_column)) =
                (&key.ref_schema, &key.ref_table, &key.ref_column)
        {
            table.foreign_keys.push(LiveForeignKey {
                column: key.column_name.clone(),
                ref_schema: ref_schema.clone(),
                ref_table: ref_table.clone(),
                ref_column: ref_column.clone(),
            });
        }
    }
    for table in tables {
        table.foreign_keys.sort_by(|a, b| a.column.cmp(&b.column));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_labels_are_parsed_and_unescaped() {
        assert_eq!(
            enum_labels("enum('a','b')"),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(
            enum_labels("enum('it''s','x,y')"),
            Some(vec!["it's".to_owned(), "x,y".to_owned()])
        );
        assert_eq!(enum_labels("varchar(10)"), None);
    }

    #[test]
    fn type_key_separates_flags_that_change_type_info() {
        let base = TypeKeyParts {
            column_type: "int(11)",
            nullable: true,
            collation: None,
            column_key: "",
            extra: "",
            has_default: false,
        };
        // Each part on its own changes the type info sqlx builds, so each changes the key.
        let varied = [
            (
                "column_type",
                TypeKeyParts {
                    column_type: "int(10) unsigned",
                    ..base
                },
            ),
            (
                "nullable",
                TypeKeyParts {
                    nullable: false,
                    ..base
                },
            ),
            (
                "collation",
                TypeKeyParts {
                    collation: Some("binary"),
                    ..base
                },
            ),
            (
                "column_key",
                TypeKeyParts {
                    column_key: "PRI",
                    ..base
                },
            ),
            (
                "extra",
                TypeKeyParts {
                    extra: "auto_increment",
                    ..base
                },
            ),
            (
                "has_default",
                TypeKeyParts {
                    has_default: true,
                    ..base
                },
            ),
        ];
        let base_key = type_key(&base);
        for (field, parts) in &varied {
            assert_ne!(type_key(parts), base_key, "{field} must change the key");
        }
        // No two single-part changes collide either.
        let keys: HashSet<String> = varied.iter().map(|(_, p)| type_key(p)).collect();
        assert_eq!(keys.len(), varied.len(), "{keys:?}");
        // Two collations are two keys (`binary` text decodes as bytes).
        assert_ne!(
            type_key(&TypeKeyParts {
                collation: Some("utf8mb4_bin"),
                ..base
            }),
            type_key(&TypeKeyParts {
                collation: Some("utf8mb4_general_ci"),
                ..base
            })
        );
        // The catalog's spelling of the type and `EXTRA` varies in case across servers.
        assert_eq!(
            type_key(&TypeKeyParts {
                column_type: "INT(11)",
                extra: "AUTO_INCREMENT",
                ..base
            }),
            type_key(&TypeKeyParts {
                extra: "auto_increment",
                ..base
            })
        );
    }
}
