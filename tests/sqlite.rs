//! SQLite: drift, hostile names, quarantine, remediation, connections, sqlx conformance and
//! the quickstart.
//!
//! One test binary per server: each binary links sqlx and tokio once
//! (a binary per file made the build several times longer). Every file below is one
//! module; run one with `cargo test --test sqlite <module>::`.

// The shared helpers, compiled once in the `contract-tests` library.
use contract_tests::support;

#[path = "sqlite_drift.rs"]
mod sqlite_drift;

#[path = "sqlite_names.rs"]
mod sqlite_names;

#[path = "sqlite_quarantine.rs"]
mod sqlite_quarantine;

#[path = "sqlite_remediate.rs"]
mod sqlite_remediate;

#[path = "sqlite_connections.rs"]
mod sqlite_connections;

#[path = "conformance_sqlite.rs"]
mod conformance_sqlite;

#[path = "quickstart.rs"]
mod quickstart;
