//! What each database backend provides to the guard: bulk introspection, type
//! resolution and the per-dialect type fit. Implemented directly on sqlx's marker types
//! (`sqlx::Postgres`, `sqlx::MySql`, `sqlx::Sqlite`).

#[cfg(any(feature = "mysql", feature = "sqlite"))]
pub(crate) mod binds;
#[cfg(any(feature = "mysql", feature = "sqlite"))]
pub(crate) mod resolve;

use std::collections::HashMap;
use std::future::Future;

use contract_core::plan::TypeCatalog;
use contract_core::{Dialect, LiveColumn, LiveTable, TenantName, TypeFit};
use sqlx::{Database, Pool};

use crate::check::ContractSet;
use crate::check::TypeCheck;
use crate::error::{Error, Result};
use crate::remediation::ApplyJob;
use crate::remediation::{AuditConfig, AuditRecord, ReconciledAudit};

/// Live type key → the type info row decoding sees for it (`ARCHITECTURE.md` D1, D3).
pub type TypeMap<DB> = HashMap<String, <DB as Database>::TypeInfo>;

/// Schema (tenant) → a short digest of the catalog rows its contracted relations are read
/// from ([`Backend::signatures`]); `None`: no trustworthy digest for that schema (it is
/// introspected every pass).
pub type Signatures = HashMap<String, Option<String>>;

/// Where the catalogs a backend's signatures are read from stood at one read
/// ([`Backend::signatures_since`]): opaque, kept by the guard between passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogMark {
    /// The oldest transaction still running when the mark was read (PostgreSQL: the
    /// snapshot's `xmin`, 64 bits).
    pub(crate) horizon: i64,
    /// The row versions at or after the horizon among the rows visible then (32 bits).
    pub(crate) seen: Vec<i64>,
    /// When the server started, and which database it was read in: a mark from another
    /// start or database is not compared.
    pub(crate) server: String,
    /// Each catalog's row count then.
    pub(crate) counts: Vec<i64>,
}

/// What [`Backend::signatures_since`] found.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SignatureRead {
    /// No catalog row the signatures are read from was written or removed since the mark
    /// it was asked about: the signatures read with that mark still hold. The mark now.
    Unchanged(CatalogMark),
    /// The signatures now, with the mark read in the same snapshot (`None`: the backend
    /// has no mark).
    Read(Signatures, Option<CatalogMark>),
}

/// The per-schema versions a DDL event trigger maintains ([`Backend::schema_versions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchemaVersions {
    /// Identifies the trigger and the version table as they are now: versions seen under
    /// another token say nothing (the trigger may have been off in between).
    pub token: String,
    /// Schema → its version; a schema without one had no DDL since the trigger was
    /// installed.
    pub versions: HashMap<String, String>,
}

impl SchemaVersions {
    /// The versions read under `token`.
    #[must_use]
    pub fn new(token: String, versions: HashMap<String, String>) -> Self {
        Self { token, versions }
    }
}

/// A backend the guard can check: one per enabled sqlx driver.
pub trait Backend: Database + Sized {
    /// The SQL dialect.
    const DIALECT: Dialect;

    /// Introspects the contracted tables of every schema in `schemas` (tenant schemas or
    /// databases, plus contracts' fixed schemas) in bulk, contract-scoped.
    fn introspect(
        pool: &Pool<Self>,
        schemas: &[String],
        contracts: &ContractSet<Self>,
    ) -> impl Future<Output = Result<Vec<LiveTable>>> + Send;

    /// Resolves every distinct live type key of `tables` to the type info decoding sees,
    /// once for the whole fleet.
    fn resolve_types(
        pool: &Pool<Self>,
        tables: &[LiveTable],
    ) -> impl Future<Output = Result<TypeMap<Self>>> + Send;

    /// [`Backend::introspect`], then [`Backend::resolve_types`] of what it found: what a
    /// fleet snapshot takes. A backend may do both on one connection (SQLite: each pool
    /// is one tenant file, and every connection it opens is a thread and an open file).
    fn introspect_resolved(
        pool: &Pool<Self>,
        schemas: &[String],
        contracts: &ContractSet<Self>,
    ) -> impl Future<Output = Result<(Vec<LiveTable>, TypeMap<Self>)>> + Send {
        async move {
            let live = Self::introspect(pool, schemas, contracts).await?;
            let types = Self::resolve_types(pool, &live).await?;
            Ok((live, types))
        }
    }

    /// A cheap change signal: per schema of `schemas`, a short digest that changes whenever
    /// a contracted relation's introspected definition can have changed (PostgreSQL: the
    /// row versions of the catalog rows introspection reads; SQLite: `PRAGMA
    /// schema_version`). A pass introspects only the schemas whose digest moved. Every
    /// requested schema is in the answer (one without contracted relations too).
    /// `Ok(None)`: this backend has no trustworthy signal, every pass introspects every
    /// tenant (MySQL: `information_schema` exposes no row versions, and its table
    /// timestamps miss column changes that need no table rebuild).
    fn signatures(
        pool: &Pool<Self>,
        schemas: &[String],
        contracts: &ContractSet<Self>,
    ) -> impl Future<Output = Result<Option<Signatures>>> + Send {
        let _ = (pool, schemas, contracts);
        async { Ok(None) }
    }

    /// [`Backend::signatures`], unless nothing they are read from changed since `since`
    /// (a mark an earlier call returned with its signatures): then only the new mark. A
    /// whole-catalog test, cheaper than the signatures of a large fleet (PostgreSQL: one
    /// scan of each catalog the signatures read, `ARCHITECTURE.md` D8). The default has no
    /// mark and always reads the signatures.
    fn signatures_since(
        pool: &Pool<Self>,
        schemas: &[String],
        contracts: &ContractSet<Self>,
        since: Option<&CatalogMark>,
    ) -> impl Future<Output = Result<Option<SignatureRead>>> + Send {
        let _ = since;
        async move {
            Ok(Self::signatures(pool, schemas, contracts)
                .await?
                .map(|signatures| SignatureRead::Read(signatures, None)))
        }
    }

    /// A cheaper signal than [`Backend::signatures`] where a DDL event trigger keeps a
    /// version per schema (PostgreSQL with `install_ddl_trigger`): every schema's version,
    /// in one small read. `Ok(None)`: no such trigger, or it cannot be trusted now
    /// (missing, disabled, altered); the pass reads the catalog signatures instead.
    fn schema_versions(
        pool: &Pool<Self>,
    ) -> impl Future<Output = Result<Option<SchemaVersions>>> + Send {
        let _ = pool;
        async { Ok(None) }
    }

    /// sqlx's verdict plus this dialect's extra rules, for one column.
    fn fit(check: &TypeCheck<Self>, live: &LiveColumn, types: &TypeMap<Self>) -> TypeFit;

    /// Names of the schemas/databases whose name is `LIKE pattern`, sorted.
    fn schemas_like(
        pool: &Pool<Self>,
        pattern: &str,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// Runs a registry query that returns one text column of tenant names.
    fn registry_names(
        pool: &Pool<Self>,
        sql: &'static str,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// Where `pool` points, for messages a person reads (`postgres://db1:5432/app`, a
    /// SQLite file path); never includes a password.
    fn describe_pool(pool: &Pool<Self>) -> String;

    /// Creates a pool-wide audit table if it is missing, once per pool before its first
    /// apply (PostgreSQL: one table for every tenant schema). Where the audit table lives in
    /// each tenant's database (MySQL, SQLite), `apply` creates it next to the audit row and
    /// this does nothing.
    fn ensure_audit_table(
        pool: &Pool<Self>,
        audit: &AuditConfig,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (pool, audit);
        async { Ok(()) }
    }

    /// Settles or resumes the audit rows an interrupted apply left `pending` in `tenants`,
    /// with `options`' audit table, timeouts and retries. MySQL writes the row before DDL
    /// that commits implicitly: each such row is judged against the tenant's live schema
    /// under the tenant's lock. PostgreSQL resumes a multi-transaction plan stopped between
    /// its transactions where it stopped (or settles it when it can no longer run). Rows
    /// become `applied`, `failed` or `unknown`, with the evidence. Best effort: a failure
    /// is logged and the row stays pending for the next run. SQLite, whose audit row
    /// commits with the DDL, has none and does nothing.
    fn reconcile_audits(
        pool: &Pool<Self>,
        tenants: &[TenantName],
        contracts: &ContractSet<Self>,
        options: &crate::remediation::ApplyOptions,
    ) -> impl Future<Output = Vec<ReconciledAudit>> + Send {
        let _ = (pool, tenants, contracts, options);
        async { Vec::new() }
    }

    /// [`Self::reconcile_audits`] at start-up, in the guard's first pass (which `start`
    /// awaits, every gate closed until it ends): settles what can be settled now and
    /// returns the tenants whose reconcile is left to the next pass. By default everything
    /// is reconciled (MySQL's reconcile only judges a row against the live schema).
    /// PostgreSQL reconciles nothing here: its reconcile resumes multi-transaction plans
    /// whose next transaction may scan a table (`VALIDATE`) or wait for a lock, so every
    /// tenant with one is returned.
    fn reconcile_at_start(
        pool: &Pool<Self>,
        tenants: &[TenantName],
        contracts: &ContractSet<Self>,
        options: &crate::remediation::ApplyOptions,
    ) -> impl Future<Output = Vec<TenantName>> + Send {
        async move {
            Self::reconcile_audits(pool, tenants, contracts, options).await;
            Vec::new()
        }
    }

    /// Where the fleet has the column types the contracts' DDL names without a schema,
    /// looked up once per plan run for the tenants `schemas` of `pool` (PostgreSQL, whose
    /// remediation session resolves only qualified custom types). Elsewhere nothing is
    /// looked up and types are written as named.
    fn type_catalog(
        pool: &Pool<Self>,
        schemas: &[String],
        contracts: &ContractSet<Self>,
    ) -> impl Future<Output = Result<TypeCatalog>> + Send {
        let _ = (pool, schemas, contracts);
        async { Ok(TypeCatalog::new()) }
    }

    /// The row estimate of each `(schema, table)` of `tables`, in order (`None`: not
    /// known), for choosing online type changes (PostgreSQL: `pg_class.reltuples`).
    /// Backends without an online procedure look nothing up and answer no estimate.
    fn row_estimates(
        pool: &Pool<Self>,
        tables: &[(String, String)],
    ) -> impl Future<Output = Result<Vec<Option<u64>>>> + Send {
        let _ = pool;
        let none = vec![None; tables.len()];
        async { Ok(none) }
    }

    /// Why the online type change would refuse each `(schema, table, column)` of
    /// `columns`, in order (`None`: it would run it), asked before planning one.
    /// Backends without an online procedure are never asked; they refuse nothing.
    fn online_refusals(
        pool: &Pool<Self>,
        columns: &[(String, String, String)],
    ) -> impl Future<Output = Result<Vec<Option<&'static str>>>> + Send {
        let _ = pool;
        let none = vec![None; columns.len()];
        async { Ok(none) }
    }

    /// Applies one tenant's allowed steps: one transaction, timeouts, the per-tenant
    /// advisory lock, the fingerprint re-check under the lock, the steps and the audit row.
    fn apply(
        pool: &Pool<Self>,
        job: &ApplyJob<'_, Self>,
    ) -> impl Future<Output = Result<AuditRecord>> + Send {
        let _ = (pool, job);
        async {
            Err(Error::Unsupported {
                dialect: Self::DIALECT,
                what: "remediation",
            })
        }
    }
}
