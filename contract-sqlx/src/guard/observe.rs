//! What a pass introspects. A full check introspects every tenant; a sweep first asks the
//! backend for each tenant's catalog signature ([`crate::backend::Backend::signatures`]) and
//! introspects only the tenants whose signature moved (and new, dirty, unreachable or
//! retry-due ones), keeping the other tenants' verdicts; a targeted pass introspects only
//! the tenants the DDL listener named. Introspection goes in chunks of at most
//! [`CHUNK`] tenants, so one changed tenant costs a query scoped to it, not a fleet-sized
//! one. Every `full_check_every`-th sweep is a full check, and so is any sweep whose
//! signal is unavailable (MySQL) or fails.

use std::collections::BTreeSet;
use std::fmt;

use contract_core::{TenantName, TenantReport, Verdict};
use sqlx::Pool;

use super::pass::tenant_fingerprint;
use super::{Guard, Observed, PassState, metrics};
use crate::backend::Signatures;
use crate::check::{FleetSnapshot, check_tenant, snapshot};
use crate::control::ControlStore;
use crate::error::{Error, error_chain};
use crate::tenants::TenantDirectory;

/// The most tenants one introspection query covers.
pub(super) const CHUNK: usize = 1_000;

/// Which tenants a pass introspects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Scope {
    /// Every tenant.
    Full,
    /// The tenants whose catalog signature changed (every tenant without a signal).
    Sweep,
    /// Only these (named by the DDL listener), plus tenants not checked yet.
    Targeted(BTreeSet<String>),
}

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
}

impl fmt::Display for ChangeSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::FullCheck => "full check (every tenant introspected)",
            Self::CatalogSignature => {
                "catalog signature (only tenants whose catalog rows changed introspected)"
            }
            Self::Targeted => "targeted (only the tenants the DDL trigger named introspected)",
        })
    }
}

/// One chunk's tenants that changed and drifted, with the snapshot they were checked in.
pub(super) struct ToPlan<DB: ControlStore> {
    pub pool: Pool<DB>,
    pub names: Vec<TenantName>,
    pub reports: Vec<TenantReport>,
    pub snapshot: FleetSnapshot<DB>,
}

/// What a pass's introspection found.
pub(super) struct Observation<DB: ControlStore> {
    /// Tenants re-diffed (their observed state was replaced).
    pub touched: BTreeSet<String>,
    /// The drifted ones among them, by chunk, for planning.
    pub to_plan: Vec<ToPlan<DB>>,
    /// A known tenant's fingerprint changed.
    pub schema_changed: bool,
    /// Tenants introspected.
    pub introspected: usize,
    /// The weakest signal any pool relied on.
    pub signal: ChangeSignal,
}

/// Tenants to re-diff whatever their signature says.
pub(super) struct Forced<'a> {
    pub dirty: &'a BTreeSet<String>,
    pub retry_due: &'a BTreeSet<String>,
}

impl<DB: ControlStore> Guard<DB> {
    /// Introspects what `scope` asks for, pool by pool, and re-diffs the tenants whose
    /// fingerprint changed (or that are forced).
    pub(super) async fn observe(
        &self,
        state: &mut PassState,
        directory: &TenantDirectory<DB>,
        scope: &Scope,
        forced: &Forced<'_>,
    ) -> Observation<DB> {
        let mut observation = Observation {
            touched: BTreeSet::new(),
            to_plan: Vec::new(),
            schema_changed: false,
            introspected: 0,
            signal: match scope {
                Scope::Full => ChangeSignal::FullCheck,
                Scope::Sweep => ChangeSignal::CatalogSignature,
                Scope::Targeted(_) => ChangeSignal::Targeted,
            },
        };
        for (pool, names) in directory.groups() {
            let wanted: Vec<&TenantName> = match scope {
                Scope::Targeted(targets) => names
                    .iter()
                    .filter(|t| {
                        targets.contains(t.as_str()) || !state.observed.contains_key(t.as_str())
                    })
                    .collect(),
                Scope::Full | Scope::Sweep => names.iter().collect(),
            };
            if wanted.is_empty() {
                continue;
            }
            let fresh = self.read_signatures(pool, &wanted).await;
            let chosen: Vec<TenantName> = match (scope, &fresh) {
                (Scope::Sweep, Some(fresh)) => {
                    let fixed_moved = self.fixed_moved(state, pool, fresh);
                    wanted
                        .iter()
                        .filter(|t| {
                            let name = t.as_str();
                            fixed_moved
                                || forced.dirty.contains(name)
                                || forced.retry_due.contains(name)
                                || state
                                    .observed
                                    .get(name)
                                    .is_none_or(|o| o.fingerprint.is_empty())
                                || needs_look(state.signatures.get(name), fresh.get(name))
                        })
                        .map(|t| (*t).clone())
                        .collect()
                }
                (Scope::Sweep, None) => {
                    observation.signal = ChangeSignal::FullCheck;
                    wanted.iter().map(|t| (*t).clone()).collect()
                }
                (Scope::Full | Scope::Targeted(_), _) => {
                    wanted.iter().map(|t| (*t).clone()).collect()
                }
            };
            // A targeted pass checks a few tenants against the fixed schemas: the others
            // were not, so a moved fixed schema must still look moved to the next sweep.
            if let Some(fresh) = &fresh
                && !matches!(scope, Scope::Targeted(_))
            {
                self.keep_fixed(state, pool, fresh);
            }
            for chunk in chosen.chunks(CHUNK) {
                observation.introspected += chunk.len();
                self.check_chunk(state, pool, chunk, fresh.as_ref(), forced, &mut observation)
                    .await;
            }
        }
        observation
    }

    /// The signatures of `wanted` and of the contracts' fixed schemas; `None` when the
    /// backend has none or reading them failed (logged).
    async fn read_signatures(&self, pool: &Pool<DB>, wanted: &[&TenantName]) -> Option<Signatures> {
        let inner = &self.inner;
        let mut schemas: Vec<String> = wanted.iter().map(ToString::to_string).collect();
        schemas.extend(inner.contracts.fixed_schemas());
        let read = tokio::time::timeout(
            inner.check_timeout,
            DB::signatures(pool, &schemas, &inner.contracts),
        )
        .await
        .unwrap_or(Err(Error::CheckTimeout {
            pool: DB::describe_pool(pool),
            after: inner.check_timeout,
        }));
        match read {
            Ok(signatures) => signatures,
            Err(error) => {
                tracing::warn!(pool = %DB::describe_pool(pool), error = %error_chain(&error), "catalog signatures not read; this pass introspects every tenant of the pool");
                None
            }
        }
    }

    /// Whether a contracts' fixed schema (shared by every tenant of the pool) changed.
    fn fixed_moved(&self, state: &PassState, pool: &Pool<DB>, fresh: &Signatures) -> bool {
        self.inner.contracts.fixed_schemas().iter().any(|schema| {
            needs_look(
                state.fixed_signatures.get(&fixed_key::<DB>(pool, schema)),
                fresh.get(schema),
            )
        })
    }

    fn keep_fixed(&self, state: &mut PassState, pool: &Pool<DB>, fresh: &Signatures) {
        for schema in self.inner.contracts.fixed_schemas() {
            if let Some(signature) = fresh.get(&schema) {
                state
                    .fixed_signatures
                    .insert(fixed_key::<DB>(pool, &schema), signature.clone());
            }
        }
    }

    /// Introspects one chunk of a pool's tenants and re-diffs those whose fingerprint
    /// changed; keeps their signatures (read before the introspection, so a change made in
    /// between is seen again next sweep).
    async fn check_chunk(
        &self,
        state: &mut PassState,
        pool: &Pool<DB>,
        chunk: &[TenantName],
        fresh: Option<&Signatures>,
        forced: &Forced<'_>,
        observation: &mut Observation<DB>,
    ) {
        let inner = &self.inner;
        let schemas: Vec<String> = chunk.iter().map(ToString::to_string).collect();
        let read = tokio::time::timeout(
            inner.check_timeout,
            snapshot(pool, &schemas, &inner.contracts),
        )
        .await
        .unwrap_or(Err(Error::CheckTimeout {
            pool: DB::describe_pool(pool),
            after: inner.check_timeout,
        }));
        let snap = match read {
            Ok(snap) => snap,
            Err(error) => {
                crate::telemetry::count(metrics::REVALIDATION_ERRORS_TOTAL, 1);
                let error = error_chain(&error);
                tracing::warn!(pool = %DB::describe_pool(pool), tenants = chunk.len(), %error, "a pass could not read a pool; its tenants are paused as unreachable");
                for tenant in chunk {
                    state.signatures.remove(tenant.as_str());
                    state.observed.insert(
                        tenant.to_string(),
                        Observed {
                            fingerprint: String::new(),
                            report: TenantReport::unreachable(tenant.to_string(), error.clone()),
                            planned: None,
                            waiting: None,
                        },
                    );
                    observation.touched.insert(tenant.to_string());
                }
                return;
            }
        };
        let mut plan = ToPlan {
            pool: pool.clone(),
            names: Vec::new(),
            reports: Vec::new(),
            snapshot: snap,
        };
        for tenant in chunk {
            let name = tenant.as_str();
            match fresh.and_then(|f| f.get(name)) {
                Some(signature) => {
                    state.signatures.insert(name.to_owned(), signature.clone());
                }
                None => {
                    state.signatures.remove(name);
                }
            }
            let fingerprint = tenant_fingerprint(name, &inner.contracts, &plan.snapshot);
            let known = state.observed.get(name).map(|o| o.fingerprint.as_str());
            // An empty fingerprint is unknown (unreachable, or just remediated).
            observation.schema_changed |= known.is_some_and(|k| !k.is_empty() && k != fingerprint);
            if known == Some(fingerprint.as_str())
                && !forced.dirty.contains(name)
                && !forced.retry_due.contains(name)
            {
                continue;
            }
            let report = check_tenant(name, &inner.contracts, &plan.snapshot);
            if report.verdict == Verdict::Drifted {
                plan.names.push(tenant.clone());
                plan.reports.push(report.clone());
            }
            state.observed.insert(
                name.to_owned(),
                Observed {
                    fingerprint,
                    report,
                    planned: None,
                    waiting: None,
                },
            );
            observation.touched.insert(name.to_owned());
        }
        if !plan.names.is_empty() {
            observation.to_plan.push(plan);
        }
    }
}

/// Whether a tenant must be introspected: no stored signature, no fresh one, an
/// untrusted one (`None`), or a changed one.
fn needs_look(stored: Option<&Option<String>>, fresh: Option<&Option<String>>) -> bool {
    match (stored, fresh) {
        (Some(Some(stored)), Some(Some(fresh))) => stored != fresh,
        _ => true,
    }
}

/// Where a fixed schema's signature is kept: per pool (each pool is its own server or file).
fn fixed_key<DB: ControlStore>(pool: &Pool<DB>, schema: &str) -> String {
    format!("{}\u{1f}{schema}", DB::describe_pool(pool))
}
