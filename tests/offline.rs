//! No server needed, or every backend side by side: backend parity, the payload check and
//! its properties, quoting properties and duplicate tenants.
//!
//! One test binary per server: each binary links sqlx and tokio once
//! (a binary per file made the build several times longer). Every file below is one
//! module; run one with `cargo test --test offline <module>::`.

// The shared helpers, compiled once in the `contract-tests` library.
use contract_tests::support;

#[path = "parity.rs"]
mod parity;

#[path = "payload.rs"]
mod payload;

#[path = "payload_properties.rs"]
mod payload_properties;

#[path = "quoting_properties.rs"]
mod quoting_properties;

#[path = "duplicates.rs"]
mod duplicates;
