//! `contract plans`: the pending plans of every drifted tenant, grouped by change shape,
//! so one decision (and one `contract approve --shape`) covers every tenant that drifted
//! the same way.

use std::collections::BTreeMap;
use std::fmt;

use contract_core::Dialect;
use contract_core::plan::{Hazard, LockLevel, PlanStep, Refusal, SHAPE_TENANT, TenantPlan};
use serde::Serialize;
use sqlx::Pool;

use super::render;
use crate::control::{ControlPlane, ControlStore};
use crate::error::Result;

/// What `contract plans` prints.
#[derive(Debug, Serialize)]
pub(crate) struct PlansReport {
    /// One group per change shape, the most tenants first.
    pub shapes: Vec<ShapeGroup>,
}

/// The tenants whose pending plan has one change shape.
#[derive(Debug, Serialize)]
pub(crate) struct ShapeGroup {
    /// The full change shape (what `contract approve --shape` takes).
    pub shape: String,
    pub dialect: Dialect,
    pub tenant_count: usize,
    /// Each tenant with its own full plan hash (what `contract approve` takes).
    pub tenants: Vec<TenantPlanLine>,
    /// `true` when a step has a hazard: it is applied only once approved.
    pub needs_approval: bool,
    /// The statements, with `{tenant}` standing for each tenant's schema.
    pub statements: Vec<String>,
    /// The steps, as planned for the first tenant.
    pub steps: Vec<PlanStep>,
    pub hazards: Vec<Worded<Hazard>>,
    pub locks: Vec<Worded<LockLevel>>,
    /// Findings the planner will not fix, as planned for the first tenant.
    pub refusals: Vec<Refusal>,
    /// The rows the rewriting steps would rewrite, from the catalog's estimates.
    pub estimated_rows: RowEstimate,
}

/// One tenant of a group.
#[derive(Debug, Serialize)]
pub(crate) struct TenantPlanLine {
    pub tenant: String,
    pub plan_hash: String,
    pub waiting: Option<String>,
}

/// A hazard or lock with what it means.
#[derive(Debug, Serialize)]
pub(crate) struct Worded<T> {
    pub name: T,
    pub meaning: &'static str,
}

/// Rows a group's rewrites touch, where the catalog says.
#[derive(Debug, Default, Serialize)]
pub(crate) struct RowEstimate {
    /// The sum over the tables whose estimate is known; `None` when none is.
    pub rows: Option<i64>,
    /// Tables rewritten (over every tenant of the group).
    pub tables: usize,
    /// Tables without an estimate (never analysed, or a backend without one).
    pub unknown: usize,
    /// Where the numbers come from.
    pub source: &'static str,
}

/// `(tenant, table)` of every step that rewrites or rebuilds a table, per group.
pub(crate) fn rewritten_tables(group: &ShapeGroup) -> Vec<(String, String)> {
    let tables: Vec<&str> = group
        .steps
        .iter()
        .filter(|s| {
            s.hazards
                .iter()
                .any(|h| matches!(h, Hazard::TableRewrite | Hazard::TableRebuild))
        })
        .map(|s| s.table.as_str())
        .collect();
    group
        .tenants
        .iter()
        .flat_map(|t| {
            tables
                .iter()
                .map(|table| (t.tenant.clone(), (*table).to_owned()))
        })
        .collect()
}

/// Groups the control plane's pending plans by shape (estimates are filled in later).
pub(crate) async fn plans<DB: ControlStore>(
    pool: &Pool<DB>,
    plane: &ControlPlane,
) -> Result<PlansReport> {
    let mut by_shape: BTreeMap<String, Vec<(TenantPlan, Option<String>)>> = BTreeMap::new();
    for status in plane.tenants(pool).await? {
        if let Some(plan) = status.plan.filter(|p| !p.is_empty()) {
            by_shape
                .entry(plan.shape.clone())
                .or_default()
                .push((plan, status.waiting));
        }
    }
    let mut shapes: Vec<ShapeGroup> = by_shape
        .into_iter()
        .filter_map(|(shape, plans)| group(shape, plans))
        .collect();
    shapes.sort_by(|a, b| {
        b.tenant_count
            .cmp(&a.tenant_count)
            .then(a.shape.cmp(&b.shape))
    });
    Ok(PlansReport { shapes })
}

fn group(shape: String, plans: Vec<(TenantPlan, Option<String>)>) -> Option<ShapeGroup> {
    let (first, _) = plans.first()?;
    let qualifier = first
        .dialect
        .quote(&first.tenant)
        .ok()
        .map(|q| format!("{q}."));
    let statements = first
        .statements()
        .map(|s| match &qualifier {
            Some(q) => s.replace(q.as_str(), &format!("{SHAPE_TENANT}.")),
            None => s.to_owned(),
        })
        .collect();
    let mut locks: Vec<LockLevel> = first.steps.iter().map(|s| s.lock).collect();
    locks.sort();
    locks.dedup();
    Some(ShapeGroup {
        shape,
        dialect: first.dialect,
        tenant_count: plans.len(),
        needs_approval: first.needs_approval(),
        statements,
        steps: first.steps.clone(),
        hazards: first
            .hazards()
            .into_iter()
            .map(|h| Worded {
                name: h,
                meaning: h.describe(),
            })
            .collect(),
        locks: locks
            .into_iter()
            .rev()
            .map(|l| Worded {
                name: l,
                meaning: l.describe(),
            })
            .collect(),
        refusals: first.refusals.clone(),
        estimated_rows: RowEstimate::default(),
        tenants: plans
            .into_iter()
            .map(|(plan, waiting)| TenantPlanLine {
                tenant: plan.tenant,
                plan_hash: plan.hash,
                waiting,
            })
            .collect(),
    })
}

impl fmt::Display for PlansReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.shapes.is_empty() {
            return write!(
                f,
                "no pending plan: every checked tenant complies or has nothing to apply"
            );
        }
        for (i, group) in self.shapes.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{group}")?;
        }
        Ok(())
    }
}

impl fmt::Display for ShapeGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.tenants.iter().map(|t| t.tenant.as_str()).collect();
        writeln!(
            f,
            "shape {} ({}): {} tenants",
            self.shape, self.dialect, self.tenant_count
        )?;
        writeln!(f, "  tenants: {}", render::list(&names, 8))?;
        writeln!(f, "  steps:")?;
        for (i, step) in self.steps.iter().enumerate() {
            writeln!(f, "    {}. {step}", i + 1)?;
        }
        writeln!(f, "  statements ({SHAPE_TENANT} is each tenant's schema):")?;
        for statement in &self.statements {
            writeln!(f, "    {statement}")?;
        }
        if self.hazards.is_empty() {
            writeln!(f, "  hazards: none")?;
        }
        for hazard in &self.hazards {
            writeln!(f, "  hazard {}: {}", hazard.name, hazard.meaning)?;
        }
        for lock in &self.locks {
            writeln!(f, "  lock {}: {}", lock.name, lock.meaning)?;
        }
        for refusal in &self.refusals {
            writeln!(f, "  refused: {refusal}")?;
        }
        writeln!(f, "  rows to rewrite: {}", self.estimated_rows)?;
        if let Some(waiting) = self.tenants.iter().find_map(|t| t.waiting.as_deref()) {
            writeln!(f, "  waiting: {waiting}")?;
        }
        if self.needs_approval {
            writeln!(
                f,
                "  approve every tenant of this shape: contract approve --shape {}",
                self.shape
            )?;
            for tenant in self.tenants.iter().take(3) {
                writeln!(
                    f,
                    "  or one tenant ({}): contract approve {}",
                    tenant.tenant, tenant.plan_hash
                )?;
            }
        } else {
            writeln!(
                f,
                "  safe: applied unattended under the SafeOnly policy (or approve it)"
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for RowEstimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tables == 0 {
            return f.write_str("none (no step rewrites a table)");
        }
        match self.rows {
            Some(rows) => write!(
                f,
                "about {rows} rows in {} tables ({})",
                self.tables - self.unknown,
                self.source
            )?,
            None => write!(f, "unknown for {} tables ({})", self.tables, self.source)?,
        }
        if self.rows.is_some() && self.unknown > 0 {
            write!(f, "; unknown for {} more (never analysed)", self.unknown)?;
        }
        Ok(())
    }
}
