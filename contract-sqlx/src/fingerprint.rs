//! Stable digests of live table definitions.

use contract_core::LiveTable;
use std::fmt::Write as _;

/// A digest of the introspected part of a table: names, types, nullability, defaults,
/// enum labels and keys. Equal digests mean an equal contracted definition.
#[must_use]
pub fn fingerprint(table: &LiveTable) -> String {
    let mut text = String::new();
    for c in &table.columns {
        let _ = write!(
            text,
            "{}\u{1f}{}\u{1f}{}\u{1f}{:?}\u{1f}{:?}\u{1e}",
            c.name, c.data_type, c.nullable, c.default, c.enum_labels
        );
    }
    let _ = write!(text, "pk{:?}\u{1e}", table.primary_key);
    for fk in &table.foreign_keys {
        let _ = write!(
            text,
            "fk{}>{}.{}.{}\u{1e}",
            fk.column, fk.ref_schema, fk.ref_table, fk.ref_column
        );
    }
    contract_core::digest_hex(text.as_bytes())
}
