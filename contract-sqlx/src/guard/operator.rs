//! Operator pauses and resumes: persisted, and never lifted by the guard.

use std::sync::Arc;
use std::time::SystemTime;

use contract_core::TenantName;

use super::{Guard, PauseInfo, PauseStore, PausedBy};
use crate::error::Result;

impl<DB: PauseStore> Guard<DB> {
    /// Pauses a tenant (every queue, or one) on behalf of an operator. Persisted; only
    /// [`Guard::resume`] lifts it — the guard never does.
    ///
    /// # Errors
    ///
    /// An invalid tenant name, or the pause table cannot be written.
    pub async fn pause(
        &self,
        tenant: &str,
        queue: Option<&str>,
        operator: &str,
        reason: &str,
    ) -> Result<()> {
        let tenant = TenantName::new(tenant)?;
        let info = PauseInfo {
            tenant: tenant.to_string(),
            queue: queue.map(str::to_owned),
            paused_by: PausedBy::Operator(operator.to_owned()),
            reason: reason.to_owned(),
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
        tracing::info!(tenant = %tenant, queue = ?queue, operator, reason, "operator paused tenant");
        self.update_cell(tenant.as_str(), |state| {
            state.operator.retain(|p| p.queue != info.queue);
            state.operator.push(Arc::new(info));
        });
        self.publish_gauges();
        Ok(())
    }

    /// Lifts an operator pause.
    ///
    /// # Errors
    ///
    /// An invalid tenant name, or the pause table cannot be written.
    pub async fn resume(&self, tenant: &str, queue: Option<&str>) -> Result<()> {
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
        tracing::info!(tenant = %tenant, queue = ?queue, "operator resumed tenant");
        self.update_cell(tenant.as_str(), |state| {
            state.operator.retain(|p| p.queue.as_deref() != queue)
        });
        self.publish_gauges();
        Ok(())
    }
}
