//! `contract status`: each tenant's verdict, pauses (who, why, since when), backlog and
//! what its plan waits for; the contract versions of the running guards.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use sqlx::Pool;

use super::render::{self, rfc3339};
use crate::control::{ControlPlane, ControlStore, heartbeat_expiry};
use crate::error::Result;
use crate::guard::PauseInfo;

/// What `contract status` prints.
#[derive(Debug, Serialize)]
pub(crate) struct StatusReport {
    /// One entry per tenant, by name.
    pub tenants: Vec<TenantLine>,
    /// How many tenants per verdict.
    pub verdicts: BTreeMap<String, usize>,
    /// Operator and guard pauses in force.
    pub paused: usize,
    /// The contract versions registered by guard replicas.
    pub versions: Vec<VersionLine>,
    /// `true` when `--fail-on drift` would fail (a tenant drifted, unreachable or paused).
    pub unhealthy: bool,
}

/// One tenant.
#[derive(Debug, Serialize)]
pub(crate) struct TenantLine {
    pub tenant: String,
    /// `compliant`, `drifted`, `unreachable`, `retired`, `checking`; `unknown` for a
    /// tenant only an operator pause names.
    pub verdict: String,
    pub detail: Option<String>,
    pub pauses: Vec<PauseLine>,
    /// Why the pending plan is not applied yet.
    pub waiting: Option<String>,
    /// The pending plan's full hash (what `contract approve` takes).
    pub plan_hash: Option<String>,
    /// Its change shape (what `contract approve --shape` takes).
    pub shape: Option<String>,
    pub backlog: Option<i64>,
    #[serde(serialize_with = "rfc3339::option::serialize")]
    pub checked_at: Option<SystemTime>,
    pub location: Option<String>,
}

/// One pause.
#[derive(Debug, Serialize)]
pub(crate) struct PauseLine {
    /// `guard` or `operator`.
    pub kind: &'static str,
    /// `the guard` or the operator's name.
    pub by: String,
    pub queue: Option<String>,
    pub reason: String,
    #[serde(serialize_with = "rfc3339::serialize")]
    pub since: SystemTime,
}

impl From<&PauseInfo> for PauseLine {
    fn from(pause: &PauseInfo) -> Self {
        let (kind, by) = match &pause.paused_by {
            crate::guard::PausedBy::Guard => ("guard", "the guard".to_owned()),
            crate::guard::PausedBy::Operator(name) => ("operator", name.clone()),
        };
        Self {
            kind,
            by,
            queue: pause.queue.clone(),
            reason: pause.reason.clone(),
            since: pause.since,
        }
    }
}

/// One contract version in flight.
#[derive(Debug, Serialize)]
pub(crate) struct VersionLine {
    /// The full version digest.
    pub version: String,
    /// Replicas serving it whose heartbeat is recent.
    pub live_replicas: usize,
    /// Replicas registered with it, live or not.
    pub replicas: usize,
    /// `host/pid` of each.
    pub hosts: Vec<String>,
    /// The tables its contracts cover.
    pub tables: Vec<String>,
    #[serde(serialize_with = "rfc3339::serialize")]
    pub last_heartbeat: SystemTime,
}

/// Reads the control plane.
pub(crate) async fn status<DB: ControlStore>(
    pool: &Pool<DB>,
    plane: &ControlPlane,
) -> Result<StatusReport> {
    let tenants = plane.tenants(pool).await?;
    let pauses = plane.pauses(pool).await?;
    let replicas = plane.replicas(pool).await?;
    let mut lines: BTreeMap<String, TenantLine> = tenants
        .into_iter()
        .map(|t| {
            let line = TenantLine {
                tenant: t.tenant.clone(),
                verdict: t.verdict,
                detail: t.detail,
                pauses: Vec::new(),
                waiting: t.waiting,
                plan_hash: t.plan.as_ref().map(|p| p.hash.clone()),
                shape: t.plan.as_ref().map(|p| p.shape.clone()),
                backlog: t.backlog,
                checked_at: Some(t.checked_at),
                location: (!t.location.is_empty()).then_some(t.location),
            };
            (t.tenant, line)
        })
        .collect();
    for pause in &pauses {
        lines
            .entry(pause.tenant.clone())
            .or_insert_with(|| TenantLine {
                tenant: pause.tenant.clone(),
                verdict: "unknown".into(),
                detail: None,
                pauses: Vec::new(),
                waiting: None,
                plan_hash: None,
                shape: None,
                backlog: None,
                checked_at: None,
                location: None,
            })
            .pauses
            .push(PauseLine::from(pause));
    }
    let mut verdicts = BTreeMap::new();
    for line in lines.values() {
        *verdicts.entry(line.verdict.clone()).or_insert(0) += 1;
    }
    let unhealthy = !pauses.is_empty()
        || lines
            .values()
            .any(|l| l.verdict == "drifted" || l.verdict == "unreachable");
    let live_after = SystemTime::now()
        .checked_sub(heartbeat_expiry(Duration::from_secs(5)))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut versions: BTreeMap<String, VersionLine> = BTreeMap::new();
    for replica in replicas {
        let line = versions
            .entry(replica.version.clone())
            .or_insert_with(|| VersionLine {
                version: replica.version.clone(),
                live_replicas: 0,
                replicas: 0,
                hosts: Vec::new(),
                tables: replica.contracts.iter().map(|c| c.table.clone()).collect(),
                last_heartbeat: replica.heartbeat_at,
            });
        line.replicas += 1;
        if replica.heartbeat_at >= live_after {
            line.live_replicas += 1;
        }
        line.hosts.push(format!("{}/{}", replica.host, replica.pid));
        line.last_heartbeat = line.last_heartbeat.max(replica.heartbeat_at);
    }
    Ok(StatusReport {
        tenants: lines.into_values().collect(),
        verdicts,
        paused: pauses.len(),
        versions: versions.into_values().collect(),
        unhealthy,
    })
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tenants.is_empty() {
            writeln!(
                f,
                "no tenant recorded yet: no guard has finished a pass here"
            )?;
        }
        for line in &self.tenants {
            write!(f, "{line}")?;
        }
        let counts: Vec<String> = self
            .verdicts
            .iter()
            .map(|(verdict, n)| format!("{n} {verdict}"))
            .collect();
        writeln!(
            f,
            "\n{} tenants: {}; {} pauses",
            self.tenants.len(),
            if counts.is_empty() {
                "none".to_owned()
            } else {
                counts.join(", ")
            },
            self.paused
        )?;
        if self.versions.is_empty() {
            write!(f, "contract versions in flight: none (no guard registered)")?;
        } else {
            write!(f, "contract versions in flight:")?;
            for version in &self.versions {
                write!(
                    f,
                    "\n  {} on {} live of {} replicas ({}), tables {}; last heartbeat {}",
                    version.version,
                    version.live_replicas,
                    version.replicas,
                    render::list(&version.hosts, 4),
                    render::list(&version.tables, 6),
                    render::age(version.last_heartbeat)
                )?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for TenantLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<24} {}", self.tenant, self.verdict)?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        if let Some(backlog) = self.backlog {
            write!(f, "; backlog {backlog}")?;
        }
        writeln!(f)?;
        for pause in &self.pauses {
            let scope = pause
                .queue
                .as_ref()
                .map(|q| format!("queue {q} "))
                .unwrap_or_default();
            let by = if pause.kind == "guard" {
                pause.by.clone()
            } else {
                format!("operator {}", pause.by)
            };
            writeln!(
                f,
                "    {scope}paused by {by} since {} ({}): {}",
                render::time(pause.since),
                render::age(pause.since),
                pause.reason
            )?;
        }
        if let Some(hash) = &self.plan_hash {
            writeln!(f, "    pending plan {hash}")?;
        }
        if let Some(waiting) = &self.waiting {
            writeln!(f, "    waiting: {waiting}")?;
        }
        Ok(())
    }
}
