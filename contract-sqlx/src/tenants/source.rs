//! Where a directory's tenants come from, listed again on every refresh (each guard pass):
//! a discovery query, a fixed list, or a directory of SQLite files.

use std::fmt;

use contract_core::{IdentError, TenantName};
use futures_util::future::BoxFuture;
use sqlx::{Database, Pool};

use super::Tenants;
use crate::backend::Backend;
use crate::error::Result;

/// What one source lists: pools with the tenants they reach, and names it rejected.
#[derive(Debug)]
pub(crate) struct Listing<DB: Database> {
    pub groups: Vec<(Pool<DB>, Vec<TenantName>)>,
    pub rejected: Vec<(String, IdentError)>,
}

impl<DB: Database> Clone for Listing<DB> {
    fn clone(&self) -> Self {
        Self {
            groups: self.groups.clone(),
            rejected: self.rejected.clone(),
        }
    }
}

/// A source of tenant names that can be listed again.
pub(crate) trait Source<DB: Database>: Send + Sync + fmt::Debug {
    /// Lists the tenants now (one query, or one directory read).
    fn list(&self) -> BoxFuture<'_, Result<Listing<DB>>>;
    /// The source, as a person reads it (`schemas like 'tenant_%' on postgres://…`).
    fn describe(&self) -> String;
}

/// Tenants discovered on a pool by pattern, list or registry query.
#[derive(Debug)]
pub(crate) struct Discovery<DB: Database> {
    pub pool: Pool<DB>,
    pub tenants: Tenants,
}

impl<DB: Backend> Source<DB> for Discovery<DB> {
    fn list(&self) -> BoxFuture<'_, Result<Listing<DB>>> {
        Box::pin(async move {
            let names = match &self.tenants {
                Tenants::List(names) => names.clone(),
                Tenants::SchemasLike(pattern) => DB::schemas_like(&self.pool, pattern).await?,
                Tenants::Query(sql) => DB::registry_names(&self.pool, sql).await?,
            };
            let mut tenants = Vec::with_capacity(names.len());
            let mut rejected = Vec::new();
            for name in names {
                match TenantName::new(name.as_str()) {
                    Ok(t) => tenants.push(t),
                    Err(e) => rejected.push((name.escape_debug().to_string(), e)),
                }
            }
            Ok(Listing {
                groups: vec![(self.pool.clone(), tenants)],
                rejected,
            })
        })
    }

    fn describe(&self) -> String {
        format!(
            "{} on {}",
            self.tenants.describe(),
            DB::describe_pool(&self.pool)
        )
    }
}

/// Tenants added by name on a pool: the same every time.
#[derive(Debug)]
pub(crate) struct Fixed<DB: Database> {
    pub pool: Pool<DB>,
    pub tenants: Vec<TenantName>,
}

impl<DB: Backend> Source<DB> for Fixed<DB> {
    fn list(&self) -> BoxFuture<'_, Result<Listing<DB>>> {
        let listing = Listing {
            groups: vec![(self.pool.clone(), self.tenants.clone())],
            rejected: Vec::new(),
        };
        Box::pin(async move { Ok(listing) })
    }

    fn describe(&self) -> String {
        format!("tenants added on {}", DB::describe_pool(&self.pool))
    }
}
