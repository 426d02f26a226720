//! What each database backend provides to the guard: bulk introspection, type
//! resolution and the per-dialect type fit. Implemented directly on sqlx's marker types
//! (`sqlx::Postgres`, `sqlx::MySql`, `sqlx::Sqlite`).

use std::collections::HashMap;
use std::future::Future;

use contract_core::{Dialect, LiveColumn, LiveTable, TypeFit};
use sqlx::{Database, Pool};

use crate::apply::ApplyJob;
use crate::audit::{AuditConfig, AuditRecord};
use crate::contracts::ContractSet;
use crate::error::{Error, Result};
use crate::type_check::TypeCheck;

/// Live type key → the type info row decoding sees for it (DESIGN D1, D3).
pub type TypeMap<DB> = HashMap<String, <DB as Database>::TypeInfo>;

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

    /// `true` when the audit table lives in each tenant's database (MySQL, SQLite), so it
    /// is ensured per tenant; `false` when one table serves a whole pool (PostgreSQL).
    const AUDIT_TABLE_PER_TENANT: bool = true;

    /// Creates the audit table if it is missing (for a tenant on MySQL/SQLite, where the
    /// table lives in the tenant's database).
    fn ensure_audit_table(
        pool: &Pool<Self>,
        audit: &AuditConfig,
        tenant: &str,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (pool, audit, tenant);
        async {
            Err(Error::Unsupported {
                dialect: Self::DIALECT,
                what: "remediation",
            })
        }
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
