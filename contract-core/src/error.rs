//! Errors of the pure core.

use crate::ident::Dialect;

/// An identifier or tenant name that cannot be used safely in SQL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentError {
    /// The name is empty.
    #[error("identifier is empty; give the table, column or schema a name")]
    Empty,
    /// The name contains a NUL character, which no dialect accepts.
    #[error("identifier `{name}` contains a NUL character; remove it")]
    Nul {
        /// The name, with control characters escaped.
        name: String,
    },
    /// The name is longer than the server keeps (PostgreSQL would silently truncate it).
    #[error("identifier `{name}` is {len} long, {dialect} keeps at most {max}; use a shorter name")]
    TooLong {
        /// The name.
        name: String,
        /// Its length (bytes on PostgreSQL/SQLite, characters on MySQL).
        len: usize,
        /// The dialect's limit.
        max: usize,
        /// The dialect.
        dialect: Dialect,
    },
    /// MySQL does not allow names that end with whitespace (a space, tab, line break,
    /// vertical tab or form feed).
    #[error("identifier `{name}` ends with whitespace, which MySQL does not allow; remove it")]
    TrailingSpace {
        /// The name, with control characters escaped.
        name: String,
    },
    /// MySQL keeps names in a 3-byte UTF-8 (`utf8mb3`): characters outside the Basic
    /// Multilingual Plane (most emoji, rare CJK ideographs) are refused.
    #[error(
        "identifier `{name}` contains `{character}` (U+{:04X}), which {dialect} does not allow in names (only characters up to U+FFFF); remove it",
        u32::from(*.character)
    )]
    UnsupportedCharacter {
        /// The name.
        name: String,
        /// The first character refused.
        character: char,
        /// The dialect.
        dialect: Dialect,
    },
    /// A tenant name outside the accepted alphabet: no SQL was built from it.
    #[error(
        "tenant name `{name}` is rejected because {why}; tenant names must be 1-63 ASCII letters, \
         digits or `_`, not starting with a digit (no SQL was sent)"
    )]
    InvalidTenant {
        /// The rejected name, with control characters escaped.
        name: String,
        /// Which rule it breaks.
        why: String,
    },
}
