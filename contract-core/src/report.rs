//! The fleet report: per tenant a verdict and its findings, as stable JSON and as a table.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::drift::{Finding, Severity};
use crate::ident::Dialect;

/// A tenant's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Verdict {
    /// No finding at `at_risk` or worse.
    Compliant,
    /// At least one finding at `at_risk` or worse.
    Drifted,
    /// The tenant could not be introspected.
    Unreachable {
        /// What went wrong, and what to do.
        error: String,
    },
}

impl Verdict {
    /// The verdict for a list of findings.
    #[must_use]
    pub fn of(findings: &[Finding]) -> Self {
        if findings.iter().any(|f| f.severity >= Severity::AtRisk) {
            Verdict::Drifted
        } else {
            Verdict::Compliant
        }
    }

    /// `compliant`, `drifted` or `unreachable`.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Compliant => "compliant",
            Verdict::Drifted => "drifted",
            Verdict::Unreachable { .. } => "unreachable",
        }
    }
}

/// One tenant in a fleet report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TenantReport {
    /// The tenant.
    pub tenant: String,
    /// Its verdict.
    pub verdict: Verdict,
    /// Its findings, in contract order (info findings included).
    pub findings: Vec<Finding>,
    /// Messages waiting for it, where a backlog monitor counted them (guard reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u64>,
}

impl TenantReport {
    /// A checked tenant: its verdict follows from its findings.
    #[must_use]
    pub fn checked(tenant: impl Into<String>, findings: Vec<Finding>) -> Self {
        Self {
            tenant: tenant.into(),
            verdict: Verdict::of(&findings),
            findings,
            backlog: None,
        }
    }

    /// A tenant that could not be checked, with the reason.
    #[must_use]
    pub fn unreachable(tenant: impl Into<String>, error: impl Into<String>) -> Self {
        Self {
            tenant: tenant.into(),
            verdict: Verdict::Unreachable {
                error: error.into(),
            },
            findings: Vec::new(),
            backlog: None,
        }
    }
}

/// The result of checking every tenant against every contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FleetReport {
    /// The backend.
    pub dialect: Dialect,
    /// The contracts checked, as `Struct -> table`.
    pub contracts: Vec<String>,
    /// One entry per tenant, sorted by tenant name.
    pub tenants: Vec<TenantReport>,
    /// Fleet-level hints (for example a contracted table that exists in no tenant).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl FleetReport {
    /// A report over `tenants` (sorted here), with fleet-level notes derived from them.
    #[must_use]
    pub fn new(dialect: Dialect, contracts: Vec<String>, mut tenants: Vec<TenantReport>) -> Self {
        tenants.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        let mut report = Self {
            dialect,
            contracts,
            tenants,
            notes: Vec::new(),
        };
        report.notes = report.missing_everywhere();
        report
    }

    /// Contracts whose table is missing in every reachable tenant: almost always a wrong
    /// table name or tenant pattern rather than drift.
    fn missing_everywhere(&self) -> Vec<String> {
        let reachable: Vec<&TenantReport> = self
            .tenants
            .iter()
            .filter(|t| !matches!(t.verdict, Verdict::Unreachable { .. }))
            .collect();
        if reachable.is_empty() {
            return Vec::new();
        }
        let mut missing: Vec<(&str, &str)> = reachable[0]
            .findings
            .iter()
            .filter(|f| f.kind == crate::drift::DriftKind::MissingTable)
            .map(|f| (f.contract.as_str(), f.table.as_str()))
            .collect();
        missing.retain(|(contract, table)| {
            reachable.iter().all(|t| {
                t.findings.iter().any(|f| {
                    f.kind == crate::drift::DriftKind::MissingTable
                        && f.contract == *contract
                        && f.table == *table
                })
            })
        });
        missing
            .into_iter()
            .map(|(contract, table)| {
                format!(
                    "contract {contract}: table `{table}` exists in none of the {} tenants checked; check #[contract(table = \"...\")] \
                     (names are case-sensitive) and that the tenant source finds the right schemas/databases",
                    reachable.len()
                )
            })
            .collect()
    }

    /// Tenants with the given verdict status (`compliant`, `drifted`, `unreachable`).
    pub fn tenants_with<'a>(
        &'a self,
        status: &'a str,
    ) -> impl Iterator<Item = &'a TenantReport> + 'a {
        self.tenants
            .iter()
            .filter(move |t| t.verdict.as_str() == status)
    }

    /// Every finding of every tenant.
    pub fn findings(&self) -> impl Iterator<Item = &Finding> {
        self.tenants.iter().flat_map(|t| &t.findings)
    }

    /// `true` when every tenant is compliant.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.tenants.iter().all(|t| t.verdict == Verdict::Compliant)
    }

    /// The report as pretty JSON (stable field order).
    #[must_use]
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// A one-line summary: `45 compliant, 2 drifted, 0 unreachable of 47 tenants`.
    #[must_use]
    pub fn summary(&self) -> String {
        let count = |s| self.tenants_with(s).count();
        format!(
            "{} compliant, {} drifted, {} unreachable of {} tenants",
            count("compliant"),
            count("drifted"),
            count("unreachable"),
            self.tenants.len()
        )
    }
}

/// A readable table: one line per finding (compliant tenants summarised).
impl fmt::Display for FleetReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<20} {:<12} {:<8} {:<16} {:<32} EXPECTED -> ACTUAL",
            "TENANT", "VERDICT", "SEVERITY", "KIND", "WHERE"
        )?;
        for tenant in &self.tenants {
            if let Verdict::Unreachable { error } = &tenant.verdict {
                writeln!(f, "{:<20} {:<12} {error}", tenant.tenant, "unreachable")?;
            }
            for finding in &tenant.findings {
                let at = match &finding.column {
                    Some(c) => format!("{}.{c}", finding.table),
                    None => finding.table.clone(),
                };
                writeln!(
                    f,
                    "{:<20} {:<12} {:<8} {:<16} {:<32} {} -> {}",
                    tenant.tenant,
                    tenant.verdict.as_str(),
                    finding.severity.as_str(),
                    finding.kind.as_str(),
                    at,
                    finding.expected,
                    finding.actual
                )?;
            }
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        write!(f, "{}", self.summary())
    }
}
