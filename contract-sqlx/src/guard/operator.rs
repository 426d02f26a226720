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

use super::{Guard, PauseInfo, PauseStore, PausedBy};
use crate::error::Result;

/// The reason recorded when none is given.
const NO_REASON: &str = "paused by an operator";

/// An operator pause being set up by [`Guard::pause`]; `.await` it to apply.
#[derive(Debug)]
#[must_use = "an operator pause does nothing until it is awaited"]
pub struct OperatorPause<'g, DB: PauseStore> {
    guard: &'g Guard<DB>,
    tenant: String,
    queue: Option<String>,
    operator: Option<String>,
    reason: String,
}

impl<DB: PauseStore> OperatorPause<'_, DB> {
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

impl<'g, DB: PauseStore> IntoFuture for OperatorPause<'g, DB> {
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
pub struct OperatorResume<'g, DB: PauseStore> {
    guard: &'g Guard<DB>,
    tenant: String,
    queue: Option<String>,
}

impl<DB: PauseStore> OperatorResume<'_, DB> {
    /// Lifts only the pause of this queue (default: the pause of every queue).
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }
}

impl<'g, DB: PauseStore> IntoFuture for OperatorResume<'g, DB> {
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

impl<DB: PauseStore> Guard<DB> {
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
        if let Some(table) = &self.inner.pauses {
            DB::save_pause(&self.inner.control, table, &info).await?;
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
        if let Some(table) = &self.inner.pauses {
            DB::delete_pause(
                &self.inner.control,
                table,
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
}
