//! Online type changes in a plan (PostgreSQL): a rewrite of a big table becomes a step the
//! online procedure runs (shadow column, sync trigger, batched backfill, verification,
//! short swap) instead of one `ALTER … TYPE … USING` under `ACCESS EXCLUSIVE`.
//!
//! The planner writes every rewrite the plain way; the caller, who knows the table's size
//! (`pg_class.reltuples`), turns the steps above its threshold online with
//! [`TenantPlan::with_online`]. The plan hash covers the choice (and the new type), not
//! the estimate, so an approval survives statistics moving while the backfill runs.

use serde::{Deserialize, Serialize};
use std::fmt;

use super::{Action, Hazard, LockLevel, Phase, PhaseKind, PlanStep, Refusal, TenantPlan};
use crate::ident::Dialect;

/// What an online type change needs, and why it was chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OnlineChange {
    /// The table's schema.
    pub schema: String,
    /// The column as it is live.
    pub column: String,
    /// The new type as DDL writes it (`int8`); the cast is `column::new_type`.
    pub new_type: String,
    /// The table's row estimate when planned (`pg_class.reltuples`).
    pub rows_estimate: u64,
    /// The threshold it is at or above.
    pub threshold_rows: u64,
}

/// `online: about 2000000 rows (pg_class.reltuples, threshold 1000000): …`.
impl fmt::Display for OnlineChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "online: about {} rows (pg_class.reltuples, threshold {}): shadow column, sync trigger, batched backfill, verify, short swap to {}",
            self.rows_estimate, self.threshold_rows, self.new_type
        )
    }
}

/// The phases of every online type change.
pub const ONLINE_PHASES: [Phase; 4] = [
    Phase::new(PhaseKind::Expand, LockLevel::AccessExclusiveBrief, 0),
    Phase::new(PhaseKind::Backfill, LockLevel::RowExclusive, 0),
    Phase::new(PhaseKind::Verify, LockLevel::ShareUpdateExclusive, 0),
    Phase::new(PhaseKind::Swap, LockLevel::AccessExclusiveBrief, 0),
];

impl PlanStep {
    /// `(live column, new type)` when the step is a PostgreSQL rewrite the online
    /// procedure can do: `ALTER TABLE … ALTER COLUMN "c" TYPE t USING "c"::t` (then
    /// `ANALYZE`), nothing else in the step.
    #[must_use]
    pub fn online_candidate(&self) -> Option<(String, String)> {
        if self.action != Action::ChangeType
            || !self.hazards.contains(&Hazard::TableRewrite)
            || self.online.is_some()
        {
            return None;
        }
        let alter = self.statements.first()?;
        let (head, using) = alter.rsplit_once(" USING ")?;
        let (quoted, new_type) = using.rsplit_once("::")?;
        let column = unquote(quoted)?;
        let written = format!(" ALTER COLUMN {quoted} TYPE {new_type}");
        let rest_is_analyze = self.statements[1..]
            .iter()
            .all(|s| s.starts_with("ANALYZE "));
        (head.starts_with("ALTER TABLE ")
            && head.ends_with(&written)
            && Dialect::Postgres.quote(&column).ok()?.as_str() == quoted
            && rest_is_analyze)
            .then(|| (column, new_type.to_owned()))
    }
}

/// `"a""b"` → `a"b`; `None` for anything but one quoted identifier.
fn unquote(quoted: &str) -> Option<String> {
    let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
    let name = inner.replace("\"\"", "\"");
    (name.replace('"', "\"\"") == inner).then_some(name)
}

impl TenantPlan {
    /// This plan with step `index` (an [`PlanStep::online_candidate`] of a PostgreSQL
    /// plan) turned into an online type change: no statements of its own, the
    /// [`ONLINE_PHASES`], the `backfill` hazard instead of the rewrite's, and a new hash
    /// and shape. Any other step, or another dialect, leaves the plan as it is.
    #[must_use]
    pub fn with_online(
        self,
        index: usize,
        schema: &str,
        rows_estimate: u64,
        threshold_rows: u64,
    ) -> Self {
        let candidate = self.steps.get(index).and_then(PlanStep::online_candidate);
        let (Some((column, new_type)), Dialect::Postgres) = (candidate, self.dialect) else {
            return self;
        };
        // A rename of the column in the same plan runs last, by its live name: the swap
        // would have to follow it. Such a change stays plain.
        let table = &self.steps[index].table;
        if self.steps.iter().any(|s| {
            s.action == Action::RenameColumn
                && &s.table == table
                && s.statements
                    .iter()
                    .any(|st| st.contains(&format!("\"{column}\"")))
        }) {
            return self;
        }
        let TenantPlan {
            tenant,
            dialect,
            mut steps,
            refusals,
            ..
        } = self;
        let step = &mut steps[index];
        step.statements.clear();
        step.lock = LockLevel::AccessExclusiveBrief;
        step.hazards = vec![Hazard::Backfill];
        step.phases = ONLINE_PHASES.to_vec();
        step.online = Some(OnlineChange {
            schema: schema.to_owned(),
            column,
            new_type,
            rows_estimate,
            threshold_rows,
        });
        TenantPlan::new(&tenant, dialect, steps, refusals)
    }
}

impl TenantPlan {
    /// This plan without step `index` (an [`PlanStep::online_candidate`] of a table at or
    /// above `threshold_rows`) and with a refusal instead that gives `reason`, the online
    /// procedure's (`is part of the primary key (…)`): the rewrite would hold `ACCESS
    /// EXCLUSIVE` for the whole table, and the procedure would refuse it on every pass.
    /// The plan's other steps stay; any other step leaves the plan as it is.
    #[must_use]
    pub fn refuse_online(self, index: usize, threshold_rows: u64, reason: &str) -> Self {
        if self
            .steps
            .get(index)
            .and_then(PlanStep::online_candidate)
            .is_none()
        {
            return self;
        }
        let TenantPlan {
            tenant,
            dialect,
            mut steps,
            mut refusals,
            ..
        } = self;
        let step = steps.remove(index);
        refusals.push(Refusal {
            table: step.table,
            column: step.column,
            kind: step.fixes,
            reason: format!(
                "a rewrite of a table of {threshold_rows} rows or more runs online, and the online type change refuses this column: it {reason}; change it by hand in a maintenance window, or set `online_threshold_rows` above the table's size to plan the plain rewrite"
            ),
        });
        TenantPlan::new(&tenant, dialect, steps, refusals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::DriftKind;

    fn rewrite(statements: &[&str]) -> PlanStep {
        let mut s: PlanStep = serde_json::from_value(serde_json::json!({
            "table": "events", "column": "user_id", "action": "change_type",
            "fixes": "type_mismatch", "statements": statements,
            "lock": "access_exclusive", "hazards": ["table_rewrite", "access_exclusive_lock"],
        }))
        .expect("step");
        s.fixes = DriftKind::TypeMismatch;
        s
    }

    const ALTER: &str =
        r#"ALTER TABLE "tenant_1"."events" ALTER COLUMN "user_id" TYPE int8 USING "user_id"::int8"#;

    #[test]
    fn a_plain_rewrite_goes_online_with_its_phases_and_a_new_hash() {
        let step = rewrite(&[ALTER, r#"ANALYZE "tenant_1"."events" ("user_id")"#]);
        assert_eq!(
            step.online_candidate(),
            Some(("user_id".to_owned(), "int8".to_owned()))
        );
        let plain = TenantPlan::new("tenant_1", Dialect::Postgres, vec![step], Vec::new());
        let online = plain
            .clone()
            .with_online(0, "tenant_1", 2_000_000, 1_000_000);
        assert_ne!(online.hash, plain.hash);
        assert_ne!(online.shape, plain.shape);
        assert_eq!(online.hazards(), [Hazard::Backfill]);
        assert_eq!(online.statements().count(), 0);
        // The estimate is not part of what is approved.
        assert_eq!(
            plain.clone().with_online(0, "tenant_1", 3_000_000, 10).hash,
            online.hash
        );
        let text = online.to_string();
        for part in [
            "backfill (copies the column in batches",
            "about 2000000 rows (pg_class.reltuples, threshold 1000000)",
            "phase 1: expand",
            "phase 2: backfill (ROW EXCLUSIVE",
            "phase 3: verify",
            "phase 4: swap",
        ] {
            assert!(text.contains(part), "{part} missing from:\n{text}");
        }
        let json = serde_json::to_value(&online).expect("json");
        assert_eq!(json["steps"][0]["hazards"], serde_json::json!(["backfill"]));
        assert_eq!(json["steps"][0]["phases"][1]["kind"], "backfill");
        assert_eq!(json["steps"][0]["online"]["new_type"], "int8");
        let back: TenantPlan = serde_json::from_value(json).expect("round trip");
        assert_eq!(back, online);
    }

    /// A rewrite below the threshold is planned as before the online procedure existed:
    /// its hash is SHA-256 over the dialect, the tenant and the statements, so approvals
    /// of small tables' plans stay valid. (Computed independently:
    /// `printf 'Postgres\x1etenant_1\x1e<ALTER>\x1e<ANALYZE>\x1e' | sha256sum`.)
    #[test]
    fn a_plain_rewrite_keeps_the_hash_it_had_before_online_plans() {
        let step = rewrite(&[ALTER, r#"ANALYZE "tenant_1"."events" ("user_id")"#]);
        let plain = TenantPlan::new("tenant_1", Dialect::Postgres, vec![step], Vec::new());
        assert_eq!(
            plain.hash,
            "18e9da034bb9b7cb3a5f64dcf23f12dd85dbf69efd4f2e1021550ec1b02f0a94"
        );
    }

    #[test]
    fn a_refused_online_candidate_becomes_a_refusal_with_the_reason() {
        let mut step = rewrite(&[ALTER, r#"ANALYZE "tenant_1"."events" ("user_id")"#]);
        step.column = Some("user_id".into());
        let plain = TenantPlan::new("tenant_1", Dialect::Postgres, vec![step], Vec::new());
        let refused = plain
            .clone()
            .refuse_online(0, 1_000_000, "is part of the primary key");
        assert!(refused.steps.is_empty(), "{refused}");
        assert_ne!(refused.hash, plain.hash);
        assert_eq!(refused.refusals.len(), 1);
        assert_eq!(
            refused.refusals[0].to_string(),
            "events.user_id (type_mismatch): a rewrite of a table of 1000000 rows or more runs online, and the online type change refuses this column: it is part of the primary key; change it by hand in a maintenance window, or set `online_threshold_rows` above the table's size to plan the plain rewrite"
        );
        // Anything but a candidate is left alone.
        assert_eq!(refused.clone().refuse_online(0, 1, "x"), refused);
        let online = plain.with_online(0, "tenant_1", 10, 1);
        assert_eq!(online.clone().refuse_online(0, 1, "x"), online);
    }

    #[test]
    fn only_plain_casts_of_one_column_are_candidates() {
        let with_timezone = rewrite(&["SET LOCAL TimeZone = 'UTC'", ALTER]);
        assert_eq!(with_timezone.online_candidate(), None);
        let mut metadata = rewrite(&[ALTER]);
        metadata.hazards.clear();
        assert_eq!(metadata.online_candidate(), None);
        let other_column = rewrite(&[
            r#"ALTER TABLE "tenant_1"."events" ALTER COLUMN "a" TYPE int8 USING "b"::int8"#,
        ]);
        assert_eq!(other_column.online_candidate(), None);
        let plan = TenantPlan::new("t", Dialect::MySql, vec![rewrite(&[ALTER])], Vec::new());
        assert_eq!(plan.clone().with_online(0, "t", 10, 1), plan);
    }
}
