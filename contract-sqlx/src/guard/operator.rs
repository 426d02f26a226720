//! Operator pauses and resumes: persisted, and never lifted by the guard.
//!
//! ```no_run
//! # async fn demo(guard: contract_sqlx::Guard<sqlx::Postgres>) -> contract_sqlx::Result<()> {
//! guard.pause("tenant_42").by("alice").reason("investigating an incident").await?;
//! guard.pause("tenant_7").queue("emails").by("bob").reason("provider outage").await?;
//! guard.resume("tenant_42").await?;
//! # Ok(()) }
//! ```

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use contract_core::TenantName;

use super::{Guard, PauseInfo, PausedBy};
use crate::control::{Approval, ApprovalRequest, ControlStore};
use crate::error::Result;

/// The reason recorded when none is given.
const NO_REASON: &str = "paused by an operator";

/// An operator pause being set up by [`Guard::pause`]; `.await` it to apply.
#[derive(Debug)]
#[must_use = "an operator pause does nothing until it is awaited"]
pub struct OperatorPause<'g, DB: ControlStore> {
    guard: &'g Guard<DB>,
    tenant: String,
    queue: Option<String>,
    operator: Option<String>,
    reason: String,
}

impl<DB: ControlStore> OperatorPause<'_, DB> {
    /// Pauses only this queue of the tenant (default: every queue).
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Who pauses (default: the guard's audit actor, `contract-guard@<host>/<pid>`).
    pub fn by(mut self, operator: impl Into<String>) -> Self {
        self.operator = Some(operator.into());
        self
    }

    /// Why, in one sentence (shown by the gate and stored with the pause).
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }
}

impl<'g, DB: ControlStore> IntoFuture for OperatorPause<'g, DB> {
    type Output = Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<()>> + Send + 'g>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let operator = self
                .operator
                .unwrap_or_else(|| self.guard.inner.options.audit.actor.clone());
            self.guard
                .apply_pause(&self.tenant, self.queue, operator, self.reason)
                .await
        })
    }
}

/// Lifting an operator pause, set up by [`Guard::resume`]; `.await` it to apply.
#[derive(Debug)]
#[must_use = "a resume does nothing until it is awaited"]
pub struct OperatorResume<'g, DB: ControlStore> {
    guard: &'g Guard<DB>,
    tenant: String,
    queue: Option<String>,
}

impl<DB: ControlStore> OperatorResume<'_, DB> {
    /// Lifts only the pause of this queue (default: the pause of every queue).
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }
}

impl<'g, DB: ControlStore> IntoFuture for OperatorResume<'g, DB> {
    type Output = Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<()>> + Send + 'g>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            self.guard
                .apply_resume(&self.tenant, self.queue.as_deref())
                .await
        })
    }
}

impl<DB: ControlStore> Guard<DB> {
    /// Pauses a tenant (every queue, or one with `.queue(..)`) on behalf of an operator.
    /// Persisted; only [`Guard::resume`] lifts it — the guard never does. Await the
    /// returned value; it fails on an invalid tenant name or when the pause table cannot
    /// be written (then nothing changed).
    pub fn pause(&self, tenant: impl Into<String>) -> OperatorPause<'_, DB> {
        OperatorPause {
            guard: self,
            tenant: tenant.into(),
            queue: None,
            operator: None,
            reason: NO_REASON.to_owned(),
        }
    }

    /// Lifts an operator pause of a tenant (of every queue, or of one with `.queue(..)`).
    /// Await the returned value; it fails on an invalid tenant name or when the pause
    /// table cannot be written.
    pub fn resume(&self, tenant: impl Into<String>) -> OperatorResume<'_, DB> {
        OperatorResume {
            guard: self,
            tenant: tenant.into(),
            queue: None,
        }
    }

    async fn apply_pause(
        &self,
        tenant: &str,
        queue: Option<String>,
        operator: String,
        reason: String,
    ) -> Result<()> {
        let tenant = TenantName::new(tenant)?;
        let info = PauseInfo {
            tenant: tenant.to_string(),
            queue,
            paused_by: PausedBy::Operator(operator),
            reason,
            findings: Vec::new(),
            plan_hash: None,
            expected_fingerprint: None,
            observed_fingerprint: None,
            since: SystemTime::now(),
        };
        let _serial = self.inner.operator_lock.lock().await;
        if let Some(plane) = &self.inner.plane {
            DB::save_pause(&self.inner.control, plane, &info).await?;
        }
        tracing::info!(tenant = %tenant, queue = info.queue.as_deref().unwrap_or("*"), paused_by = %info.paused_by, reason = %info.reason, "operator paused tenant");
        self.update_cell(tenant.as_str(), |state| {
            state.operator.retain(|p| p.queue != info.queue);
            state.operator.push(Arc::new(info));
        });
        self.publish_gauges();
        Ok(())
    }

    async fn apply_resume(&self, tenant: &str, queue: Option<&str>) -> Result<()> {
        let tenant = TenantName::new(tenant)?;
        let _serial = self.inner.operator_lock.lock().await;
        if let Some(plane) = &self.inner.plane {
            DB::delete_pause(
                &self.inner.control,
                plane,
                tenant.as_str(),
                queue,
                &PausedBy::Operator(String::new()),
            )
            .await?;
        }
        tracing::info!(tenant = %tenant, queue = queue.unwrap_or("*"), "operator resumed tenant");
        self.update_cell(tenant.as_str(), |state| {
            state.operator.retain(|p| p.queue.as_deref() != queue);
        });
        self.publish_gauges();
        Ok(())
    }

    /// Records an approval in the control plane (a plan by its full hash, or a change shape
    /// for every tenant whose plan has it) and wakes a pass: every replica's guard applies
    /// what it covers on its next pass, exactly once per tenant, when its policy applies.
    ///
    /// ```no_run
    /// # async fn demo(guard: contract_sqlx::Guard<sqlx::Postgres>, shape: String) -> contract_sqlx::Result<()> {
    /// use contract_sqlx::control::ApprovalRequest;
    /// let approval = guard
    ///     .approve(ApprovalRequest::shape(shape, "alice").with_note("INC-4211").tenant_cap(300))
    ///     .await?;
    /// println!("{approval}");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`crate::Error::InvalidApproval`] for a malformed hash or shape,
    /// [`crate::Error::Unsupported`] for a guard without a control plane
    /// ([`crate::guard::GuardBuilder::in_memory_control`]), or the table cannot be written.
    pub async fn approve(&self, request: ApprovalRequest) -> Result<Approval> {
        let plane = self.plane("approvals")?;
        let approval = plane.approve(&self.inner.control, request).await?;
        self.inner.wake.notify_one();
        Ok(approval)
    }

    /// Revokes an approval (it covers no new apply); `false` when there is no such active
    /// approval.
    ///
    /// # Errors
    ///
    /// As [`Guard::approve`].
    pub async fn revoke(&self, approval_id: &str, by: &str) -> Result<bool> {
        let plane = self.plane("approvals")?;
        plane.revoke(&self.inner.control, approval_id, by).await
    }

    /// Changes the remediation policy from the next pass on (this replica only; each
    /// replica has its own).
    pub fn set_policy(&self, policy: contract_core::plan::Remediation) {
        tracing::info!(policy = %policy, "remediation policy changed");
        *self
            .inner
            .policy
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = policy;
        self.inner.wake.notify_one();
    }

    fn plane(&self, what: &'static str) -> Result<&crate::control::ControlPlane> {
        self.inner
            .plane
            .as_ref()
            .ok_or(crate::error::Error::Unsupported {
                dialect: DB::DIALECT,
                what: if what == "approvals" {
                    "approvals without a control plane (the guard keeps pauses in memory only)"
                } else {
                    what
                },
            })
    }
}
