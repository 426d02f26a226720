//! Tenant names: validated before any SQL or file path is built from them.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::error::IdentError;

/// The longest tenant name accepted: PostgreSQL's identifier limit, the strictest of all.
pub const MAX_TENANT_NAME_LEN: usize = 63;

/// A tenant's name: a PostgreSQL schema, a MySQL database or a SQLite file stem.
///
/// Tenant names come from catalogs, registry tables and configuration, so they are
/// checked strictly: ASCII letters, digits and `_`, not starting with a digit, at most
/// [`MAX_TENANT_NAME_LEN`] bytes. That keeps them valid, unambiguous identifiers in every
/// dialect and safe file names, with no case-folding surprises beyond ASCII.
///
/// ```
/// use contract_core::TenantName;
/// assert!(TenantName::new("tenant_42").is_ok());
/// assert!(TenantName::new("x\"; DROP SCHEMA public; --").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantName(String);

impl TenantName {
    /// Validates `name` as a tenant name.
    ///
    /// # Errors
    ///
    /// [`IdentError::InvalidTenant`] naming the offending character or length and the rule.
    pub fn new(name: impl Into<String>) -> Result<Self, IdentError> {
        let name = name.into();
        let reject = |why: String| IdentError::InvalidTenant {
            name: name.escape_debug().to_string(),
            why,
        };
        if name.is_empty() {
            return Err(reject("it is empty".into()));
        }
        if name.len() > MAX_TENANT_NAME_LEN {
            return Err(reject(format!(
                "it is {} bytes long, the limit is {MAX_TENANT_NAME_LEN}",
                name.len()
            )));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
        {
            return Err(reject(format!("it contains {:?}", bad)));
        }
        if name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(reject("it starts with a digit".into()));
        }
        Ok(Self(name))
    }

    /// The name as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TenantName {
    type Error = IdentError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<TenantName> for String {
    fn from(value: TenantName) -> Self {
        value.0
    }
}

impl fmt::Display for TenantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TenantName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_name_accepts_plain_identifiers() {
        for ok in ["tenant_42", "_t", "T", &"a".repeat(63)] {
            assert!(TenantName::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn tenant_name_rejects_hostile_input_with_reason() {
        let cases = [
            ("", "empty"),
            ("t'42", "contains '\\''"),
            ("t\"42", "contains '\"'"),
            ("t;drop", "contains ';'"),
            ("t\0", "contains '\\0'"),
            ("../etc", "contains '.'"),
            ("t 42", "contains ' '"),
            ("42t", "starts with a digit"),
            ("tenantÉ", "contains 'É'"),
        ];
        for (name, why) in cases {
            let err = TenantName::new(name).unwrap_err().to_string();
            assert!(err.contains(why), "{name:?}: {err}");
        }
        let long = TenantName::new("a".repeat(200)).unwrap_err().to_string();
        assert!(long.contains("200 bytes long"), "{long}");
    }

    #[test]
    fn tenant_name_deserialisation_validates() {
        assert!(serde_json::from_str::<TenantName>("\"ok_1\"").is_ok());
        assert!(serde_json::from_str::<TenantName>("\"no;\"").is_err());
    }
}
