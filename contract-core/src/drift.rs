//! Typed drift findings (`ARCHITECTURE.md` D4).

use serde::{Deserialize, Serialize};
use std::fmt;

/// What kind of difference a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DriftKind {
    /// The contracted table does not exist.
    MissingTable,
    /// A contracted column does not exist.
    MissingColumn,
    /// sqlx cannot decode the column's type into the field's type.
    TypeMismatch,
    /// The column accepts NULL but the field is not an `Option`.
    Nullability,
    /// The column holds values wider than the field (MySQL integers), or its storage
    /// class depends on the value (SQLite affinity).
    Width,
    /// An enum column's labels differ from what the consumer expects.
    EnumLabels,
    /// The primary key differs from the contract.
    PrimaryKey,
    /// A contracted foreign key is missing or points elsewhere.
    ForeignKey,
}

impl DriftKind {
    /// The kind as its snake_case name (the JSON form).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            DriftKind::MissingTable => "missing_table",
            DriftKind::MissingColumn => "missing_column",
            DriftKind::TypeMismatch => "type_mismatch",
            DriftKind::Nullability => "nullability",
            DriftKind::Width => "width",
            DriftKind::EnumLabels => "enum_labels",
            DriftKind::PrimaryKey => "primary_key",
            DriftKind::ForeignKey => "foreign_key",
        }
    }
}

impl fmt::Display for DriftKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Severity {
    /// Worth knowing, never fails decoding.
    Info,
    /// Decoding fails on some data (a NULL, a value too wide).
    AtRisk,
    /// Decoding fails now, on every row.
    Breaks,
}

impl Severity {
    /// The severity as its snake_case name (the JSON form).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::AtRisk => "at_risk",
            Severity::Breaks => "breaks",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One difference between a contract and a tenant's live schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Finding {
    /// The tenant.
    pub tenant: String,
    /// The schema the table was looked for in (the tenant, or the contract's fixed schema).
    pub schema: String,
    /// The table.
    pub table: String,
    /// The column, when the finding is about one.
    pub column: Option<String>,
    /// What differs.
    pub kind: DriftKind,
    /// How bad it is.
    pub severity: Severity,
    /// What the contract expects (for example `int8 (i64)`).
    pub expected: String,
    /// What the live schema has (for example `int4`), or `absent`.
    pub actual: String,
    /// The Rust struct whose contract this is.
    pub contract: String,
}

impl Finding {
    /// `schema.table` or `schema.table.column`.
    #[must_use]
    pub fn location(&self) -> String {
        match &self.column {
            Some(column) => format!("{}.{}.{}", self.schema, self.table, column),
            None => format!("{}.{}", self.schema, self.table),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.location();
        match self.kind {
            DriftKind::MissingTable => {
                write!(f, "{at}: missing table (contract {})", self.contract)
            }
            DriftKind::MissingColumn => write!(
                f,
                "{}.{}: missing column {} ({})",
                self.schema,
                self.table,
                self.column.as_deref().unwrap_or("?"),
                self.expected
            ),
            _ => write!(
                f,
                "{at}: {} where {} is expected [{} {}]",
                self.actual, self.expected, self.kind, self.severity
            ),
        }
    }
}
