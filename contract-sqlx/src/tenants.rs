//! Which tenants exist, and which pool reaches each of them: [`Tenants`] (where names come
//! from) and [`TenantDirectory`] (tenant → pool, with rejected and duplicate names).

use std::collections::HashMap;
use std::fmt;

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

/// A tenant name reached through more than one pool or file (a tenant being moved between
/// servers, `tenant_1.db` next to `tenant_1.sqlite`): a configuration error. The name is
/// never checked, remediated or opened through either: its gate stays closed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DuplicateTenant {
    /// The tenant.
    pub tenant: TenantName,
    /// Where it was found (pool addresses or file paths), in the order they were added.
    pub found_in: Vec<String>,
}

impl fmt::Display for DuplicateTenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "duplicate tenant `{}`: found in {}; a tenant must be reached through exactly one \
             pool or file: remove or rename all but one (its gate stays closed until then)",
            self.tenant,
            self.found_in.join(" and ")
        )
    }
}

/// Tenant → pool: tenants may live on several servers (see `ARCHITECTURE.md`).
#[derive(Debug)]
pub struct TenantDirectory<DB: Database> {
    groups: Vec<(Pool<DB>, Vec<TenantName>)>,
    /// Tenant → index of its group in `groups` (duplicates are in neither).
    index: HashMap<TenantName, usize>,
    rejected: Vec<(String, IdentError)>,
    duplicates: Vec<DuplicateTenant>,
    /// State the pools' hooks hold weakly, alive as long as the directory (the SQLite
    /// connection budget).
    kept_alive: Vec<Arc<dyn Any + Send + Sync>>,
}

impl<DB: Database> Clone for TenantDirectory<DB> {
    fn clone(&self) -> Self {
        Self {
            groups: self.groups.clone(),
            index: self.index.clone(),
            rejected: self.rejected.clone(),
            duplicates: self.duplicates.clone(),
            kept_alive: self.kept_alive.clone(),
        }
    }
}

impl<DB: Database> Default for TenantDirectory<DB> {
    fn default() -> Self {
        Self {
            groups: Vec::new(),
            index: HashMap::new(),
            rejected: Vec::new(),
            duplicates: Vec::new(),
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
    ///
    /// A name already reached through another pool (or file) is a configuration error,
    /// never last-wins: it is removed from both and kept in [`TenantDirectory::duplicates`].
    #[must_use]
    pub fn add(mut self, pool: Pool<DB>, mut tenants: Vec<TenantName>) -> Self {
        tenants.sort();
        tenants.dedup();
        let group = self.groups.len();
        let mut here = None;
        let mut describe_here = || here.get_or_insert_with(|| DB::describe_pool(&pool)).clone();
        tenants.retain(|tenant| {
            if let Some(duplicate) = self.duplicates.iter_mut().find(|d| &d.tenant == tenant) {
                duplicate.found_in.push(describe_here());
                return false;
            }
            let Some(other) = self.index.remove(tenant) else {
                self.index.insert(tenant.clone(), group);
                return true;
            };
            let (other_pool, names) = &mut self.groups[other];
            names.retain(|t| t != tenant);
            self.duplicates.push(DuplicateTenant {
                tenant: tenant.clone(),
                found_in: vec![DB::describe_pool(other_pool), describe_here()],
            });
            false
        });
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

    /// Names reached through more than one pool or file (configuration errors; in no group).
    #[must_use]
    pub fn duplicates(&self) -> &[DuplicateTenant] {
        &self.duplicates
    }

    /// Every tenant, sorted.
    #[must_use]
    pub fn tenants(&self) -> Vec<&TenantName> {
        let mut all: Vec<&TenantName> = self.groups.iter().flat_map(|(_, t)| t).collect();
        all.sort();
        all
    }

    /// The pool that reaches `tenant` (`None` for an unknown or duplicate tenant).
    #[must_use]
    pub fn pool_of(&self, tenant: &str) -> Option<&Pool<DB>> {
        let tenant = TenantName::new(tenant).ok()?;
        self.index.get(&tenant).map(|&group| &self.groups[group].0)
    }
}
