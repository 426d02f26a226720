//! MySQL/MariaDB: drift, hostile names, quarantine, remediation, sqlx conformance, message
//! conservation and faults.
//!
//! One test binary per server: each binary links sqlx and tokio once
//! (a binary per file made the build several times longer). Every file below is one
//! module; run one with `cargo test --test mysql <module>::`.

// The shared helpers, compiled once in the `contract-tests` library.
use contract_tests::support;

#[path = "mysql_drift.rs"]
mod mysql_drift;

#[path = "mysql_names.rs"]
mod mysql_names;

#[path = "mysql_quarantine.rs"]
mod mysql_quarantine;

#[path = "mysql_remediate.rs"]
mod mysql_remediate;

#[path = "conformance_mysql.rs"]
mod conformance_mysql;

#[path = "mysql_conservation.rs"]
mod mysql_conservation;

#[path = "faults_mysql.rs"]
mod faults_mysql;
