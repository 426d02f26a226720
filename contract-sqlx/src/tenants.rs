//! Which tenants exist, and which pool reaches each of them.

use std::any::Any;
use std::sync::Arc;

use contract_core::{IdentError, TenantName};
use sqlx::{Database, Pool};

use crate::backend::Backend;
use crate::error::{Error, Result};

/// Where tenant names come from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tenants {
    /// Every schema (PostgreSQL) or database (MySQL) whose name is `LIKE` the pattern.
    SchemasLike(String),
    /// An explicit list (validated up front: one bad name fails the whole list).
    List(Vec<String>),
    /// A query returning one text column of tenant names (a tenant registry table).
    Query(&'static str),
}

impl Tenants {
    /// Schemas or databases `LIKE pattern`, for example `tenant_%`.
    #[must_use]
    pub fn schemas_like(pattern: impl Into<String>) -> Self {
        Tenants::SchemasLike(pattern.into())
    }

    /// An explicit list of tenant names.
    pub fn list<I: IntoIterator<Item = S>, S: Into<String>>(names: I) -> Self {
        Tenants::List(names.into_iter().map(Into::into).collect())
    }

    /// A registry query, for example `SELECT name FROM public.tenants WHERE active`.
    #[must_use]
    pub fn query(sql: &'static str) -> Self {
        Tenants::Query(sql)
    }

    fn describe(&self) -> String {
        match self {
            Tenants::SchemasLike(p) => format!("schemas like `{p}`"),
            Tenants::List(_) => "the tenant list".into(),
            Tenants::Query(q) => format!("registry query `{q}`"),
        }
    }
}

/// Tenant → pool: tenants may live on several servers (DESIGN D10).
#[derive(Debug)]
pub struct TenantDirectory<DB: Database> {
    groups: Vec<(Pool<DB>, Vec<TenantName>)>,
    rejected: Vec<(String, IdentError)>,
    /// State the pools' hooks hold weakly, alive as long as the directory (the SQLite
    /// connection budget).
    kept_alive: Vec<Arc<dyn Any + Send + Sync>>,
}

impl<DB: Database> Clone for TenantDirectory<DB> {
    fn clone(&self) -> Self {
        Self {
            groups: self.groups.clone(),
            rejected: self.rejected.clone(),
            kept_alive: self.kept_alive.clone(),
        }
    }
}

impl<DB: Database> Default for TenantDirectory<DB> {
    fn default() -> Self {
        Self {
            groups: Vec::new(),
            rejected: Vec::new(),
            kept_alive: Vec::new(),
        }
    }
}

impl<DB: Backend> TenantDirectory<DB> {
    /// An empty directory.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Discovers the tenants of `source` on `pool` and adds them.
    ///
    /// Discovered names that are not valid tenant names are not queried: they are kept as
    /// [`TenantDirectory::rejected`] and reported as unreachable with the reason.
    ///
    /// # Errors
    ///
    /// [`Error::Ident`] for an invalid name in an explicit list (no SQL is sent),
    /// [`Error::Database`] when discovery fails, [`Error::NoTenants`] when it finds none.
    pub async fn discover(mut self, pool: &Pool<DB>, source: &Tenants) -> Result<Self> {
        let names = match source {
            Tenants::List(names) => {
                let tenants = names
                    .iter()
                    .map(|n| TenantName::new(n.as_str()))
                    .collect::<Result<Vec<_>, _>>()?;
                return Ok(self.add(pool.clone(), tenants));
            }
            Tenants::SchemasLike(pattern) => DB::schemas_like(pool, pattern).await?,
            Tenants::Query(sql) => DB::registry_names(pool, sql).await?,
        };
        if names.is_empty() {
            return Err(Error::NoTenants {
                source_description: source.describe(),
            });
        }
        let mut tenants = Vec::with_capacity(names.len());
        for name in names {
            match TenantName::new(name.as_str()) {
                Ok(t) => tenants.push(t),
                Err(e) => self.rejected.push((name.escape_debug().to_string(), e)),
            }
        }
        Ok(self.add(pool.clone(), tenants))
    }

    /// Adds tenants reached through `pool`.
    #[must_use]
    pub fn add(mut self, pool: Pool<DB>, mut tenants: Vec<TenantName>) -> Self {
        tenants.sort();
        tenants.dedup();
        self.groups.push((pool, tenants));
        self
    }

    /// Records a discovered name that is not a valid tenant name (never queried).
    #[must_use]
    #[cfg(feature = "sqlite")]
    pub(crate) fn reject(mut self, name: &str, error: IdentError) -> Self {
        self.rejected.push((name.escape_debug().to_string(), error));
        self
    }

    /// Keeps `state` alive as long as the directory (and its clones).
    #[must_use]
    #[cfg(feature = "sqlite")]
    pub(crate) fn keep_alive(mut self, state: Arc<dyn Any + Send + Sync>) -> Self {
        self.kept_alive.push(state);
        self
    }

    /// Pools with the tenants they reach.
    #[must_use]
    pub fn groups(&self) -> &[(Pool<DB>, Vec<TenantName>)] {
        &self.groups
    }

    /// Discovered names that were rejected, with the reason.
    #[must_use]
    pub fn rejected(&self) -> &[(String, IdentError)] {
        &self.rejected
    }

    /// Every tenant, sorted.
    #[must_use]
    pub fn tenants(&self) -> Vec<&TenantName> {
        let mut all: Vec<&TenantName> = self.groups.iter().flat_map(|(_, t)| t).collect();
        all.sort();
        all
    }

    /// The pool that reaches `tenant`.
    #[must_use]
    pub fn pool_of(&self, tenant: &str) -> Option<&Pool<DB>> {
        self.groups
            .iter()
            .find(|(_, ts)| ts.iter().any(|t| t.as_str() == tenant))
            .map(|(p, _)| p)
    }
}
