//! Schema contracts for multi-tenant sqlx consumers.
//!
//! A queue consumer reads per-tenant tables (a PostgreSQL schema, a MySQL/MariaDB database
//! or a SQLite file per tenant) with `sqlx::FromRow` structs. When one tenant's schema
//! drifts, sqlx finds out in the middle of a batch. This crate finds out *before*: it
//! turns the struct into a contract, checks every tenant against it with sqlx's own type
//! verdict, pauses only the drifted tenants, remediates what is safe, and quarantines
//! payloads the consumer's serde type rejects.
//!
//! The path a consumer takes, in order: [derive a contract](#1-a-contract-is-the-struct-you-already-have)
//! → [check the fleet](#2-check-the-fleet) → [guard the consumer](#3-guard-a-consumer-start-up-check-and-a-gate-per-batch)
//! → [remediate](#4-remediation-stays-safe) → [payloads and quarantine](#5-payload-contracts-and-quarantine)
//! → [contract tests in CI](#6-contract-tests-in-your-ci). The root holds only what that path
//! names; the plumbing lives in modules: [`check`], [`tenants`], [`guard`], [`control`]
//! (the state replicas share), [`remediation`], [`payload`], [`quarantine`], [`testing`],
//! [`plan`], [`report`], [`model`] and [`backend`].
//!
//! # 1. A contract is the struct you already have
//!
//! `#[derive(Contract)]` reads `#[sqlx(...)]` exactly as `FromRow` does, so the contract's
//! columns are the ones FromRow will look up. `#[contract(...)]` adds what remediation needs.
//!
//! ```
//! use contract_sqlx::Contract;
//!
//! #[derive(sqlx::FromRow, Contract)]
//! #[contract(table = "events")]
//! struct Event {
//!     #[contract(primary_key)]
//!     id: i64,
//!     #[sqlx(rename = "uid")]
//!     user_id: i64,
//!     #[contract(default = "'{}'")]          // how remediation adds the column
//!     event_metadata: Option<serde_json::Value>,
//! }
//!
//! let contract = Event::contract();
//! let names: Vec<&str> = contract.columns.iter().map(|c| c.name.as_str()).collect();
//! assert_eq!(names, ["id", "uid", "event_metadata"]);
//! assert!(contract.columns[2].nullable && !contract.columns[0].nullable);
//! ```
//!
//! # 2. Check the fleet
//!
//! One catalog query covers every tenant's contracted tables; each distinct live type is
//! resolved once through the driver; the verdict per column is
//! `<FieldTy as sqlx::Type<DB>>::compatible` plus the rules it lacks (nullability,
//! presence, MySQL integer width, SQLite affinity).
//!
//! ```no_run
//! # use contract_sqlx::Contract;
//! # #[derive(sqlx::FromRow, Contract)] #[contract(table = "events")] struct Event { id: i64 }
//! # async fn demo(pool: sqlx::PgPool) -> contract_sqlx::Result<()> {
//! use contract_sqlx::check::ContractSet;
//! use contract_sqlx::{TenantDirectory, Tenants, check_fleet};
//!
//! let contracts = ContractSet::<sqlx::Postgres>::new().with::<Event>();
//! let tenants = TenantDirectory::new().discover(&pool, &Tenants::schemas_like("tenant_%")).await?;
//! let report = check_fleet(&tenants, &contracts).await?;
//! println!("{report}");                    // tenant, verdict, severity, kind, where, expected -> actual
//! let json = report.to_json_pretty();      // a stable shape for dashboards and CI
//! # let _ = json; Ok(()) }
//! ```
//!
//! # 3. Guard a consumer: start-up check and a gate per batch
//!
//! ```no_run
//! # use contract_sqlx::Contract;
//! # #[derive(sqlx::FromRow, Contract)] #[contract(table = "events")] struct Event { id: i64 }
//! # async fn demo(pool: sqlx::PgPool) -> contract_sqlx::Result<()> {
//! use contract_sqlx::plan::Remediation;
//! use contract_sqlx::{Gate, Guard, Tenants};
//!
//! let guard = Guard::<sqlx::Postgres>::builder()
//!     .contract::<Event>()
//!     .tenants(Tenants::schemas_like("tenant_%"))
//!     .remediation(Remediation::SafeOnly)   // Off | DryRun | SafeOnly | Approved(hash)
//!     .start(&pool)                          // checks every tenant once
//!     .await?;
//! let _revalidation = guard.spawn();         // re-checks changed tenants every few seconds
//! loop {
//!     for tenant in guard.tenants() {
//!         match guard.gate(&tenant) {        // from memory, well under a microsecond
//!             Gate::Open(permit) => { /* claim a batch; ack only if permit.is_current() */ let _ = permit; }
//!             Gate::Paused(why) => { /* skip: why.reason, why.plan_hash, why.paused_by */ let _ = why; }
//!         }
//!     }
//! #   break;
//! }
//! # Ok(()) }
//! ```
//!
//! After remediation DDL, pooled connections hold stale prepared statements (PostgreSQL:
//! `cached plan must not change result type`). Install the guard's [`SchemaEpoch`] on the
//! consumer's pool: connections opened before the last schema change are recycled.
//!
//! ```no_run
//! # async fn demo(epoch: contract_sqlx::SchemaEpoch) -> Result<(), sqlx::Error> {
//! let pool = epoch.install(sqlx::postgres::PgPoolOptions::new()).connect("postgres://…").await?;
//! # let _ = pool; Ok(()) }
//! ```
//!
//! # 4. Remediation stays safe
//!
//! Plans are deterministic (same inputs, byte-identical SQL and hash), every identifier is
//! quoted, every step carries its lock and hazards. `SafeOnly` applies only steps without
//! hazards (add a nullable or defaulted column, create a missing table); rewrites, row
//! validations and renames wait for an approval of the exact plan hash; narrowing, lossy
//! casts and drops are never planned. Each tenant is changed in its own transaction, under
//! a per-tenant lock, with an audit row.
//!
//! ```no_run
//! # use contract_sqlx::Contract;
//! # #[derive(sqlx::FromRow, Contract)] #[contract(table = "events")] struct Event { id: i64 }
//! # async fn demo(tenants: contract_sqlx::TenantDirectory<sqlx::Postgres>) -> contract_sqlx::Result<()> {
//! use contract_sqlx::check::ContractSet;
//! use contract_sqlx::plan::Remediation;
//! use contract_sqlx::remediate;
//!
//! let contracts = ContractSet::<sqlx::Postgres>::new().with::<Event>();
//! let run = remediate(&tenants, &contracts, Remediation::DryRun).run().await?;
//! for (tenant, plan) in &run.awaiting_approval {
//!     println!("{tenant}: plan {} awaits approval", plan.hash);
//! }
//! println!("{}", run.log.to_json_pretty()); // the execution log of the run
//! # Ok(()) }
//! ```
//!
//! # 5. Payload contracts and quarantine
//!
//! Queued JSON is checked with the consumer's own serde type (the parsed value goes to the
//! handler); rejected messages move to a quarantine table in the transaction that removes
//! them from the queue, and can be replayed once the contract is fixed
//! ([`quarantine::QueueQuarantine`]: `quarantine`, `replay`, `backlog_scan`).
//!
//! ```
//! use contract_sqlx::payload::{PayloadContract, RejectReason};
//!
//! #[derive(serde::Deserialize)]
//! struct Order { id: u64, items: Vec<Item> }
//! #[derive(serde::Deserialize)]
//! struct Item { price: u32 }
//!
//! let contract = PayloadContract::<Order>::new();
//! let order = contract.check(br#"{"id": 1, "items": [{"price": 5}]}"#).expect("valid");
//! assert_eq!(order.items[0].price, 5);
//! let rejected = contract.check(br#"{"id": 1, "items": [{"price": "5"}]}"#).err().expect("poison");
//! assert_eq!(rejected.reason, RejectReason::ContractMismatch);
//! assert_eq!(rejected.path.as_deref(), Some("items[0].price"));
//! ```
//!
//! # 6. Contract tests in your CI
//!
//! Assert a contract against a migrated database, or offline against a committed snapshot
//! ([`testing`]); a mistake in the struct's attributes is a compile error on the field.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `derive` | yes | `#[derive(Contract)]` |
//! | `metrics` | yes | counters, gauges and a pass histogram through the [`metrics`](https://docs.rs/metrics) facade (names in [`guard::metrics`]); off: nothing is recorded and the crate is not compiled |
//! | `postgres`, `mysql`, `sqlite` | no | the backends: enable at least one (as with sqlx); without one only the backend-independent part (contracts, verdicts, plans, payload checks) is compiled |
//! | `uuid`, `chrono`, `time`, `rust_decimal` | no | forwarded to sqlx, for contracts with those field types |
//! | `tls-rustls` (`tls-rustls-ring`, `tls-rustls-aws-lc-rs`), `tls-native-tls` | no | TLS to the database server, forwarded to sqlx's features of the same names (pick one) |
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
// With no backend feature (the default set, as `cargo package` verifies it) the shared
// internals the backends call (row decoding, control-plane SQL, audit helpers) have no
// caller. They are still compiled, so the build checks them; only the unused warnings go.
#![cfg_attr(
    not(any(feature = "postgres", feature = "mysql", feature = "sqlite")),
    allow(dead_code, unused_imports, unused_macros)
)]

pub mod backend;
pub mod broker;
pub mod check;
#[cfg(feature = "cli")]
#[cfg_attr(docsrs, doc(cfg(feature = "cli")))]
pub mod cli;
pub mod control;
mod error;
mod from_row;
pub mod guard;
pub mod payload;
pub mod quarantine;
pub mod remediation;
mod telemetry;
pub mod tenants;
pub mod testing;

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

#[doc(hidden)]
pub mod __private;

pub use contract_core::plan;

/// The contract model: table and column contracts, live tables as introspected, dialects
/// and tenant names.
pub mod model {
    pub use contract_core::{
        ColumnContract, Columns, Contract, Dialect, DiffScope, FieldDigest, IdentError, LiveColumn,
        LiveForeignKey, LiveTable, MAX_TENANT_NAME_LEN, MISSING_LABELS, Reference, RelationKind,
        TableContract, TenantName, TypeFit, TypeOracle, UNKNOWN_LABELS, diff, digest_hex,
        enum_label_drift, rules,
    };
}

/// What a check or a run reports: verdicts, findings, the execution log.
pub mod report {
    pub use contract_core::{
        BackfillProgress, DriftKind, ExecutionLog, Finding, FleetReport, LogAction, LogEntry,
        Severity, TenantError, TenantLog, TenantOutcome, TenantReport, Verdict,
    };
}

pub use check::check_fleet;
pub use contract_core::{Contract, FleetReport, TenantName};
#[cfg(feature = "derive")]
pub use contract_derive::Contract;
pub use error::{Error, Result};
pub use guard::{Gate, Guard, Permit};
pub use remediation::{SchemaEpoch, remediate};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::sqlite_tenant_files;
pub use tenants::{TenantDirectory, Tenants};
