//! The backlog of RabbitMQ tenant queues, for the guard's backlog monitor.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use lapin::Connection;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

use super::Topology;
use crate::backend::Backend;
use crate::guard::BacklogSource;
use crate::tenants::TenantDirectory;

/// Counts the ready messages of each tenant's queue with a passive declare (which never
/// creates a queue): what a paused tenant has waiting. Give it to
/// [`crate::guard::GuardBuilder::backlog`].
#[derive(Clone)]
pub struct RabbitBacklog {
    connection: Arc<Connection>,
    topology: Topology,
}

impl std::fmt::Debug for RabbitBacklog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitBacklog")
            .field("topology", &self.topology)
            .finish_non_exhaustive()
    }
}

impl RabbitBacklog {
    /// The backlog of `topology`'s tenant queues, read through `connection`.
    #[must_use]
    pub fn new(connection: Arc<Connection>, topology: Topology) -> Self {
        Self {
            connection,
            topology,
        }
    }

    /// The ready messages of each of `tenants`' queues; a queue that does not exist is left out.
    ///
    /// # Errors
    ///
    /// [`crate::broker::BrokerError`] when no channel can be opened.
    pub async fn depths(
        &self,
        tenants: &[String],
    ) -> Result<HashMap<String, u64>, crate::broker::BrokerError> {
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let mut depths = HashMap::new();
        let mut channel = super::channel(&self.connection, "opening a channel").await?;
        for tenant in tenants {
            let queue = self.topology.queue(tenant);
            match channel
                .queue_declare(&queue, passive, FieldTable::default())
                .await
            {
                Ok(q) => {
                    depths.insert(tenant.clone(), u64::from(q.message_count()));
                }
                Err(error) => {
                    // A missing queue closes the channel: count the rest on a new one.
                    tracing::debug!(tenant, queue, %error, "queue depth not read");
                    channel = super::channel(&self.connection, "opening a channel").await?;
                }
            }
        }
        let _ = channel.close(200, "counted").await;
        Ok(depths)
    }
}

impl<DB: Backend> BacklogSource<DB> for RabbitBacklog {
    fn depths<'a>(
        &'a self,
        _directory: &'a TenantDirectory<DB>,
        tenants: &'a [String],
    ) -> BoxFuture<'a, crate::Result<HashMap<String, u64>>> {
        Box::pin(async move {
            Ok(RabbitBacklog::depths(self, tenants)
                .await
                .unwrap_or_else(|error| {
                    tracing::warn!(%error, "RabbitMQ backlog not counted");
                    HashMap::new()
                }))
        })
    }

    fn describe(&self) -> String {
        format!("RabbitMQ queues `{}`", self.topology.queue("*"))
    }
}
