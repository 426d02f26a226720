//! Which tenants exist, and which pool reaches each of them: [`Tenants`] (where names come
//! from) and [`TenantDirectory`] (tenant → pool, with rejected and duplicate names).

mod source;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use contract_core::{IdentError, TenantName};
use sqlx::{Database, Pool};

use crate::backend::Backend;
use crate::error::{Error, Result, error_chain};

use source::{Discovery, Fixed};
pub(crate) use source::{Listing, Source};

#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use crate::sqlite::{ConnectionBudget, sqlite_tenant_files, sqlite_tenant_files_with};

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

    pub(crate) fn describe(&self) -> String {
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

/// Tenant → pool: tenants may live on several servers (see `ARCHITECTURE.md` D10). The
/// directory remembers where its tenants came from, so a running guard lists them again on
/// every pass ([`TenantDirectory::refresh`]): tenants created later are picked up, dropped
/// ones retired, without a restart (`ARCHITECTURE.md` D13).
#[derive(Debug)]
pub struct TenantDirectory<DB: Database> {
    /// Each source with what it listed last.
    sources: Vec<(Arc<dyn Source<DB>>, Listing<DB>)>,
    groups: Vec<(Pool<DB>, Vec<TenantName>)>,
    /// Tenant → index of its group in `groups` (duplicates are in neither).
    index: HashMap<TenantName, usize>,
    rejected: Vec<(String, IdentError)>,
    duplicates: Vec<DuplicateTenant>,
}

impl<DB: Database> Clone for TenantDirectory<DB> {
    fn clone(&self) -> Self {
        Self {
            sources: self.sources.clone(),
            groups: self.groups.clone(),
            index: self.index.clone(),
            rejected: self.rejected.clone(),
            duplicates: self.duplicates.clone(),
        }
    }
}

impl<DB: Database> Default for TenantDirectory<DB> {
    fn default() -> Self {
        Self {
            sources: Vec::new(),
            groups: Vec::new(),
            index: HashMap::new(),
            rejected: Vec::new(),
            duplicates: Vec::new(),
        }
    }
}

/// What a [`TenantDirectory::refresh`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DirectoryChange {
    /// Tenants listed now and not before.
    pub added: Vec<TenantName>,
    /// Tenants listed before and not now (sources that failed to list keep their tenants).
    pub removed: Vec<TenantName>,
    /// Sources that could not be listed, with the reason (their tenants are kept as they
    /// were: an unreachable server never retires its tenants).
    pub failed: Vec<String>,
}

impl<DB: Backend> TenantDirectory<DB> {
    /// An empty directory.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Discovers the tenants of `source` on `pool` and adds them; [`refresh`] lists them
    /// again with the same query.
    ///
    /// Discovered names that are not valid tenant names are not queried: they are kept as
    /// [`TenantDirectory::rejected`] and reported as unreachable with the reason.
    ///
    /// # Errors
    ///
    /// [`Error::Ident`] for an invalid name in an explicit list (no SQL is sent),
    /// [`Error::Database`] when discovery fails, [`Error::NoTenants`] when it finds none.
    ///
    /// [`refresh`]: TenantDirectory::refresh
    pub async fn discover(self, pool: &Pool<DB>, source: &Tenants) -> Result<Self> {
        if let Tenants::List(names) = source {
            for name in names {
                TenantName::new(name.as_str())?;
            }
        }
        let discovery = Discovery {
            pool: pool.clone(),
            tenants: source.clone(),
        };
        let listing = discovery.list().await?;
        if listing.groups.iter().all(|(_, t)| t.is_empty()) && listing.rejected.is_empty() {
            return Err(Error::NoTenants {
                source_description: source.describe(),
            });
        }
        Ok(self.with_source(Arc::new(discovery), listing))
    }

    /// Adds tenants reached through `pool` (listed the same on every refresh).
    ///
    /// A name already reached through another pool (or file) is a configuration error,
    /// never last-wins: it is removed from both and kept in [`TenantDirectory::duplicates`].
    #[must_use]
    pub fn add(self, pool: Pool<DB>, tenants: Vec<TenantName>) -> Self {
        let fixed = Fixed { pool, tenants };
        let listing = Listing {
            groups: vec![(fixed.pool.clone(), fixed.tenants.clone())],
            rejected: Vec::new(),
        };
        self.with_source(Arc::new(fixed), listing)
    }

    /// Adds a source with what it listed.
    #[must_use]
    pub(crate) fn with_source(mut self, source: Arc<dyn Source<DB>>, listing: Listing<DB>) -> Self {
        self.sources.push((source, listing));
        self.rebuild();
        self
    }

    /// Lists every source again (one query per discovery pool, one read per SQLite
    /// directory) and returns the directory as it is now, with what changed. A source that
    /// cannot be listed keeps what it listed last.
    pub async fn refresh(&self) -> (Self, DirectoryChange) {
        let before: BTreeSet<&TenantName> = self.all_names().collect();
        let mut next = Self::default();
        let mut change = DirectoryChange::default();
        for (source, listing) in &self.sources {
            let listing = match source.list().await {
                Ok(listing) => listing,
                Err(error) => {
                    let error = format!("{}: {}", source.describe(), error_chain(&error));
                    tracing::warn!(%error, "tenant source could not be listed; its tenants are kept");
                    change.failed.push(error);
                    listing.clone()
                }
            };
            next.sources.push((Arc::clone(source), listing));
        }
        next.rebuild();
        let after: BTreeSet<&TenantName> = next.all_names().collect();
        change.added = after.difference(&before).map(|t| (*t).clone()).collect();
        change.removed = before.difference(&after).map(|t| (*t).clone()).collect();
        (next, change)
    }

    /// Every name the sources list, duplicates included.
    fn all_names(&self) -> impl Iterator<Item = &TenantName> {
        self.groups
            .iter()
            .flat_map(|(_, t)| t)
            .chain(self.duplicates.iter().map(|d| &d.tenant))
    }

    /// Groups, index, rejected names and duplicates from the sources' listings.
    fn rebuild(&mut self) {
        self.groups.clear();
        self.index.clear();
        self.rejected.clear();
        self.duplicates.clear();
        let listings: Vec<Listing<DB>> = self.sources.iter().map(|(_, l)| l.clone()).collect();
        for listing in listings {
            self.rejected.extend(listing.rejected);
            for (pool, tenants) in listing.groups {
                self.add_group(pool, tenants);
            }
        }
    }

    /// Adds one pool's tenants; a name another group has is moved to the duplicates.
    fn add_group(&mut self, pool: Pool<DB>, mut tenants: Vec<TenantName>) {
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

    /// Where `tenant` lives, as [`crate::backend::Backend::describe_pool`] says.
    #[must_use]
    pub fn location_of(&self, tenant: &str) -> Option<String> {
        self.pool_of(tenant).map(DB::describe_pool)
    }
}
