//! Plan steps, hazards and refusals.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::drift::DriftKind;

/// Why a step is not safe to run unattended (DESIGN D5). Every hazard needs an approval
/// of the exact plan hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hazard {
    /// The table (and its indexes) is rewritten.
    TableRewrite,
    /// An ACCESS EXCLUSIVE lock is held for the duration of a rewrite or rebuild.
    AccessExclusiveLock,
    /// Every index on the column is rebuilt.
    IndexRebuild,
    /// Existing rows are validated; the step fails if any row violates the new rule.
    ValidatesRows,
    /// A column is renamed: other readers of the old name break.
    RenamesColumn,
    /// SQLite: the table is rebuilt (create, copy, drop, rename).
    TableRebuild,
    /// The referenced (parent) table is locked too.
    LocksReferencedTable,
}

impl Hazard {
    /// The hazard's snake_case name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Hazard::TableRewrite => "table_rewrite",
            Hazard::AccessExclusiveLock => "access_exclusive_lock",
            Hazard::IndexRebuild => "index_rebuild",
            Hazard::ValidatesRows => "validates_rows",
            Hazard::RenamesColumn => "renames_column",
            Hazard::TableRebuild => "table_rebuild",
            Hazard::LocksReferencedTable => "locks_referenced_table",
        }
    }
}

impl fmt::Display for Hazard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The strongest lock a step takes (PostgreSQL names; MySQL/SQLite map onto them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockLevel {
    /// No lock on existing tables (a new table).
    None,
    /// SHARE UPDATE EXCLUSIVE: reads and writes continue.
    ShareUpdateExclusive,
    /// SHARE ROW EXCLUSIVE: writes wait.
    ShareRowExclusive,
    /// ACCESS EXCLUSIVE, held briefly (metadata-only change).
    AccessExclusiveBrief,
    /// ACCESS EXCLUSIVE for the duration of a rewrite.
    AccessExclusive,
}

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// CREATE TABLE.
    CreateTable,
    /// ADD COLUMN.
    AddColumn,
    /// RENAME COLUMN (declared with `renamed_from`, or a name that differs only in case on
    /// SQLite and MySQL).
    RenameColumn,
    /// ALTER COLUMN TYPE.
    ChangeType,
    /// SET NOT NULL (online sequence on PostgreSQL).
    SetNotNull,
    /// ADD FOREIGN KEY (NOT VALID, then VALIDATE).
    AddForeignKey,
    /// ALTER TYPE … ADD VALUE (PostgreSQL enum labels).
    AddEnumLabel,
}

/// One step of a plan: its SQL, what it fixes, its lock and hazards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanStep {
    /// The table changed.
    pub table: String,
    /// The column changed, if one.
    pub column: Option<String>,
    /// What the step does.
    pub action: Action,
    /// The drift it fixes.
    pub fixes: DriftKind,
    /// The statements, in order; identifiers quoted by the dialect.
    pub statements: Vec<String>,
    /// The strongest lock taken.
    pub lock: LockLevel,
    /// Hazards (empty: safe to apply unattended).
    pub hazards: Vec<Hazard>,
}

impl PlanStep {
    /// `true` when the step has no hazard, so `SafeOnly` may apply it.
    #[must_use]
    pub fn is_safe(&self) -> bool {
        self.hazards.is_empty()
    }
}

/// A finding the planner will not fix, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The table.
    pub table: String,
    /// The column, if one.
    pub column: Option<String>,
    /// The drift left unfixed.
    pub kind: DriftKind,
    /// Why, and what to do instead.
    pub reason: String,
}
