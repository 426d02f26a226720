//! Stable digests of live table definitions.

use contract_core::{FieldDigest, LiveTable};

/// A digest of the introspected part of a table: names, types, nullability, defaults,
/// enum labels and keys. Equal digests mean an equal contracted definition.
#[must_use]
pub fn fingerprint(table: &LiveTable) -> String {
    let mut digest = FieldDigest::new();
    for c in &table.columns {
        digest
            .field(&c.name)
            .field(&c.data_type)
            .field([u8::from(c.nullable)])
            .optional(c.default.as_ref());
        match &c.enum_labels {
            Some(labels) => labels.iter().fold(digest.field("enum"), |d, l| d.field(l)),
            None => digest.field("-"),
        };
    }
    digest.field("pk");
    for column in &table.primary_key {
        digest.field(column);
    }
    digest.field("fk");
    for fk in &table.foreign_keys {
        digest
            .field(&fk.column)
            .field(&fk.ref_schema)
            .field(&fk.ref_table)
            .field(&fk.ref_column);
    }
    digest.finish_hex()
}
