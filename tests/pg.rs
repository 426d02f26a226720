//! PostgreSQL: drift, the guard, the live fleet, online remediation, quarantine,
//! remediation, its tenant and table locks and stale plans, the testing helpers, sqlx conformance, message
//! conservation, faults and revalidation.
//!
//! One test binary per server: each binary links sqlx and tokio once
//! (a binary per file made the build several times longer). Every file below is one
//! module; run one with `cargo test --test pg <module>::`.

// The shared helpers, compiled once in the `contract-tests` library.
use contract_tests::support;

#[path = "pg_drift.rs"]
mod pg_drift;

#[path = "pg_guard.rs"]
mod pg_guard;

#[path = "pg_live_fleet.rs"]
mod pg_live_fleet;

#[path = "pg_online.rs"]
mod pg_online;

#[path = "pg_quarantine.rs"]
mod pg_quarantine;

#[path = "pg_remediate.rs"]
mod pg_remediate;

#[path = "pg_tenant_lock.rs"]
mod pg_tenant_lock;

#[path = "pg_table_lock.rs"]
mod pg_table_lock;

#[path = "pg_testing.rs"]
mod pg_testing;

#[path = "conformance_pg.rs"]
mod conformance_pg;

#[path = "pg_conservation.rs"]
mod pg_conservation;

#[path = "faults_pg.rs"]
mod faults_pg;

#[path = "revalidate.rs"]
mod revalidate;
