//! Remediation planning (DESIGN D5): from a tenant's drift to an ordered, deterministic
//! plan of quoted DDL steps, each with its lock and hazards, plus the findings it refuses
//! to fix and why.

mod catalog;
mod planner;
mod policy;
mod rebuild;
mod render;
mod step;
pub mod types;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use catalog::{TypeCatalog, type_names};
pub use planner::plan_tenant;
pub use policy::{Remediation, Selection};
pub use step::{Action, Hazard, LockLevel, PlanStep, Refusal};

use crate::digest::digest_hex;
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
        }
        let hash = digest_hex(text.as_bytes());
        Self {
            tenant: tenant.to_owned(),
            dialect,
            steps,
            refusals,
            hash,
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
}

#[cfg(test)]
mod tests;
