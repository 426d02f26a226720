//! Plan steps, hazards and refusals.

use serde::{Deserialize, Serialize};
use std::fmt;

use super::{OnlineChange, Phase};
use crate::drift::DriftKind;

/// Why a step is not safe to run unattended (`ARCHITECTURE.md` D5). Every hazard needs an approval
/// of the exact plan hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
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
    /// The column is copied into a new one in batches of short transactions (an online
    /// type change): writers continue, the tenant stays paused until the short swap.
    Backfill,
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
            Hazard::Backfill => "backfill",
        }
    }
}

impl Hazard {
    /// What the hazard means, in words, for an operator deciding on an approval.
    #[must_use]
    pub const fn describe(self) -> &'static str {
        match self {
            Hazard::TableRewrite => "rewrites the whole table",
            Hazard::AccessExclusiveLock => {
                "holds an ACCESS EXCLUSIVE lock (readers and writers wait) while it runs"
            }
            Hazard::IndexRebuild => "rebuilds every index on the column",
            Hazard::ValidatesRows => "reads every row and fails if one violates the new rule",
            Hazard::RenamesColumn => "renames a column: readers of the old name break",
            Hazard::TableRebuild => "rebuilds the table (create, copy, drop, rename)",
            Hazard::LocksReferencedTable => "also locks the referenced (parent) table",
            Hazard::Backfill => {
                "copies the column in batches of short transactions (writers continue); the tenant stays paused until a short swap"
            }
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
#[non_exhaustive]
pub enum LockLevel {
    /// No lock on existing tables (a new table).
    None,
    /// ROW EXCLUSIVE: the lock writers take; row locks of one short batch at a time.
    RowExclusive,
    /// SHARE UPDATE EXCLUSIVE: reads and writes continue.
    ShareUpdateExclusive,
    /// SHARE ROW EXCLUSIVE: writes wait.
    ShareRowExclusive,
    /// ACCESS EXCLUSIVE, held briefly (metadata-only change).
    AccessExclusiveBrief,
    /// ACCESS EXCLUSIVE for the duration of a rewrite.
    AccessExclusive,
}

impl LockLevel {
    /// The level's snake_case name (the JSON form).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            LockLevel::None => "none",
            LockLevel::RowExclusive => "row_exclusive",
            LockLevel::ShareUpdateExclusive => "share_update_exclusive",
            LockLevel::ShareRowExclusive => "share_row_exclusive",
            LockLevel::AccessExclusiveBrief => "access_exclusive_brief",
            LockLevel::AccessExclusive => "access_exclusive",
        }
    }

    /// What the lock means for the tenant's readers and writers, in words.
    #[must_use]
    pub const fn describe(self) -> &'static str {
        match self {
            LockLevel::None => "no lock on existing tables",
            LockLevel::RowExclusive => {
                "ROW EXCLUSIVE (reads and writes continue; one short batch of rows locked at a time)"
            }
            LockLevel::ShareUpdateExclusive => "SHARE UPDATE EXCLUSIVE (reads and writes continue)",
            LockLevel::ShareRowExclusive => "SHARE ROW EXCLUSIVE (writes wait)",
            LockLevel::AccessExclusiveBrief => "ACCESS EXCLUSIVE, briefly (metadata only)",
            LockLevel::AccessExclusive => "ACCESS EXCLUSIVE for the whole step",
        }
    }
}

impl fmt::Display for LockLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
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

impl Action {
    /// The action's snake_case name (the JSON form).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::CreateTable => "create_table",
            Action::AddColumn => "add_column",
            Action::RenameColumn => "rename_column",
            Action::ChangeType => "change_type",
            Action::SetNotNull => "set_not_null",
            Action::AddForeignKey => "add_foreign_key",
            Action::AddEnumLabel => "add_enum_label",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of a plan: its SQL, what it fixes, its lock and hazards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
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
    /// The transactions the statements run in, in order (empty: all of them in the
    /// tenant's one remediation transaction). See [`PlanStep::phased`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<Phase>,
    /// Set when the step is an online type change (PostgreSQL, a table above the row
    /// threshold): the phases are run by the online procedure, not as statements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<OnlineChange>,
}

impl PlanStep {
    /// `true` when the step has no hazard, so `SafeOnly` may apply it.
    #[must_use]
    pub fn is_safe(&self) -> bool {
        self.hazards.is_empty()
    }

    /// `true` when the step runs in more than one transaction.
    #[must_use]
    pub fn is_multi_phase(&self) -> bool {
        self.phases.len() > 1
    }

    /// The statements per transaction: one group per phase, or one group of all the
    /// statements (with no phase) for a step that runs in the tenant's one transaction.
    /// Phases that claim more statements than the step has get what is left.
    #[must_use]
    pub fn phased(&self) -> Vec<(Option<Phase>, &[String])> {
        if self.phases.is_empty() {
            return vec![(None, self.statements.as_slice())];
        }
        let mut rest = self.statements.as_slice();
        let mut groups = Vec::with_capacity(self.phases.len());
        for (i, phase) in self.phases.iter().enumerate() {
            let take = if i + 1 == self.phases.len() {
                rest.len()
            } else {
                phase.statements.min(rest.len())
            };
            let (now, later) = rest.split_at(take);
            groups.push((Some(*phase), now));
            rest = later;
        }
        groups
    }
}

/// `add_column events.note (fixes missing_column); lock: …; hazards: none`.
impl fmt::Display for PlanStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.action, self.table)?;
        if let Some(column) = &self.column {
            write!(f, ".{column}")?;
        }
        write!(
            f,
            " (fixes {}); lock: {}; hazards: ",
            self.fixes,
            self.lock.describe()
        )?;
        if self.hazards.is_empty() {
            return f.write_str("none, safe to apply unattended");
        }
        for (i, hazard) in self.hazards.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} ({})", hazard, hazard.describe())?;
        }
        if let Some(online) = &self.online {
            write!(f, "; {online}")?;
        } else if self.is_multi_phase() {
            write!(f, "; {} transactions", self.phases.len())?;
        }
        Ok(())
    }
}

/// A finding the planner will not fix, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
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

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.table)?;
        if let Some(column) = &self.column {
            write!(f, ".{column}")?;
        }
        write!(f, " ({}): {}", self.kind, self.reason)
    }
}
