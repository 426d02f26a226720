//! The change signals a sweep chooses its tenants by, and reading them.
//!
//! A sweep's signal, per pool: the DDL trigger's schema versions
//! ([`crate::backend::Backend::schema_versions`]: one small table) when they can be trusted,
//! else each tenant's catalog signature ([`crate::backend::Backend::signatures`]: a digest
//! of the catalog rows introspection reads), unless the catalog mark read in front of them
//! ([`crate::backend::Backend::signatures_since`]) finds that no catalog row they are read
//! from changed since the last read: then the signatures of that read stand. The versions
//! are trusted only when the last pass recorded them under the same base: the same trigger
//! token (both triggers enabled and unaltered since, the same version table) and the same
//! versions of every schema that is not a tenant of the pool (a shared enum or domain in
//! `public`, a fixed schema, a table a tenant's view or key reads: a change there moves no
//! tenant's version). Any other sweep falls back to the catalog signatures and records the
//! versions for the next.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fmt::Write as _;
use std::sync::Arc;

use contract_core::TenantName;
use sha2::{Digest as _, Sha256};
use sqlx::Pool;

use super::{Guard, PassState};
use crate::backend::{CatalogMark, SchemaVersions, SignatureRead, Signatures};
use crate::control::ControlStore;
use crate::error::{Error, error_chain};

/// The change signal a pass relied on to choose the tenants it introspected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChangeSignal {
    /// Every tenant introspected: at start-up, every `full_check_every`-th sweep
    /// ([`super::GuardBuilder::full_check_every`]), and when the backend has no trustworthy
    /// cheap signal (MySQL) or reading it failed.
    #[default]
    FullCheck,
    /// One catalog query read each tenant's signature (PostgreSQL: catalog row versions;
    /// SQLite: `PRAGMA schema_version`); only tenants whose signature moved were
    /// introspected.
    CatalogSignature,
    /// Only the tenants the DDL event trigger named were introspected.
    Targeted,
    /// One scan of the catalogs the signatures are read from found no row written or
    /// removed since the signatures were last read (PostgreSQL, `ARCHITECTURE.md` D8):
    /// every signature stands, and only tenants new or due for a retry were introspected.
    /// Any change in those catalogs, in any schema, makes the sweep read the signatures
    /// ([`ChangeSignal::CatalogSignature`]).
    CatalogQuiet,
    /// One small read of the versions the DDL event trigger keeps per schema
    /// (PostgreSQL, [`super::install_ddl_trigger`]); only tenants whose version moved
    /// were introspected. Used while both event triggers are enabled and unaltered and no
    /// schema other than a tenant's changed since the last pass; any other sweep falls
    /// back to [`ChangeSignal::CatalogSignature`].
    SchemaVersion,
}

impl ChangeSignal {
    /// How far a pass relied on the database to say what changed (weakest first).
    pub(super) fn trust(self) -> u8 {
        match self {
            Self::FullCheck => 0,
            Self::CatalogSignature => 1,
            Self::CatalogQuiet => 2,
            Self::SchemaVersion => 3,
            Self::Targeted => 4,
        }
    }
}

impl fmt::Display for ChangeSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::FullCheck => "full check (every tenant introspected)",
            Self::CatalogSignature => {
                "catalog signature (only tenants whose catalog rows changed introspected)"
            }
            Self::Targeted => "targeted (only the tenants the DDL trigger named introspected)",
            Self::CatalogQuiet => {
                "catalog quiet (no catalog row changed since the signatures were read; kept)"
            }
            Self::SchemaVersion => {
                "schema version (only tenants whose DDL trigger version moved introspected)"
            }
        })
    }
}

/// The most reads a pool's catalog mark is skipped for in a row: 2^4 - 1.
const MAX_MARK_BACKOFF: u32 = 4;

/// A pool's catalog mark between passes: the last mark read with the signatures read in its
/// snapshot, and when to read the mark again. Where the catalogs change between every two
/// sweeps (DDL elsewhere, `TRUNCATE`, a materialized view refreshed) the mark only adds its
/// scan to the signatures, so after it moved on consecutive reads the next reads skip it:
/// none after the first move, then 1, 3, 7 and at most 15; one unchanged mark ends that.
#[derive(Debug, Default)]
pub(super) struct PoolMark {
    kept: Option<(CatalogMark, Arc<Signatures>)>,
    /// Compared reads in a row that found the catalogs changed.
    moved_in_a_row: u32,
    /// Reads left that skip the mark.
    skip: u32,
}

impl PoolMark {
    /// Whether this read asks about the mark (a skipped turn is counted).
    fn take_turn(&mut self) -> bool {
        if self.skip == 0 {
            return true;
        }
        self.skip -= 1;
        false
    }

    /// A read compared the catalogs with the kept mark: `moved` or not.
    fn compared(&mut self, moved: bool) {
        if moved {
            self.moved_in_a_row = (self.moved_in_a_row + 1).min(MAX_MARK_BACKOFF + 1);
            self.skip = (1 << (self.moved_in_a_row - 1)) - 1;
        } else {
            self.moved_in_a_row = 0;
            self.skip = 0;
        }
    }
}

impl<DB: ControlStore> Guard<DB> {
    /// The signatures of `wanted` and of the contracts' fixed schemas, and whether they are
    /// the ones kept from an earlier pass because the catalogs did not change since
    /// (`marked`: ask the backend about the pool's catalog mark when it is the mark's turn,
    /// and keep the new one); `None` when the backend has none or reading them failed
    /// (logged).
    pub(super) async fn read_signatures(
        &self,
        state: &mut PassState,
        (pool, pool_key): (&Pool<DB>, &str),
        wanted: &[&TenantName],
        marked: bool,
    ) -> Option<(Arc<Signatures>, bool)> {
        let inner = &self.inner;
        let mut schemas: Vec<String> = wanted.iter().map(ToString::to_string).collect();
        schemas.extend(inner.contracts.fixed_schemas());
        let use_mark = marked
            && state
                .catalog_marks
                .entry(pool_key.to_owned())
                .or_default()
                .take_turn();
        if !use_mark {
            return self.read_signatures_alone(pool, &schemas).await;
        }
        // The kept signatures answer for the schemas they were read for, not for a tenant
        // added since.
        let since = state
            .catalog_marks
            .get(pool_key)
            .and_then(|m| m.kept.as_ref())
            .filter(|(_, kept)| schemas.iter().all(|s| kept.contains_key(s)))
            .map(|(mark, _)| mark.clone());
        let read = self
            .within_check_timeout(
                pool,
                DB::signatures_since(pool, &schemas, &inner.contracts, since.as_ref()),
            )
            .await;
        let pool_mark = state.catalog_marks.get_mut(pool_key)?;
        match read {
            Ok(Some(SignatureRead::Unchanged(mark))) => {
                pool_mark.compared(false);
                let (kept_mark, kept) = pool_mark.kept.as_mut()?;
                *kept_mark = mark;
                Some((Arc::clone(kept), true))
            }
            Ok(Some(SignatureRead::Read(signatures, mark))) => {
                let signatures = Arc::new(signatures);
                if since.is_some() {
                    pool_mark.compared(true);
                }
                pool_mark.kept = mark.map(|mark| (mark, Arc::clone(&signatures)));
                Some((signatures, false))
            }
            Ok(None) => None,
            Err(error) => {
                // The mark's scans on top of the signatures may be what failed (a statement
                // or check timeout, a read cancelled on a standby): back off from the mark
                // and read the signatures alone, so the sweep does not become a full check.
                tracing::warn!(pool = pool_key, error = %error_chain(&error), "catalog mark not read; reading the catalog signatures alone");
                pool_mark.compared(true);
                pool_mark.kept = None;
                self.read_signatures_alone(pool, &schemas).await
            }
        }
    }

    /// `read`, or [`Error::CheckTimeout`] once the guard's check timeout has passed.
    pub(super) async fn within_check_timeout<T>(
        &self,
        pool: &Pool<DB>,
        read: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let after = self.inner.check_timeout;
        tokio::time::timeout(after, read).await.unwrap_or_else(|_| {
            Err(Error::CheckTimeout {
                pool: DB::describe_pool(pool),
                after,
            })
        })
    }

    /// The signatures of `schemas` without the mark; `None` when the backend has none or
    /// reading them failed (logged).
    async fn read_signatures_alone(
        &self,
        pool: &Pool<DB>,
        schemas: &[String],
    ) -> Option<(Arc<Signatures>, bool)> {
        let read = self
            .within_check_timeout(pool, DB::signatures(pool, schemas, &self.inner.contracts))
            .await;
        match read {
            Ok(signatures) => signatures.map(|s| (Arc::new(s), false)),
            Err(error) => {
                tracing::warn!(pool = %DB::describe_pool(pool), error = %error_chain(&error), "catalog signatures not read; this pass introspects every tenant of the pool");
                None
            }
        }
    }

    /// The DDL trigger's schema versions; `None` when the backend has none, the trigger
    /// cannot be trusted now, or reading them failed (logged).
    pub(super) async fn read_versions(&self, pool: &Pool<DB>) -> Option<SchemaVersions> {
        let read = self
            .within_check_timeout(pool, DB::schema_versions(pool))
            .await;
        match read {
            Ok(versions) => versions,
            Err(error) => {
                tracing::warn!(pool = %DB::describe_pool(pool), error = %error_chain(&error), "schema versions not read; this pass reads the catalog signatures");
                None
            }
        }
    }

    /// Whether a contracts' fixed schema (shared by every tenant of the pool) changed.
    pub(super) fn fixed_moved(
        &self,
        state: &PassState,
        pool: &Pool<DB>,
        fresh: &Signatures,
    ) -> bool {
        self.inner.contracts.fixed_schemas().iter().any(|schema| {
            needs_look(
                state.fixed_signatures.get(&fixed_key::<DB>(pool, schema)),
                fresh.get(schema),
            )
        })
    }

    pub(super) fn keep_fixed(&self, state: &mut PassState, pool: &Pool<DB>, fresh: &Signatures) {
        for schema in self.inner.contracts.fixed_schemas() {
            if let Some(signature) = fresh.get(&schema) {
                state
                    .fixed_signatures
                    .insert(fixed_key::<DB>(pool, &schema), signature.clone());
            }
        }
    }
}

/// Whether a tenant must be introspected: no stored signature, no fresh one, an
/// untrusted one (`None`), or a changed one.
pub(super) fn needs_look(stored: Option<&Option<String>>, fresh: Option<&Option<String>>) -> bool {
    match (stored, fresh) {
        (Some(Some(stored)), Some(Some(fresh))) => stored != fresh,
        _ => true,
    }
}

/// A tenant's version in `versions` (`""`: no DDL since the trigger was installed).
pub(super) fn version_of<'a>(
    versions: Option<&'a HashMap<String, String>>,
    tenant: &str,
) -> &'a str {
    versions
        .and_then(|v| v.get(tenant))
        .map_or("", String::as_str)
}

pub(super) fn store_version(state: &mut PassState, tenant: &str, version: &str) {
    match state.versions.get_mut(tenant) {
        Some(stored) if stored == version => {}
        Some(stored) => version.clone_into(stored),
        None => {
            state.versions.insert(tenant.to_owned(), version.to_owned());
        }
    }
}

/// What a pool's tenant versions are recorded under: the trigger's token and a digest of
/// the versions of every schema that is not one of the pool's tenants.
pub(super) fn version_base(read: &SchemaVersions, tenants: &[TenantName]) -> String {
    let tenants: HashSet<&str> = tenants.iter().map(TenantName::as_str).collect();
    let mut others: Vec<(&String, &String)> = read
        .versions
        .iter()
        .filter(|(schema, _)| !tenants.contains(schema.as_str()))
        .collect();
    others.sort_unstable();
    let mut digest = Sha256::new();
    for (schema, version) in others {
        digest.update(schema.as_bytes());
        digest.update([0x1f]);
        digest.update(version.as_bytes());
        digest.update([0x1e]);
    }
    let digest = digest.finalize();
    let mut base = read.token.clone();
    base.push('|');
    for byte in digest {
        let _ = write!(base, "{byte:02x}");
    }
    base
}

/// Where a fixed schema's signature is kept: per pool (each pool is its own server or file).
pub(super) fn fixed_key<DB: ControlStore>(pool: &Pool<DB>, schema: &str) -> String {
    format!("{}\u{1f}{schema}", DB::describe_pool(pool))
}

#[cfg(test)]
mod tests {
    use super::PoolMark;

    /// Which of `reads` consecutive reads ask about the mark when every compared one finds
    /// the catalogs `moved`.
    fn turns(mark: &mut PoolMark, reads: usize, moved: bool) -> String {
        (0..reads)
            .map(|_| {
                if mark.take_turn() {
                    mark.compared(moved);
                    'M'
                } else {
                    '.'
                }
            })
            .collect()
    }

    #[test]
    fn a_mark_that_keeps_moving_is_read_ever_more_rarely_and_one_quiet_read_resets_it() {
        let mut mark = PoolMark::default();
        assert_eq!(
            turns(&mut mark, 40, true),
            "MM.M...M.......M...............M........"
        );
        let mut quiet = PoolMark::default();
        assert_eq!(turns(&mut quiet, 5, false), "MMMMM");
        // The skips due are taken; the next read finds the catalogs quiet and ends the
        // back-off.
        let mut mark = PoolMark::default();
        assert_eq!(turns(&mut mark, 4, true), "MM.M");
        assert_eq!(turns(&mut mark, 4, false), "...M");
        assert_eq!(turns(&mut mark, 3, false), "MMM");
    }
}
