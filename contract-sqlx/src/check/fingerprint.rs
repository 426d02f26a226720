//! Stable digests of live table definitions.

use contract_core::{FieldDigest, LiveTable};

/// A digest of the introspected part of a table: names, types, nullability, defaults,
/// enum labels, keys and the relation kind (a view is not a table); on SQLite also the `CREATE TABLE` text, the SQL of its indexes
/// and triggers, and the objects referring to it (a table rebuild re-creates them, so a
/// changed index makes a rebuild plan stale). Equal digests mean an equal contracted
/// definition. The SQLite-only parts are absent elsewhere and leave those digests as they
/// were.
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
        // Only where there is one: the digests of every other column stay as they were.
        if let Some(enum_type) = &c.enum_type_key {
            digest.field("enum_type").field(enum_type);
        }
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
    if !table.kind.is_table() {
        digest.field("kind").field(table.kind.as_str());
    }
    if table.definition.is_some() || !table.dependents.is_empty() || !table.referenced_by.is_empty()
    {
        digest.field("sqlite").optional(table.definition.as_ref());
        digest.field("dependents");
        for sql in &table.dependents {
            digest.field(sql);
        }
        digest.field("referenced_by");
        for object in &table.referenced_by {
            digest.field(object);
        }
    }
    digest.finish_hex()
}
