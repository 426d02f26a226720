//! Remediation planning (`ARCHITECTURE.md` D5): from a tenant's drift to an ordered, deterministic
//! plan of quoted DDL steps, each with its lock and hazards, plus the findings it refuses
//! to fix and why.

mod catalog;
mod merge;
mod online;
mod order;
mod phase;
mod planner;
mod policy;
mod rebuild;
mod render;
mod step;
pub mod types;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

pub use catalog::{TypeCatalog, type_names};
pub use online::{ONLINE_PHASES, OnlineChange};
pub use phase::{Phase, PhaseKind};
pub use planner::plan_tenant;
pub use policy::{Remediation, Selection};
pub use step::{Action, Hazard, LockLevel, PlanStep, Refusal};

use crate::digest::{FieldDigest, digest_hex};
use crate::drift::Finding;
use crate::ident::Dialect;
use crate::live::LiveTable;
use crate::model::TableContract;

/// The first 12 hex digits of a plan hash, for display.
#[must_use]
pub fn short_hash(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// What the planner needs about one contracted table of a tenant.
#[derive(Debug, Clone, Copy)]
pub struct TableInput<'a> {
    /// The contract.
    pub contract: &'a TableContract,
    /// The live table (`None`: missing).
    pub live: Option<&'a LiveTable>,
    /// The findings of the diff for this table.
    pub findings: &'a [Finding],
    /// Column name → the SQL type sqlx maps the field to (for example `INT8`).
    pub expected_types: &'a BTreeMap<String, String>,
}

/// The plan for one tenant: steps in order, refusals, and the hash that approves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TenantPlan {
    /// The tenant.
    pub tenant: String,
    /// The dialect the SQL is written in.
    pub dialect: Dialect,
    /// Steps, in execution order.
    pub steps: Vec<PlanStep>,
    /// Findings the planner will not fix.
    pub refusals: Vec<Refusal>,
    /// SHA-256 over the dialect, tenant and every statement: the same inputs give the same
    /// hash on every run and machine. Approve a plan with exactly this value.
    pub hash: String,
    /// The change shape: SHA-256 over the dialect and each step (action, lock, hazards and
    /// statements) with the tenant's own schema replaced by a placeholder. Tenants that
    /// drifted the same way share it, so one approval of the shape covers all of them.
    #[serde(default)]
    pub shape: String,
}

impl TenantPlan {
    pub(crate) fn new(
        tenant: &str,
        dialect: Dialect,
        steps: Vec<PlanStep>,
        refusals: Vec<Refusal>,
    ) -> Self {
        let mut text = format!("{dialect:?}\u{1e}{tenant}\u{1e}");
        for step in &steps {
            for statement in &step.statements {
                text.push_str(statement);
                text.push('\u{1e}');
            }
            // The transaction boundaries are part of what is approved.
            for phase in &step.phases {
                text.push_str(&format!(
                    "\u{1f}phase {} {} {}\u{1e}",
                    phase.kind, phase.lock, phase.statements
                ));
            }
            // So is an online type change (the rows estimate is not: it moves).
            if let Some(online) = &step.online {
                text.push_str(&format!(
                    "\u{1f}online {} {} {}\u{1e}",
                    step.table, online.column, online.new_type
                ));
            }
        }
        let hash = digest_hex(text.as_bytes());
        let shape = shape_of(tenant, dialect, &steps);
        Self {
            tenant: tenant.to_owned(),
            dialect,
            steps,
            refusals,
            hash,
            shape,
        }
    }

    /// `true` when there is nothing to do and nothing refused.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty() && self.refusals.is_empty()
    }

    /// `true` when some step has a hazard (it waits for an approval of [`TenantPlan::hash`]).
    #[must_use]
    pub fn needs_approval(&self) -> bool {
        self.steps.iter().any(|s| !s.is_safe())
    }

    /// Every statement, in order.
    pub fn statements(&self) -> impl Iterator<Item = &str> {
        self.steps
            .iter()
            .flat_map(|s| s.statements.iter().map(String::as_str))
    }

    /// The distinct hazards of all steps, sorted.
    #[must_use]
    pub fn hazards(&self) -> Vec<Hazard> {
        let mut hazards: Vec<Hazard> = self
            .steps
            .iter()
            .flat_map(|s| s.hazards.iter().copied())
            .collect();
        hazards.sort();
        hazards.dedup();
        hazards
    }

    /// The first 12 hex digits of the hash, for display.
    #[must_use]
    pub fn short_hash(&self) -> &str {
        short_hash(&self.hash)
    }

    /// The strongest lock any step takes (`None` when there is no step).
    #[must_use]
    pub fn strongest_lock(&self) -> Option<LockLevel> {
        self.steps.iter().map(|s| s.lock).max()
    }
}

/// The placeholder that stands for the tenant's schema in a change shape.
pub const SHAPE_TENANT: &str = "{tenant}";

/// The change shape of `steps` planned for `tenant` (see [`TenantPlan::shape`]).
fn shape_of(tenant: &str, dialect: Dialect, steps: &[PlanStep]) -> String {
    // Tenant names are plain identifiers, so the quoted qualifier is exact text.
    let qualifier = dialect.quote(tenant).map(|q| format!("{q}.")).ok();
    let placeholder = format!("{SHAPE_TENANT}.");
    let mut digest = FieldDigest::new();
    digest.field(dialect.to_string());
    for step in steps {
        digest
            .field(step.action.as_str())
            .field(step.lock.as_str())
            .field(&step.table)
            .optional(step.column.as_deref());
        for hazard in &step.hazards {
            digest.field(hazard.as_str());
        }
        for phase in &step.phases {
            digest
                .field(phase.kind.as_str())
                .field(phase.lock.as_str())
                .field(phase.statements.to_string());
        }
        if let Some(online) = &step.online {
            digest
                .field("online")
                .field(&online.column)
                .field(&online.new_type);
        }
        for statement in &step.statements {
            match &qualifier {
                Some(q) => digest.field(statement.replace(q.as_str(), &placeholder)),
                None => digest.field(statement),
            };
        }
    }
    digest.finish_hex()
}

/// A plan as a person reads it: hash, shape, each step with its lock and hazards in words,
/// the statements, and what is refused.
impl fmt::Display for TenantPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "plan {} for tenant {} ({}; shape {})",
            self.hash,
            self.tenant,
            self.dialect,
            short_hash(&self.shape)
        )?;
        if self.steps.is_empty() {
            writeln!(f, "  nothing to apply")?;
        }
        for (i, step) in self.steps.iter().enumerate() {
            writeln!(f, "  {}. {step}", i + 1)?;
            let groups = step.phased();
            let numbered = groups.len() > 1;
            for (n, (phase, statements)) in groups.into_iter().enumerate() {
                match (numbered, phase) {
                    // An online change's backfill is many transactions: number phases.
                    (true, Some(phase)) if step.online.is_some() => {
                        writeln!(f, "     phase {}: {phase}", n + 1)?;
                    }
                    (true, Some(phase)) => writeln!(f, "     transaction {}: {phase}", n + 1)?,
                    _ => {}
                }
                for statement in statements {
                    writeln!(f, "       {statement}")?;
                }
            }
        }
        for refusal in &self.refusals {
            writeln!(f, "  refused: {refusal}")?;
        }
        if self.needs_approval() {
            write!(
                f,
                "  waits for approval of plan {} (or of shape {})",
                self.hash, self.shape
            )
        } else {
            write!(f, "  safe to apply unattended")
        }
    }
}

#[cfg(test)]
mod regressions;
#[cfg(test)]
mod tests;
