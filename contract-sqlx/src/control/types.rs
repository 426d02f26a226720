//! What the control plane stores: tenant status, approvals, replicas. Every replica's guard
//! writes and reads these, and so does the `contract` CLI, which needs no consumer code.

use std::fmt;
use std::time::SystemTime;

use contract_core::plan::{TenantPlan, short_hash};
use contract_core::{Finding, TableContract};
use serde::{Deserialize, Serialize};

/// A tenant as the guard last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TenantStatus {
    /// The tenant.
    pub tenant: String,
    /// `compliant`, `drifted`, `unreachable`, `retired` (no longer found by the tenant
    /// sources) or `checking` (found, not checked yet).
    pub verdict: String,
    /// Why a tenant is unreachable or retired.
    pub detail: Option<String>,
    /// The findings at `at_risk` or worse.
    pub findings: Vec<Finding>,
    /// The pending plan of a drifted tenant (what remains to apply), if any.
    pub plan: Option<TenantPlan>,
    /// Why the plan is not applied yet (awaiting approval, a consumer version still
    /// running, a failed attempt), if it is not.
    pub waiting: Option<String>,
    /// Where the tenant lives (a pool address without password, or a SQLite file path).
    pub location: String,
    /// Messages waiting in the tenant's queues, where the guard knows them.
    pub backlog: Option<i64>,
    /// When the guard last checked the tenant.
    #[serde(with = "humantime_serde_compat")]
    pub checked_at: SystemTime,
    /// When the verdict, findings or plan last changed.
    #[serde(with = "humantime_serde_compat")]
    pub changed_at: SystemTime,
    /// The replica that wrote this row.
    pub replica: String,
}

/// What an approval covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ApprovalTarget {
    /// One tenant's plan, by its full hash.
    Plan(String),
    /// Every tenant whose current plan has this change shape.
    Shape(String),
}

impl ApprovalTarget {
    /// `plan` or `shape`.
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match self {
            ApprovalTarget::Plan(_) => "plan",
            ApprovalTarget::Shape(_) => "shape",
        }
    }

    /// The hash or shape.
    #[must_use]
    pub fn value(&self) -> &str {
        match self {
            ApprovalTarget::Plan(v) | ApprovalTarget::Shape(v) => v,
        }
    }

    /// `true` when `plan` is covered.
    #[must_use]
    pub fn covers(&self, plan: &TenantPlan) -> bool {
        match self {
            ApprovalTarget::Plan(hash) => *hash == plan.hash,
            ApprovalTarget::Shape(shape) => *shape == plan.shape,
        }
    }
}

impl fmt::Display for ApprovalTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind(), self.value())
    }
}

/// An approval as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Approval {
    /// Its id (a UUIDv7).
    pub id: String,
    /// What it covers.
    pub target: ApprovalTarget,
    /// Who approved.
    pub approver: String,
    /// Why, or a ticket reference.
    pub note: String,
    /// When it was made.
    #[serde(with = "humantime_serde_compat")]
    pub created_at: SystemTime,
    /// When it stops covering new applies, if ever.
    #[serde(with = "humantime_serde_compat::option")]
    pub expires_at: Option<SystemTime>,
    /// How many tenants it may be applied to at most, if capped.
    pub tenant_cap: Option<u64>,
    /// How many tenants it has been applied to (or is being applied to).
    pub applied: u64,
    /// When it was revoked, if it was.
    #[serde(with = "humantime_serde_compat::option")]
    pub revoked_at: Option<SystemTime>,
    /// Who revoked it.
    pub revoked_by: Option<String>,
}

impl Approval {
    /// `true` when it may still cover a new apply at `now`: not revoked, not expired, and
    /// under its tenant cap.
    #[must_use]
    pub fn is_active(&self, now: SystemTime) -> bool {
        self.revoked_at.is_none()
            && self.expires_at.is_none_or(|at| at > now)
            && self.tenant_cap.is_none_or(|cap| self.applied < cap)
    }
}

impl fmt::Display for Approval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "approval {} of {} by {}",
            self.id, self.target, self.approver
        )?;
        if !self.note.is_empty() {
            write!(f, " ({})", self.note)?;
        }
        if let Some(cap) = self.tenant_cap {
            write!(f, "; applied to {} of at most {cap} tenants", self.applied)?;
        } else {
            write!(f, "; applied to {} tenants", self.applied)?;
        }
        if let Some(by) = &self.revoked_by {
            write!(f, "; revoked by {by}")?;
        }
        Ok(())
    }
}

/// A request to approve a plan or a change shape (see [`crate::Guard::approve`] and the
/// `contract approve` command).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApprovalRequest {
    /// What to approve.
    pub target: ApprovalTarget,
    /// Who approves.
    pub approver: String,
    /// Why, or a ticket reference.
    pub note: String,
    /// When it stops covering new applies.
    pub expires_at: Option<SystemTime>,
    /// At most this many tenants.
    pub tenant_cap: Option<u64>,
}

impl ApprovalRequest {
    /// Approves one tenant's plan by its full hash.
    #[must_use]
    pub fn plan(hash: impl Into<String>, approver: impl Into<String>) -> Self {
        Self::new(ApprovalTarget::Plan(hash.into()), approver.into())
    }

    /// Approves every tenant whose current plan has this change shape.
    #[must_use]
    pub fn shape(shape: impl Into<String>, approver: impl Into<String>) -> Self {
        Self::new(ApprovalTarget::Shape(shape.into()), approver.into())
    }

    /// [`crate::Error::InvalidApproval`] unless the hash or shape is 64 hex digits.
    pub(crate) fn check(&self) -> crate::error::Result<()> {
        let value = self.target.value();
        if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(crate::Error::InvalidApproval {
                what: self.target.kind(),
                value: value.escape_debug().to_string(),
            });
        }
        Ok(())
    }

    fn new(target: ApprovalTarget, approver: String) -> Self {
        Self {
            target,
            approver,
            note: String::new(),
            expires_at: None,
            tenant_cap: None,
        }
    }

    /// Records why (or a ticket reference).
    #[must_use]
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    /// Stops covering new applies at `at`.
    #[must_use]
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Covers at most `tenants` tenants.
    #[must_use]
    pub fn tenant_cap(mut self, tenants: u64) -> Self {
        self.tenant_cap = Some(tenants);
        self
    }
}

/// An operator pause to record with [`super::ControlPlane::pause`]: a tenant (or one of its
/// queues), who pauses and why.
///
/// ```
/// use contract_sqlx::control::PauseRequest;
///
/// let request = PauseRequest::tenant("tenant_42")
///     .queue("emails")
///     .by("alice")
///     .reason("provider outage");
/// assert_eq!(request.operator, "alice");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PauseRequest {
    /// The tenant.
    pub tenant: String,
    /// The queue, when only one queue is paused.
    pub queue: Option<String>,
    /// Who pauses (default: `contract-guard@<host>/<pid>`).
    pub operator: String,
    /// Why, in one sentence (default: `paused by an operator`).
    pub reason: String,
}

impl PauseRequest {
    /// Pauses every queue of `tenant`.
    #[must_use]
    pub fn tenant(tenant: impl Into<String>) -> Self {
        Self {
            tenant: tenant.into(),
            queue: None,
            operator: crate::remediation::AuditConfig::default().actor,
            reason: "paused by an operator".to_owned(),
        }
    }

    /// Pauses only this queue of the tenant.
    #[must_use]
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Who pauses.
    #[must_use]
    pub fn by(mut self, operator: impl Into<String>) -> Self {
        self.operator = operator.into();
        self
    }

    /// Why, in one sentence (shown by the gate and stored with the pause).
    #[must_use]
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }
}

/// A running guard, as it registers itself with a heartbeat: which contract version it
/// serves, so a plan that would break that version waits while it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Replica {
    /// Its id (a UUIDv7, new per guard start).
    pub replica_id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: i64,
    /// The contract version: a digest of its contracts (`version` in `contract status`).
    pub version: String,
    /// The contracts it checks.
    pub contracts: Vec<TableContract>,
    /// When it started.
    #[serde(with = "humantime_serde_compat")]
    pub started_at: SystemTime,
    /// Its last heartbeat.
    #[serde(with = "humantime_serde_compat")]
    pub heartbeat_at: SystemTime,
}

impl Replica {
    /// The first 12 hex digits of the version, for display.
    #[must_use]
    pub fn short_version(&self) -> &str {
        short_hash(&self.version)
    }
}

/// RFC 3339 (UTC) text for `SystemTime` fields in JSON.
pub(crate) mod humantime_serde_compat {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_micros(*at))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&text).map_err(serde::de::Error::custom)
    }

    pub mod option {
        use std::time::SystemTime;

        use serde::{Deserialize, Deserializer, Serializer};

        #[allow(clippy::ref_option)]
        pub fn serialize<S: Serializer>(at: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
            match at {
                Some(at) => s.collect_str(&humantime::format_rfc3339_micros(*at)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<SystemTime>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|t| humantime::parse_rfc3339_weak(&t).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}
