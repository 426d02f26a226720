//! Settling audit rows an interrupted apply left `pending` (MySQL writes the row before its
//! DDL, which commits implicitly; a PostgreSQL multi-transaction apply whose next
//! transaction can no longer run): on the next run the row is judged against the live
//! schema and becomes `applied`, `failed` or `unknown`, with the evidence.

use std::fmt;

use contract_core::{DriftKind, Finding, TenantReport};
use serde::{Deserialize, Serialize};

/// What a reconciled audit row turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReconcileOutcome {
    /// Every finding the plan fixed is gone: its statements took effect.
    Applied,
    /// Every finding the plan fixed is still there: nothing it planned is visible.
    Failed,
    /// Some are gone, some are not, or the column or table they were on is gone (or the row
    /// records none): check the tenant by hand.
    Unknown,
}

impl ReconcileOutcome {
    /// The status written to the audit row (`applied`, `failed`, `unknown`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            ReconcileOutcome::Applied => "applied",
            ReconcileOutcome::Failed => "failed",
            ReconcileOutcome::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ReconcileOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One audit row that was `pending` and has been settled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReconciledAudit {
    /// The audit row.
    pub audit_id: String,
    /// The tenant.
    pub tenant: String,
    /// The plan the interrupted apply ran.
    pub plan_hash: String,
    /// What it turned out to be.
    pub outcome: ReconcileOutcome,
    /// Why: which of the findings it fixed are gone and which are still there.
    pub evidence: String,
}

impl fmt::Display for ReconciledAudit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: audit row {} (plan {}) was pending, now {}: {}",
            self.tenant,
            self.audit_id,
            contract_core::plan::short_hash(&self.plan_hash),
            self.outcome,
            self.evidence
        )
    }
}

/// Judges `tenant`'s pending row against its live schema now: `drift_before` is the row's
/// JSON list of the findings its plan fixed (one that cannot be read is judged on none,
/// `unknown`). The callers hold what keeps an apply from running meanwhile (MySQL: the
/// tenant's lock; PostgreSQL: a transaction that failed and will not run again).
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) async fn judge_live<DB: crate::backend::Backend>(
    pool: &sqlx::Pool<DB>,
    tenant: &str,
    drift_before: &str,
    contracts: &crate::check::ContractSet<DB>,
) -> crate::error::Result<(ReconcileOutcome, String)> {
    let snap = crate::check::snapshot(pool, &[tenant.to_owned()], contracts).await?;
    let now = crate::check::check_tenant(tenant, contracts, &snap);
    let drift_before: Vec<Finding> = serde_json::from_str(drift_before).unwrap_or_default();
    let reads = |f: &Finding| {
        contracts.entries().iter().any(|e| {
            let c = &e.contract;
            DB::DIALECT.same_table(&c.table, &f.table)
                && f.column
                    .as_ref()
                    .is_none_or(|column| c.columns.iter().any(|k| &k.name == column))
        })
    };
    if let Some(evidence) = not_read(&drift_before, reads) {
        return Ok((ReconcileOutcome::Unknown, evidence));
    }
    Ok(judge(&drift_before, &now))
}

/// Why a pending row cannot be judged when the contracts running now do not read what it
/// fixed (`reads`): another version of the consumer wrote it, or another service sharing
/// the audit table. Their check shows no drift there whether the fix ran or not, so the
/// row would be judged applied for a column that was never added.
#[cfg_attr(not(any(feature = "postgres", feature = "mysql")), allow(dead_code))]
fn not_read(drift_before: &[Finding], reads: impl Fn(&Finding) -> bool) -> Option<String> {
    let unread: Vec<String> = drift_before
        .iter()
        .filter(|f| !reads(f))
        .map(ToString::to_string)
        .collect();
    (!unread.is_empty()).then(|| {
        format!(
            "the contracts running now do not read what it fixed ({}): check the tenant by hand",
            unread.join("; ")
        )
    })
}

/// Judges a pending row from the findings its plan fixed (`drift_before`) and the tenant's
/// live state now.
#[cfg_attr(not(any(feature = "postgres", feature = "mysql")), allow(dead_code))]
fn judge(drift_before: &[Finding], now: &TenantReport) -> (ReconcileOutcome, String) {
    if drift_before.is_empty() {
        return (
            ReconcileOutcome::Unknown,
            "the row records no finding to compare with the live schema".into(),
        );
    }
    let list = |findings: &[&Finding]| {
        findings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    };
    // A finding that is no longer shown because its column or table is gone now was not
    // fixed: nothing can be said of it.
    let vanished = |f: &Finding| {
        now.findings.iter().any(|n| {
            n.schema == f.schema
                && n.table == f.table
                && n.kind != f.kind
                && match n.kind {
                    DriftKind::MissingTable => true,
                    DriftKind::MissingColumn => n.column.is_some() && n.column == f.column,
                    _ => false,
                }
        })
    };
    let lost: Vec<&Finding> = drift_before.iter().filter(|f| vanished(f)).collect();
    if !lost.is_empty() {
        return (
            ReconcileOutcome::Unknown,
            format!(
                "what it fixed is on a column or table no longer there ({}): check the tenant by hand",
                list(&lost)
            ),
        );
    }
    let still = |f: &Finding| {
        now.findings.iter().any(|n| {
            n.table == f.table && n.column == f.column && n.kind == f.kind && n.schema == f.schema
        })
    };
    let (present, gone): (Vec<&Finding>, Vec<&Finding>) =
        drift_before.iter().partition(|f| still(f));
    if present.is_empty() {
        (
            ReconcileOutcome::Applied,
            format!(
                "the live schema no longer shows the drift it fixed ({})",
                list(&gone)
            ),
        )
    } else if gone.is_empty() {
        (
            ReconcileOutcome::Failed,
            format!("the drift it fixed is still there ({})", list(&present)),
        )
    } else {
        (
            ReconcileOutcome::Unknown,
            format!(
                "partly visible: gone ({}); still there ({})",
                list(&gone),
                list(&present)
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use contract_core::Severity;

    use super::*;

    // `Finding` is `#[non_exhaustive]`: built from its stable JSON shape, as a user would.
    fn finding(column: &str) -> Finding {
        serde_json::from_value(serde_json::json!({
            "tenant": "t", "schema": "t", "table": "events", "column": column,
            "kind": DriftKind::MissingColumn, "severity": Severity::Breaks,
            "expected": "i64", "actual": "absent", "contract": "Event",
        }))
        .expect("finding")
    }

    fn now(findings: Vec<Finding>) -> TenantReport {
        TenantReport::checked("t", findings)
    }

    #[test]
    fn a_finding_the_running_contracts_do_not_read_cannot_be_judged() {
        let fixed = [finding("a"), finding("b")];
        assert_eq!(not_read(&fixed, |_| true), None);
        let evidence = not_read(&fixed, |f| f.column.as_deref() == Some("a")).expect("unread");
        assert!(
            evidence.contains("do not read what it fixed (t.events: missing column b"),
            "{evidence}"
        );
    }

    #[test]
    fn judge_says_applied_failed_or_unknown_from_the_findings_it_fixed() {
        let fixed = [finding("a"), finding("b")];
        assert_eq!(judge(&fixed, &now(vec![])).0, ReconcileOutcome::Applied);
        assert_eq!(
            judge(&fixed, &now(fixed.to_vec())).0,
            ReconcileOutcome::Failed
        );
        let (outcome, evidence) = judge(&fixed, &now(vec![finding("b")]));
        assert_eq!(outcome, ReconcileOutcome::Unknown);
        assert!(
            evidence.contains("still there (t.events: missing column b")
                && evidence.contains("gone (t.events: missing column a"),
            "{evidence}"
        );
        // Drift the plan did not fix plays no part.
        assert_eq!(
            judge(&fixed, &now(vec![finding("c")])).0,
            ReconcileOutcome::Applied
        );
        assert_eq!(judge(&[], &now(vec![])).0, ReconcileOutcome::Unknown);
    }

    fn on(column: Option<&str>, kind: DriftKind) -> Finding {
        let mut f = finding(column.unwrap_or_default());
        f.column = column.map(str::to_owned);
        f.kind = kind;
        f
    }

    #[test]
    fn drift_on_a_column_or_table_that_is_gone_now_is_not_called_applied() {
        let fixed = [on(Some("user_id"), DriftKind::Nullability)];
        for gone in [
            on(Some("user_id"), DriftKind::MissingColumn),
            on(None, DriftKind::MissingTable),
        ] {
            let (outcome, evidence) = judge(&fixed, &now(vec![gone.clone()]));
            assert_eq!(outcome, ReconcileOutcome::Unknown, "{gone}: {evidence}");
            assert!(evidence.contains("no longer there"), "{evidence}");
        }
        // Another column missing says nothing about this one.
        assert_eq!(
            judge(
                &fixed,
                &now(vec![on(Some("note"), DriftKind::MissingColumn)])
            )
            .0,
            ReconcileOutcome::Applied
        );
    }
}
