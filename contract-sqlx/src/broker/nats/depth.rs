//! The backlog of JetStream tenant consumers, for the guard's backlog monitor.

use std::collections::HashMap;

use async_nats::jetstream::Context;
use futures_util::future::BoxFuture;

use super::{Topology, nats};
use crate::backend::Backend;
use crate::broker::BrokerError;
use crate::guard::BacklogSource;
use crate::tenants::TenantDirectory;

/// What the server says of one tenant's consumer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerState {
    /// Messages of the tenant's subject not delivered yet (its backlog).
    pub pending: u64,
    /// Messages delivered and not acknowledged yet.
    pub ack_pending: u64,
    /// Messages delivered more than once and not acknowledged yet.
    pub redelivered: u64,
    /// Deliveries so far, redeliveries included (the consumer sequence).
    pub deliveries: u64,
    /// The last stream sequence delivered to the consumer.
    pub delivered_stream_sequence: u64,
}

/// Counts each tenant's backlog with its consumer's info (`num_pending`: messages of its
/// subject not delivered yet), which reads the consumer's state and touches no message:
/// what a paused tenant has waiting. Give it to [`crate::guard::GuardBuilder::backlog`].
#[derive(Clone)]
pub struct NatsBacklog {
    jetstream: Context,
    topology: Topology,
}

impl std::fmt::Debug for NatsBacklog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBacklog")
            .field("topology", &self.topology)
            .finish_non_exhaustive()
    }
}

impl NatsBacklog {
    /// The backlog of `topology`'s tenant consumers, read through `jetstream`.
    #[must_use]
    pub fn new(jetstream: &Context, topology: Topology) -> Self {
        Self {
            jetstream: jetstream.clone(),
            topology,
        }
    }

    /// The state of each of `tenants`' consumers; a consumer that does not exist is left
    /// out.
    ///
    /// # Errors
    ///
    /// [`BrokerError::Broker`] when the work stream cannot be read.
    pub async fn states(
        &self,
        tenants: &[String],
    ) -> Result<HashMap<String, ConsumerState>, BrokerError> {
        let name = self.topology.stream();
        let stream = self
            .jetstream
            .get_stream_no_info(&name)
            .await
            .map_err(|e| nats(format!("reading stream {name}"), None)(e.into()))?;
        let mut states = HashMap::new();
        for tenant in tenants {
            match stream.consumer_info(self.topology.consumer(tenant)).await {
                Ok(info) => {
                    let state = ConsumerState {
                        pending: info.num_pending,
                        ack_pending: info.num_ack_pending as u64,
                        redelivered: info.num_redelivered as u64,
                        deliveries: info.delivered.consumer_sequence,
                        delivered_stream_sequence: info.delivered.stream_sequence,
                    };
                    states.insert(tenant.clone(), state);
                }
                Err(error) => tracing::debug!(tenant, %error, "consumer info not read"),
            }
        }
        Ok(states)
    }

    /// The messages not delivered yet of each of `tenants`' subjects; a consumer that
    /// does not exist is left out.
    ///
    /// # Errors
    ///
    /// [`BrokerError::Broker`] when the work stream cannot be read.
    pub async fn depths(&self, tenants: &[String]) -> Result<HashMap<String, u64>, BrokerError> {
        Ok(self
            .states(tenants)
            .await?
            .into_iter()
            .map(|(tenant, state)| (tenant, state.pending))
            .collect())
    }
}

impl<DB: Backend> BacklogSource<DB> for NatsBacklog {
    fn depths<'a>(
        &'a self,
        _directory: &'a TenantDirectory<DB>,
        tenants: &'a [String],
    ) -> BoxFuture<'a, crate::Result<HashMap<String, u64>>> {
        Box::pin(async move {
            Ok(NatsBacklog::depths(self, tenants)
                .await
                .unwrap_or_else(|error| {
                    tracing::warn!(%error, "JetStream backlog not counted");
                    HashMap::new()
                }))
        })
    }

    fn describe(&self) -> String {
        format!("JetStream consumers of `{}`", self.topology.subject("*"))
    }
}
