//! What the broker tests share: the servers' URLs (loud when unreachable) and queues
//! deleted even when a test panics. Included with `#[path]`.
#![allow(dead_code)]

use std::sync::Arc;

use contract_sqlx::broker::rabbitmq::{self, Topology, lapin};

/// Default RabbitMQ URL on the development machines.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// `CONTRACT_TEST_AMQP_URL`, or the local default.
pub fn amqp_url() -> String {
    std::env::var("CONTRACT_TEST_AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.to_owned())
}

/// Connects to the test RabbitMQ server, panicking with the variable to set.
pub async fn rabbit() -> Arc<lapin::Connection> {
    let url = amqp_url();
    Arc::new(rabbitmq::connect(&url).await.unwrap_or_else(|e| {
        panic!("RabbitMQ is unreachable at {url}: {e}. Start it or set CONTRACT_TEST_AMQP_URL to a reachable server")
    }))
}

/// A topology whose queues and exchange are deleted on drop, even after a failed assertion.
pub struct RabbitScratch {
    pub topology: Topology,
    pub tenants: Vec<String>,
}

impl RabbitScratch {
    /// Declares a uniquely named topology for `tenants`.
    pub async fn declare(
        connection: &lapin::Connection,
        prefix: &str,
        tenants: Vec<String>,
    ) -> Self {
        let scratch = Self {
            topology: Topology::new(crate::support::unique_name(prefix)),
            tenants,
        };
        scratch
            .topology
            .declare(connection, &scratch.tenants)
            .await
            .expect("declare the queues");
        scratch
    }
}

impl Drop for RabbitScratch {
    fn drop(&mut self) {
        let (topology, tenants) = (self.topology.clone(), std::mem::take(&mut self.tenants));
        crate::support::clean_up_blocking(move || async move {
            if let Ok(connection) = rabbitmq::connect(&amqp_url()).await {
                let _ = topology.delete(&connection, &tenants).await;
                let _ = connection.close(200, "clean-up").await;
            }
        });
    }
}

/// Publishes `(message id, payload)` to `queue` through the default exchange, persistent,
/// and waits for every confirm.
pub async fn publish(connection: &lapin::Connection, queue: &str, messages: &[(String, String)]) {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    for (id, payload) in messages {
        let properties = lapin::BasicProperties::default()
            .with_message_id(id.as_str().into())
            .with_delivery_mode(2);
        channel
            .basic_publish(
                "",
                queue,
                BasicPublishOptions::default(),
                payload.as_bytes(),
                properties,
            )
            .await
            .expect("publish");
    }
    channel.wait_for_confirms().await.expect("confirmed");
    let _ = channel.close(200, "published").await;
}
