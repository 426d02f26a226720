//! What a consumer expects of one table.

use serde::{Deserialize, Serialize};

use super::column::{ColumnContract, Reference};

/// The schema contract of one consumer struct: the table and the columns it reads.
///
/// Extra live columns, tables and indexes are never drift: only what the consumer reads
/// (`ARCHITECTURE.md` D2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableContract {
    /// Name of the Rust struct the contract was derived from.
    pub struct_name: String,
    /// A fixed schema/database (`#[contract(schema = "...")]`), or `None` for "in every tenant".
    pub schema: Option<String>,
    /// Table name.
    pub table: String,
    /// The columns read, in field order (flattened structs inlined).
    pub columns: Vec<ColumnContract>,
}

impl TableContract {
    /// Column names of the primary key, in column order.
    #[must_use]
    pub fn primary_key(&self) -> Vec<&str> {
        self.columns
            .iter()
            .filter(|c| c.primary_key)
            .map(|c| c.name.as_str())
            .collect()
    }

    /// Foreign keys declared with `#[contract(references = "...")]`.
    pub fn foreign_keys(&self) -> impl Iterator<Item = (&str, &Reference)> {
        self.columns
            .iter()
            .filter_map(|c| c.references.as_ref().map(|r| (c.name.as_str(), r)))
    }

    /// Looks a column up by its exact name.
    #[must_use]
    pub fn column(&self, name: &str) -> Option<&ColumnContract> {
        self.columns.iter().find(|c| c.name == name)
    }
}
