//! Identifier validation and quoting per SQL dialect.
//!
//! Every identifier that reaches SQL text goes through [`Dialect::quote`]: names are
//! never pasted. Quoting is only half of the safety: PostgreSQL silently truncates names
//! longer than 63 bytes and no dialect accepts NUL, so such names are rejected outright.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::error::IdentError;

/// The SQL dialect a piece of SQL is rendered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// PostgreSQL: one schema per tenant.
    Postgres,
    /// MySQL or MariaDB: one database per tenant.
    MySql,
    /// SQLite: one database file per tenant.
    Sqlite,
}

impl Dialect {
    /// The longest identifier the dialect keeps intact, in bytes (`None`: no limit).
    ///
    /// PostgreSQL truncates at `NAMEDATALEN - 1` = 63 bytes; MySQL allows 64 characters.
    #[must_use]
    pub const fn max_identifier_len(self) -> Option<usize> {
        match self {
            Dialect::Postgres => Some(63),
            Dialect::MySql => Some(64),
            Dialect::Sqlite => None,
        }
    }

    /// Checks that `name` can be used as an identifier in this dialect.
    ///
    /// # Errors
    ///
    /// [`IdentError`] when the name is empty, contains NUL, is longer than the dialect keeps,
    /// or (MySQL) ends with whitespace or has a character beyond U+FFFF.
    pub fn validate(self, name: &str) -> Result<(), IdentError> {
        if name.is_empty() {
            return Err(IdentError::Empty);
        }
        if name.contains('\0') {
            return Err(IdentError::Nul {
                name: name.escape_debug().to_string(),
            });
        }
        let len = match self {
            Dialect::MySql => name.chars().count(),
            Dialect::Postgres | Dialect::Sqlite => name.len(),
        };
        if let Some(max) = self.max_identifier_len()
            && len > max
        {
            return Err(IdentError::TooLong {
                name: name.to_owned(),
                len,
                max,
                dialect: self,
            });
        }
        if self == Dialect::MySql {
            // MySQL/MariaDB's `my_isspace`, checked by the server on table and column names.
            if name.ends_with([' ', '\t', '\n', '\r', '\u{b}', '\u{c}']) {
                return Err(IdentError::TrailingSpace {
                    name: name.escape_debug().to_string(),
                });
            }
            if let Some(character) = name.chars().find(|c| u32::from(*c) > 0xFFFF) {
                return Err(IdentError::UnsupportedCharacter {
                    name: name.to_owned(),
                    character,
                    dialect: self,
                });
            }
        }
        Ok(())
    }

    /// Quotes `name` as an identifier, doubling embedded quote characters.
    ///
    /// ```
    /// use contract_core::Dialect;
    /// assert_eq!(Dialect::Postgres.quote("we\"ird").unwrap(), "\"we\"\"ird\"");
    /// assert_eq!(Dialect::MySql.quote("a`b").unwrap(), "`a``b`");
    /// assert!(Dialect::Postgres.quote("bad\0name").is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// The errors of [`Dialect::validate`].
    pub fn quote(self, name: &str) -> Result<String, IdentError> {
        self.validate(name)?;
        let q = self.quote_char();
        let mut out = String::with_capacity(name.len() + 2);
        out.push(q);
        for c in name.chars() {
            if c == q {
                out.push(q);
            }
            out.push(c);
        }
        out.push(q);
        Ok(out)
    }

    /// Quotes `schema.table` (or just `table` when `schema` is `None`).
    ///
    /// # Errors
    ///
    /// The errors of [`Dialect::validate`], for either part.
    pub fn quote_qualified(self, schema: Option<&str>, name: &str) -> Result<String, IdentError> {
        match schema {
            Some(schema) => Ok(format!("{}.{}", self.quote(schema)?, self.quote(name)?)),
            None => self.quote(name),
        }
    }

    /// Whether the column names `a` and `b` name the same column: ASCII-case-insensitive
    /// on SQLite and MySQL (where `User_Id` and `user_id` are one column, so adding the
    /// other fails), exact on PostgreSQL (a quoted identifier keeps its case).
    ///
    /// The same column is not the same result-column name: sqlx looks row columns up by
    /// exact name, and SQLite names a result column as declared (MySQL too for `*`).
    ///
    /// ```
    /// use contract_core::Dialect;
    /// assert!(Dialect::Sqlite.same_column("User_Id", "user_id"));
    /// assert!(!Dialect::Postgres.same_column("User_Id", "user_id"));
    /// ```
    #[must_use]
    pub fn same_column(self, a: &str, b: &str) -> bool {
        match self {
            Dialect::Postgres => a == b,
            Dialect::MySql | Dialect::Sqlite => a.eq_ignore_ascii_case(b),
        }
    }

    /// Whether the table names `a` and `b` name the same table: ASCII-case-insensitive on
    /// SQLite (`Events` is the table `FROM events` reads), exact on PostgreSQL and on MySQL
    /// (whose table names are file names: case-sensitive unless the server sets
    /// `lower_case_table_names`, which then stores and reports them in lower case).
    ///
    /// ```
    /// use contract_core::Dialect;
    /// assert!(Dialect::Sqlite.same_table("Events", "events"));
    /// assert!(!Dialect::MySql.same_table("Events", "events"));
    /// ```
    #[must_use]
    pub fn same_table(self, a: &str, b: &str) -> bool {
        match self {
            Dialect::Postgres | Dialect::MySql => a == b,
            Dialect::Sqlite => a.eq_ignore_ascii_case(b),
        }
    }

    /// Renders `value` as a single-quoted SQL string literal that reads back as `value`
    /// whatever the server's quoting settings.
    ///
    /// On PostgreSQL a value holding a backslash is written as an escape string (`E'…'`,
    /// the backslash doubled): a plain `'…'` reads backslashes as escapes on a server or
    /// session with `standard_conforming_strings = off`. Other values stay plain.
    ///
    /// ```
    /// use contract_core::Dialect;
    ///
    /// assert_eq!(Dialect::Postgres.string_literal("it's").unwrap(), "'it''s'");
    /// assert_eq!(Dialect::Postgres.string_literal(r"a\b").unwrap(), r"E'a\\b'");
    /// ```
    ///
    /// # Errors
    ///
    /// [`IdentError::Nul`] when the value contains NUL, which no dialect stores in text.
    pub fn string_literal(self, value: &str) -> Result<String, IdentError> {
        if value.contains('\0') {
            return Err(IdentError::Nul {
                name: value.escape_debug().to_string(),
            });
        }
        let escape_string = self == Dialect::Postgres && value.contains('\\');
        let mut out = String::with_capacity(value.len() + 3);
        if escape_string {
            out.push('E');
        }
        out.push('\'');
        for c in value.chars() {
            match c {
                '\'' => out.push_str("''"),
                '\\' if self == Dialect::MySql || escape_string => out.push_str("\\\\"),
                c => out.push(c),
            }
        }
        out.push('\'');
        Ok(out)
    }

    const fn quote_char(self) -> char {
        match self {
            Dialect::MySql => '`',
            Dialect::Postgres | Dialect::Sqlite => '"',
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dialect::Postgres => "PostgreSQL",
            Dialect::MySql => "MySQL",
            Dialect::Sqlite => "SQLite",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Dialect; 3] = [Dialect::Postgres, Dialect::MySql, Dialect::Sqlite];

    #[test]
    fn quote_doubles_embedded_quotes() {
        assert_eq!(Dialect::Postgres.quote(r#"a"b"#).unwrap(), r#""a""b""#);
        assert_eq!(Dialect::Sqlite.quote(r#"""#).unwrap(), r#""""""#);
        assert_eq!(Dialect::MySql.quote("``").unwrap(), "``````");
        // The other dialect's quote char is inert.
        assert_eq!(Dialect::MySql.quote(r#"a"b"#).unwrap(), r#"`a"b`"#);
    }

    #[test]
    fn quote_keeps_injection_attempts_inside_one_identifier() {
        let hostile = r#"x"; DROP TABLE users; --"#;
        let quoted = Dialect::Postgres.quote(hostile).unwrap();
        assert_eq!(quoted, r#""x""; DROP TABLE users; --""#);
        // Strip the outer quotes; every remaining quote must be doubled.
        let inner = &quoted[1..quoted.len() - 1];
        assert!(!inner.replace("\"\"", "").contains('"'));
    }

    #[test]
    fn quote_rejects_empty_and_nul_in_every_dialect() {
        for d in ALL {
            assert_eq!(d.quote(""), Err(IdentError::Empty));
            assert!(matches!(d.quote("a\0b"), Err(IdentError::Nul { .. })));
        }
    }

    #[test]
    fn quote_rejects_names_the_server_would_truncate() {
        let long = "a".repeat(64);
        assert!(matches!(
            Dialect::Postgres.quote(&long),
            Err(IdentError::TooLong { max: 63, .. })
        ));
        assert!(Dialect::MySql.quote(&long).is_ok());
        assert!(Dialect::MySql.quote(&"a".repeat(65)).is_err());
        assert!(Dialect::Sqlite.quote(&"a".repeat(500)).is_ok());
        // Multi-byte: 32 two-byte chars = 64 bytes is too long for PostgreSQL.
        assert!(Dialect::Postgres.quote(&"é".repeat(32)).is_err());
        assert!(Dialect::MySql.quote(&"é".repeat(64)).is_ok());
    }

    #[test]
    fn quote_rejects_mysql_trailing_space() {
        for name in ["a ", "a\t", "a\n", "a\r", "a\u{b}", "a\u{c}"] {
            assert!(
                matches!(
                    Dialect::MySql.quote(name),
                    Err(IdentError::TrailingSpace { .. })
                ),
                "{name:?}"
            );
            assert!(Dialect::Postgres.quote(name).is_ok());
        }
        // A no-break space is not whitespace to MySQL.
        assert!(Dialect::MySql.quote("a\u{a0}").is_ok());
    }

    #[test]
    fn quote_rejects_mysql_characters_beyond_the_basic_multilingual_plane() {
        let error = Dialect::MySql.quote("a🦀b").unwrap_err();
        assert_eq!(
            error.to_string(),
            "identifier `a🦀b` contains `🦀` (U+1F980), which MySQL does not allow in names \
             (only characters up to U+FFFF); remove it"
        );
        assert!(Dialect::MySql.quote("日本\u{fffd}").is_ok());
        assert!(Dialect::Postgres.quote("a🦀b").is_ok());
    }

    #[test]
    fn string_literal_escapes_quotes_and_mysql_backslashes() {
        assert_eq!(Dialect::Postgres.string_literal("it's").unwrap(), "'it''s'");
        assert_eq!(Dialect::MySql.string_literal(r"a\'").unwrap(), r"'a\\'''");
        // Read back the same under `standard_conforming_strings = off`.
        assert_eq!(
            Dialect::Postgres.string_literal(r"a\b").unwrap(),
            r"E'a\\b'"
        );
        assert_eq!(
            Dialect::Postgres.string_literal(r"\'; x").unwrap(),
            r"E'\\''; x'"
        );
        assert_eq!(Dialect::Sqlite.string_literal(r"a\b").unwrap(), r"'a\b'");
        assert!(Dialect::Sqlite.string_literal("a\0").is_err());
    }

    #[test]
    fn quote_qualified_joins_two_quoted_parts() {
        assert_eq!(
            Dialect::Postgres
                .quote_qualified(Some("tenant_42"), "events")
                .unwrap(),
            r#""tenant_42"."events""#
        );
        assert_eq!(
            Dialect::Sqlite.quote_qualified(None, "events").unwrap(),
            r#""events""#
        );
    }
}
