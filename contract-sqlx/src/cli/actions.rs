//! The commands that write the control plane: `approve`, `revoke`, `pause`, `resume`.
//! Every guard replica picks the change up on its next pass.

use std::fmt;
use std::time::SystemTime;

use serde::Serialize;
use sqlx::Pool;

use super::args::{ApproveArgs, PauseArgs, ResumeArgs, RevokeArgs};
use super::error::CliError;
use super::render;
use super::status::PauseLine;
use crate::control::{Approval, ApprovalRequest, ControlPlane, ControlStore, PauseRequest};
use crate::guard::PausedBy;

/// What `contract approve` prints.
#[derive(Debug, Serialize)]
pub(crate) struct Approved {
    pub approval: Approval,
    /// The tenants whose pending plan it covers now.
    pub covers: Vec<String>,
}

pub(crate) async fn approve<DB: ControlStore>(
    pool: &Pool<DB>,
    plane: &ControlPlane,
    args: &ApproveArgs,
) -> Result<Approved, CliError> {
    let mut request = match (&args.plan, &args.shape) {
        (_, Some(shape)) => ApprovalRequest::shape(shape.trim(), &args.by),
        (Some(hash), None) => ApprovalRequest::plan(hash.trim(), &args.by),
        (None, None) => {
            return Err(CliError::NotFound(
                "approve needs a plan hash or --shape (see `contract plans`)".into(),
            ));
        }
    };
    request = request.with_note(&args.note);
    if let Some(cap) = args.tenant_cap {
        request = request.tenant_cap(cap);
    }
    if let Some(expires_in) = args.expires_in {
        request = request.expires_at(SystemTime::now() + expires_in);
    }
    request.check()?;
    // Read before writing: no approval where no guard keeps its control plane (a missing
    // table is said to be that, with where it was looked for).
    let tenants = plane.tenants(pool).await?;
    let approval = plane.approve(pool, request).await?;
    let covers = tenants
        .into_iter()
        .filter(|t| t.plan.as_ref().is_some_and(|p| approval.target.covers(p)))
        .map(|t| t.tenant)
        .collect();
    Ok(Approved { approval, covers })
}

impl fmt::Display for Approved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = &self.approval;
        writeln!(f, "approved {} by {}", a.target, a.approver)?;
        writeln!(f, "  approval id: {}", a.id)?;
        if !a.note.is_empty() {
            writeln!(f, "  note: {}", a.note)?;
        }
        if let Some(at) = a.expires_at {
            writeln!(f, "  expires: {}", render::time(at))?;
        }
        if let Some(cap) = a.tenant_cap {
            writeln!(f, "  at most {cap} tenants")?;
        }
        if self.covers.is_empty() {
            writeln!(
                f,
                "  covers no pending plan right now (it will cover a plan that gets this {} later)",
                a.target.kind()
            )?;
        } else {
            writeln!(
                f,
                "  covers {} pending plans now: {}",
                self.covers.len(),
                render::list(&self.covers, 8)
            )?;
        }
        write!(
            f,
            "  every guard replica applies it on its next pass; revoke with: contract revoke {}",
            a.id
        )
    }
}

/// What `contract revoke` prints.
#[derive(Debug, Serialize)]
pub(crate) struct Revoked {
    pub approval_id: String,
    pub revoked_by: String,
}

pub(crate) async fn revoke<DB: ControlStore>(
    pool: &Pool<DB>,
    plane: &ControlPlane,
    args: &RevokeArgs,
) -> Result<Revoked, CliError> {
    if plane.revoke(pool, args.id.trim(), &args.by).await? {
        Ok(Revoked {
            approval_id: args.id.trim().to_owned(),
            revoked_by: args.by.clone(),
        })
    } else {
        Err(CliError::NotFound(format!(
            "no active approval with id {}: it does not exist or was revoked already (`contract status` \
             lists none; `contract approve` prints the id)",
            args.id.trim()
        )))
    }
}

impl fmt::Display for Revoked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "approval {} revoked by {}: it covers no new apply (applies already made stay)",
            self.approval_id, self.revoked_by
        )
    }
}

/// What `contract pause` prints.
#[derive(Debug, Serialize)]
pub(crate) struct Paused {
    pub tenant: String,
    pub pause: PauseLine,
    /// Whether a guard has reported the tenant (`contract status` lists it): a pause of a
    /// name no guard knows holds for a tenant of that name only, one that may never come.
    pub known_tenant: bool,
}

pub(crate) async fn pause<DB: ControlStore>(
    pool: &Pool<DB>,
    plane: &ControlPlane,
    args: &PauseArgs,
) -> Result<Paused, CliError> {
    // Read before writing: a pause stored where no guard keeps its control plane (another
    // schema or prefix, or none yet) would hold nothing; a missing table is said to be
    // that, with where it was looked for.
    let known_tenant = plane
        .tenants(pool)
        .await?
        .iter()
        .any(|t| t.tenant == args.tenant);
    let mut request = PauseRequest::tenant(&args.tenant)
        .by(&args.by)
        .reason(&args.reason);
    if let Some(queue) = &args.queue {
        request = request.queue(queue);
    }
    let pause = plane.pause(pool, request).await?;
    Ok(Paused {
        tenant: pause.tenant.clone(),
        pause: PauseLine::from(&pause),
        known_tenant,
    })
}

impl fmt::Display for Paused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scope = self
            .pause
            .queue
            .as_ref()
            .map(|q| format!("queue {q} of "))
            .unwrap_or_default();
        write!(
            f,
            "{scope}tenant {} paused by operator {}: {}\n  every guard replica closes its gate on its next pass; \
             lift it with: contract resume {}",
            self.tenant, self.pause.by, self.pause.reason, self.tenant
        )?;
        if let Some(queue) = &self.pause.queue {
            write!(f, " --queue {queue}")?;
            write!(
                f,
                "\n  only consumers that ask the gate of this queue stop (Guard::gate_queue with \
                 {queue}: the broker consumers do); Guard::gate({}) stays open",
                self.tenant
            )?;
        }
        if !self.known_tenant {
            write!(
                f,
                "\n  warning: no guard has reported a tenant named {} (contract status lists \
                 those it knows): check the name, and --control-schema/--control-prefix",
                self.tenant
            )?;
        }
        Ok(())
    }
}

/// What `contract resume` prints.
#[derive(Debug, Serialize)]
pub(crate) struct Resumed {
    pub tenant: String,
    pub queue: Option<String>,
    /// The guard's own pause, which stays until the tenant complies.
    pub guard_pause: Option<String>,
}

pub(crate) async fn resume<DB: ControlStore>(
    pool: &Pool<DB>,
    plane: &ControlPlane,
    args: &ResumeArgs,
) -> Result<Resumed, CliError> {
    let pauses = plane.pauses(pool).await?;
    let operator = pauses.iter().any(|p| {
        p.tenant == args.tenant
            && p.queue == args.queue
            && matches!(p.paused_by, PausedBy::Operator(_))
    });
    if !operator {
        return Err(CliError::NotFound(format!(
            "tenant {}{} has no operator pause (`contract status` lists the pauses)",
            args.tenant,
            args.queue
                .as_ref()
                .map(|q| format!(" queue {q}"))
                .unwrap_or_default()
        )));
    }
    plane
        .resume(pool, &args.tenant, args.queue.as_deref())
        .await?;
    Ok(Resumed {
        tenant: args.tenant.clone(),
        queue: args.queue.clone(),
        guard_pause: pauses
            .iter()
            .find(|p| p.tenant == args.tenant && p.paused_by == PausedBy::Guard)
            .map(|p| p.reason.clone()),
    })
}

impl fmt::Display for Resumed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scope = self
            .queue
            .as_ref()
            .map(|q| format!("queue {q} of "))
            .unwrap_or_default();
        write!(
            f,
            "{scope}tenant {} resumed: every guard replica opens its gate on its next pass",
            self.tenant
        )?;
        if let Some(reason) = &self.guard_pause {
            write!(
                f,
                "\n  the guard's own pause stays until the tenant complies: {reason}"
            )?;
        }
        Ok(())
    }
}
