//! Attribute names, compared with `path == SYMBOL`.

use std::fmt::{self, Display};

use syn::{Ident, Path};

/// An attribute key.
#[derive(Copy, Clone, PartialEq, Eq)]
pub(crate) struct Symbol(&'static str);

// Attribute namespaces.
pub(crate) const CONTRACT: Symbol = Symbol("contract");
pub(crate) const SQLX: Symbol = Symbol("sqlx");

// #[contract(...)] on the struct.
pub(crate) const TABLE: Symbol = Symbol("table");
pub(crate) const SCHEMA: Symbol = Symbol("schema");
pub(crate) const CRATE: Symbol = Symbol("crate");
pub(crate) const EMBEDDED: Symbol = Symbol("embedded");
pub(crate) const BACKENDS: Symbol = Symbol("backends");
pub(crate) const POSTGRES: Symbol = Symbol("postgres");
pub(crate) const MYSQL: Symbol = Symbol("mysql");
pub(crate) const SQLITE: Symbol = Symbol("sqlite");

// #[contract(...)] on a field.
pub(crate) const DEFAULT: Symbol = Symbol("default");
pub(crate) const SQL_TYPE: Symbol = Symbol("sql_type");
/// `#[contract(enum_labels = "...")]`
pub(crate) const ENUM_LABELS: Symbol = Symbol("enum_labels");
pub(crate) const PRIMARY_KEY: Symbol = Symbol("primary_key");
pub(crate) const REFERENCES: Symbol = Symbol("references");
pub(crate) const RENAMED_FROM: Symbol = Symbol("renamed_from");

// #[sqlx(...)], read the way `sqlx::FromRow` reads it.
pub(crate) const RENAME_ALL: Symbol = Symbol("rename_all");
pub(crate) const RENAME: Symbol = Symbol("rename");
pub(crate) const SKIP: Symbol = Symbol("skip");
pub(crate) const FLATTEN: Symbol = Symbol("flatten");
pub(crate) const TRY_FROM: Symbol = Symbol("try_from");
pub(crate) const JSON: Symbol = Symbol("json");
pub(crate) const NULLABLE: Symbol = Symbol("nullable");

impl PartialEq<Symbol> for Ident {
    fn eq(&self, word: &Symbol) -> bool {
        self == word.0
    }
}

impl PartialEq<Symbol> for &Ident {
    fn eq(&self, word: &Symbol) -> bool {
        *self == word.0
    }
}

impl PartialEq<Symbol> for Path {
    fn eq(&self, word: &Symbol) -> bool {
        self.is_ident(word.0)
    }
}

impl PartialEq<Symbol> for &Path {
    fn eq(&self, word: &Symbol) -> bool {
        self.is_ident(word.0)
    }
}

impl Display for Symbol {
    fn fmt(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str(self.0)
    }
}
