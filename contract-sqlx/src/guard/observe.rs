//! What a pass introspects. A full check introspects every tenant; a sweep first asks the
//! backend which tenants changed and introspects only those (and new, dirty, unreachable or
//! retry-due ones), keeping the other tenants' verdicts; a targeted pass introspects only
//! the tenants the DDL listener named. Introspection goes in chunks of at most
//! [`CHUNK`] tenants, so one changed tenant costs a query scoped to it, not a fleet-sized
//! one. Every `full_check_every`-th sweep is a full check, and so is any sweep whose
//! signal is unavailable (MySQL) or fails.

use std::collections::{BTreeSet, HashMap, HashSet};

use contract_core::{TenantName, TenantReport, Verdict};
use sqlx::Pool;

use super::pass::tenant_fingerprint;
use super::signals::{ChangeSignal, needs_look, store_version, version_base, version_of};
use super::{Guard, Observed, PassState, metrics};
use crate::backend::Signatures;
use crate::check::{FleetSnapshot, check_tenant, snapshot};
use crate::control::ControlStore;
use crate::error::error_chain;
use crate::tenants::TenantDirectory;

/// The most tenants one introspection query covers.
pub(super) const CHUNK: usize = 1_000;

/// Which tenants a pass introspects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Scope {
    /// Every tenant.
    Full,
    /// The tenants whose schema version or catalog signature changed (every tenant
    /// without a signal).
    Sweep,
    /// Only these (named by the DDL listener), plus tenants not checked yet.
    Targeted(BTreeSet<String>),
}

/// One chunk's tenants that changed and drifted, with the snapshot they were checked in.
pub(super) struct ToPlan<DB: ControlStore> {
    pub pool: Pool<DB>,
    pub names: Vec<TenantName>,
    pub reports: Vec<TenantReport>,
    pub snapshot: FleetSnapshot<DB>,
}

/// What a pass's introspection found. The tenants re-diffed (their observed state
/// replaced) are marked in `PassState::unsettled`.
pub(super) struct Observation<DB: ControlStore> {
    /// The drifted tenants re-diffed, by chunk, for planning.
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
            to_plan: Vec::new(),
            schema_changed: false,
            introspected: 0,
            signal: match scope {
                Scope::Full => ChangeSignal::FullCheck,
                Scope::Sweep => ChangeSignal::CatalogSignature,
                Scope::Targeted(_) => ChangeSignal::Targeted,
            },
        };
        let mut weakest: Option<ChangeSignal> = None;
        // A pool no tenant is on any more keeps no mark.
        let pools: HashSet<String> = directory
            .groups()
            .iter()
            .map(|(pool, _)| DB::describe_pool(pool))
            .collect();
        state.catalog_marks.retain(|pool, _| pools.contains(pool));
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
            // A targeted pass stays as small as its tenants: no versions read (its tenants'
            // are forgotten below, so the next sweep looks at them again).
            let versions = match scope {
                Scope::Targeted(_) => None,
                Scope::Full | Scope::Sweep => self.read_versions(pool).await,
            };
            let pool_key = DB::describe_pool(pool);
            let base = versions.as_ref().map(|v| version_base(v, names));
            let trusted = matches!(scope, Scope::Sweep)
                && base.is_some()
                && state.version_bases.get(&pool_key) == base.as_ref();
            // A targeted pass reads its few tenants' signatures and leaves the fleet's mark
            // alone.
            let marked = !matches!(scope, Scope::Targeted(_));
            let (fresh, quiet) = if trusted {
                (None, false)
            } else {
                match self
                    .read_signatures(state, (pool, &pool_key), &wanted, marked)
                    .await
                {
                    Some((fresh, quiet)) => (Some(fresh), quiet),
                    None => (None, false),
                }
            };
            let is_forced = |name: &str| {
                forced.dirty.contains(name)
                    || forced.retry_due.contains(name)
                    || state
                        .observed
                        .get(name)
                        .is_none_or(|o| o.fingerprint.is_empty())
            };
            let (signal, chosen): (ChangeSignal, Vec<TenantName>) = match (scope, &fresh) {
                (Scope::Sweep, _) if trusted => {
                    let fresh_versions = versions.as_ref().map(|v| &v.versions);
                    let chosen = wanted
                        .iter()
                        .filter(|t| {
                            let name = t.as_str();
                            is_forced(name)
                                || state.versions.get(name).map(String::as_str)
                                    != Some(version_of(fresh_versions, name))
                        })
                        .map(|t| (*t).clone())
                        .collect();
                    (ChangeSignal::SchemaVersion, chosen)
                }
                (Scope::Sweep, Some(fresh)) => {
                    let fixed_moved = self.fixed_moved(state, pool, fresh);
                    let chosen = wanted
                        .iter()
                        .filter(|t| {
                            let name = t.as_str();
                            fixed_moved
                                || is_forced(name)
                                || needs_look(state.signatures.get(name), fresh.get(name))
                        })
                        .map(|t| (*t).clone())
                        .collect();
                    let signal = if quiet {
                        ChangeSignal::CatalogQuiet
                    } else {
                        ChangeSignal::CatalogSignature
                    };
                    (signal, chosen)
                }
                (Scope::Sweep | Scope::Full, None) => (
                    ChangeSignal::FullCheck,
                    wanted.iter().map(|t| (*t).clone()).collect(),
                ),
                (Scope::Full, Some(_)) => (
                    ChangeSignal::FullCheck,
                    wanted.iter().map(|t| (*t).clone()).collect(),
                ),
                (Scope::Targeted(_), _) => (
                    ChangeSignal::Targeted,
                    wanted.iter().map(|t| (*t).clone()).collect(),
                ),
            };
            weakest = Some(match weakest {
                Some(w) if w.trust() <= signal.trust() => w,
                _ => signal,
            });
            // The versions were read before any introspection below: a change made
            // meanwhile moves a version again. A sweep or full check records under the new
            // base the version of every tenant it does not introspect (its signature or
            // version is unchanged), and forgets the others' until their introspection
            // (`check_chunk` records them with their signatures): recorded before, a pass
            // dropped in between left a drifted tenant's new version behind, and sweeps
            // after it found nothing to look at. A targeted pass forgets its tenants'.
            let read_versions = match (&versions, scope) {
                (_, Scope::Targeted(_)) => {
                    for tenant in &chosen {
                        state.versions.remove(tenant.as_str());
                    }
                    None
                }
                (Some(read), Scope::Full | Scope::Sweep) => {
                    let picked: HashSet<&str> = chosen.iter().map(TenantName::as_str).collect();
                    for tenant in &wanted {
                        if picked.contains(tenant.as_str()) {
                            state.versions.remove(tenant.as_str());
                        } else {
                            let version = version_of(Some(&read.versions), tenant.as_str());
                            store_version(state, tenant.as_str(), version);
                        }
                    }
                    Some(&read.versions)
                }
                (None, Scope::Full | Scope::Sweep) => None,
            };
            if !matches!(scope, Scope::Targeted(_)) {
                match base {
                    Some(base) => {
                        state.version_bases.insert(pool_key, base);
                    }
                    None => {
                        state.version_bases.remove(&pool_key);
                    }
                }
            }
            for chunk in chosen.chunks(CHUNK) {
                observation.introspected += chunk.len();
                self.check_chunk(
                    state,
                    pool,
                    chunk,
                    (fresh.as_deref(), read_versions),
                    forced,
                    &mut observation,
                )
                .await;
            }
            // Once every tenant it picked was read: a pass dropped before leaves a moved
            // fixed schema looking moved, so the next sweep picks them all again. A targeted
            // pass checks a few tenants against the fixed schemas: the others were not, so
            // a moved fixed schema must still look moved to the next sweep.
            if let Some(fresh) = &fresh
                && !matches!(scope, Scope::Targeted(_))
            {
                self.keep_fixed(state, pool, fresh);
            }
        }
        if let Some(signal) = weakest {
            observation.signal = signal;
        }
        observation
    }

    /// Introspects one chunk of a pool's tenants and re-diffs those whose fingerprint
    /// changed; keeps their signatures and schema versions (read before the introspection,
    /// so a change made in between is seen again next sweep) once they are read.
    async fn check_chunk(
        &self,
        state: &mut PassState,
        pool: &Pool<DB>,
        chunk: &[TenantName],
        (fresh, versions): (Option<&Signatures>, Option<&HashMap<String, String>>),
        forced: &Forced<'_>,
        observation: &mut Observation<DB>,
    ) {
        let inner = &self.inner;
        let schemas: Vec<String> = chunk.iter().map(ToString::to_string).collect();
        let snap = match self.snapshot_within_timeout(pool, &schemas).await {
            Ok(snap) => snap,
            Err(error) => {
                crate::telemetry::count(metrics::REVALIDATION_ERRORS_TOTAL, 1);
                let error = error_chain(&error);
                tracing::warn!(pool = %DB::describe_pool(pool), tenants = chunk.len(), %error, "a pass could not read a pool; its tenants are paused as unreachable");
                for tenant in chunk {
                    state.signatures.remove(tenant.as_str());
                    state.versions.remove(tenant.as_str());
                    state.observed.insert(
                        tenant.to_string(),
                        Observed {
                            fingerprint: String::new(),
                            report: TenantReport::unreachable(tenant.to_string(), error.clone()),
                            planned: None,
                            waiting: None,
                            checked_in: state.taken,
                        },
                    );
                    state.unsettled.insert(tenant.to_string());
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
            if versions.is_some() {
                store_version(state, name, version_of(versions, name));
            }
            let fingerprint = tenant_fingerprint(name, &inner.contracts, &plan.snapshot);
            let known = state.observed.get(name).map(|o| o.fingerprint.as_str());
            // An empty fingerprint is unknown (unreachable, or just remediated).
            observation.schema_changed |= known.is_some_and(|k| !k.is_empty() && k != fingerprint);
            if known == Some(fingerprint.as_str())
                && !forced.dirty.contains(name)
                && !forced.retry_due.contains(name)
            {
                // Unchanged: its verdict holds for the schema as it is now.
                if let Some(observed) = state.observed.get_mut(name) {
                    observed.checked_in = state.taken;
                }
                continue;
            }
            let report = check_tenant(name, &inner.contracts, &plan.snapshot);
            // A mismatch on a type the probe could not resolve (a transient failure, say) is
            // a guess: it is not kept under this fingerprint, which would not move when the
            // cause goes away, so the tenant's next check diffs it again.
            let fingerprint =
                if rests_on_unresolved_types(name, &report, &inner.contracts, &plan.snapshot) {
                    String::new()
                } else {
                    fingerprint
                };
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
                    checked_in: state.taken,
                },
            );
            state.unsettled.insert(name.to_owned());
        }
        if !plan.names.is_empty() {
            observation.to_plan.push(plan);
        }
    }
}

impl<DB: ControlStore> Guard<DB> {
    /// The live schema of `schemas` (tenants) of `pool`, bounded by the check timeout.
    pub(super) async fn snapshot_within_timeout(
        &self,
        pool: &Pool<DB>,
        schemas: &[String],
    ) -> crate::error::Result<FleetSnapshot<DB>> {
        self.within_check_timeout(pool, snapshot(pool, schemas, &self.inner.contracts))
            .await
    }
}

/// `true` when `report` holds a type mismatch and some contracted column of `tenant` has a
/// live type the snapshot could not resolve (its findings then say "mismatch" for want of
/// an answer, not because the type was compared).
fn rests_on_unresolved_types<DB: crate::backend::Backend>(
    tenant: &str,
    report: &TenantReport,
    contracts: &crate::check::ContractSet<DB>,
    snapshot: &FleetSnapshot<DB>,
) -> bool {
    if !report
        .findings
        .iter()
        .any(|f| f.kind == contract_core::DriftKind::TypeMismatch)
    {
        return false;
    }
    contracts.entries().iter().any(|entry| {
        snapshot
            .table_for(tenant, &entry.contract)
            .is_some_and(|live| {
                live.columns.iter().any(|column| {
                    entry.contract.columns.iter().any(|c| c.name == column.name)
                        && !snapshot.types.contains_key(&column.type_key)
                })
            })
    })
}
