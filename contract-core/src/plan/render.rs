//! SQL text per dialect. Every identifier goes through [`Dialect::quote`].

use super::TypeCatalog;
use crate::digest::digest_hex;
use crate::error::IdentError;
use crate::ident::Dialect;
use crate::model::{ColumnContract, Reference};

/// Where a table lives: its schema (PostgreSQL schema, MySQL database; `None` on SQLite,
/// where each tenant is its own file).
#[derive(Debug, Clone, Copy)]
pub(super) struct Target<'a> {
    pub dialect: Dialect,
    pub schema: Option<&'a str>,
    pub table: &'a str,
    /// Where the fleet has the custom types a column may use (PostgreSQL).
    pub types: &'a TypeCatalog,
    /// The schemas a custom type is looked for in, in order.
    pub type_schemas: &'a [&'a str],
}

impl Target<'_> {
    pub fn qualified(&self) -> Result<String, IdentError> {
        self.dialect.quote_qualified(self.schema, self.table)
    }

    pub fn q(&self, name: &str) -> Result<String, IdentError> {
        self.dialect.quote(name)
    }

    /// A constraint name `<table>_<column>_<suffix>`, shortened with a hash when it would
    /// exceed the dialect's identifier limit (never silently truncated by the server).
    pub fn constraint_name(&self, column: &str, suffix: &str) -> String {
        let name = format!("{}_{column}_{suffix}", self.table);
        let max = self
            .dialect
            .max_identifier_len()
            .unwrap_or(usize::MAX)
            .min(63);
        if name.len() <= max {
            return name;
        }
        let hash = &digest_hex(name.as_bytes())[..8];
        let mut cut = max - hash.len() - 1;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}_{hash}", &name[..cut])
    }

    /// `"col" type [NOT NULL] [DEFAULT expr]`.
    pub fn column_definition(
        &self,
        column: &ColumnContract,
        sql_type: &str,
    ) -> Result<String, IdentError> {
        let mut def = format!("{} {sql_type}", self.q(&column.name)?);
        if !column.nullable {
            def.push_str(" NOT NULL");
        }
        if let Some(default) = &column.default_sql {
            def.push_str(" DEFAULT ");
            def.push_str(default);
        }
        Ok(def)
    }

    /// `REFERENCES schema.table (column)`; a reference without a schema stays in the tenant.
    pub fn references(&self, reference: &Reference) -> Result<String, IdentError> {
        let schema = match self.dialect {
            Dialect::Sqlite => None,
            _ => reference.schema.as_deref().or(self.schema),
        };
        Ok(format!(
            "REFERENCES {} ({})",
            self.dialect.quote_qualified(schema, &reference.table)?,
            self.q(&reference.column)?
        ))
    }
}
