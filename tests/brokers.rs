//! Brokers: message conservation through RabbitMQ and NATS JetStream, and the broker
//! quarantine sink.
//!
//! One test binary per server: each binary links sqlx and tokio once
//! (a binary per file made the build several times longer). Every file below is one
//! module; run one with `cargo test --test brokers <module>::`.

// The shared helpers, compiled once in the `contract-tests` library.
use contract_tests::support;

#[path = "support/conservation.rs"]
mod conservation;

#[path = "support/broker.rs"]
mod broker;

#[path = "support/broker_conservation.rs"]
mod broker_conservation;

#[path = "rabbitmq_conservation.rs"]
mod rabbitmq_conservation;

#[path = "nats_conservation.rs"]
mod nats_conservation;

#[path = "quarantine_sink.rs"]
mod quarantine_sink;

#[path = "rabbitmq_consumer.rs"]
mod rabbitmq_consumer;

#[path = "nats_consumer.rs"]
mod nats_consumer;
