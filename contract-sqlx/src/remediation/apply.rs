//! Applying one tenant's allowed plan steps: options, retries, and the job description.

use std::time::Duration;

use contract_core::plan::{PlanStep, TenantPlan};
use contract_core::{Dialect, Finding, LiveTable, TableContract, TenantName};

use super::backoff::Backoff;
use crate::backend::Backend;
use crate::check::ContractSet;
use crate::error::Error;
use crate::remediation::AuditConfig;

/// How remediation runs (`ARCHITECTURE.md` D6).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApplyOptions {
    /// `lock_timeout` for the DDL (PostgreSQL) / `lock_wait_timeout` (MySQL).
    pub lock_timeout: Duration,
    /// `statement_timeout` for each statement.
    pub statement_timeout: Duration,
    /// How long to wait for another replica's remediation of the same tenant.
    pub advisory_lock_wait: Duration,
    /// Attempts on lock timeout (SQLSTATE 55P03) or, on PostgreSQL, deadlock (40P01), with
    /// exponential backoff and jitter.
    pub max_attempts: u32,
    /// First backoff; doubled each attempt, plus up to 50% jitter.
    pub base_backoff: Duration,
    /// Audit table and actor.
    pub audit: AuditConfig,
    /// How many tenants are remediated at once (each in its own transaction, on its own
    /// connection); default 4.
    pub parallelism: usize,
    /// PostgreSQL: a column type change that rewrites a table of at least this many rows
    /// (`pg_class.reltuples`) is planned online (shadow column, sync trigger, batched
    /// backfill, short swap: `remediation::change_type_online`) instead of one
    /// `ALTER … USING` under `ACCESS EXCLUSIVE`; a column the online procedure refuses
    /// (part of a key, read by a view, …) is refused with its reason. `None`: never.
    /// Default 1,000,000.
    pub online_threshold_rows: Option<u64>,
    /// Rows per batch of an online backfill (each its own transaction); default 10,000.
    pub online_batch_rows: u32,
    /// Pause between the batches of an online backfill; default none.
    pub online_pause: Duration,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            lock_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(60),
            advisory_lock_wait: Duration::from_secs(60),
            max_attempts: 5,
            base_backoff: Duration::from_millis(100),
            audit: AuditConfig::default(),
            parallelism: 4,
            online_threshold_rows: Some(1_000_000),
            online_batch_rows: 10_000,
            online_pause: Duration::ZERO,
        }
    }
}

impl ApplyOptions {
    /// The backoff before attempt `attempt + 1`: `base · 2^(attempt − 1)` (at most a
    /// minute) plus up to 50% jitter.
    #[must_use]
    pub fn backoff(&self, attempt: u32) -> Duration {
        Backoff {
            base: self.base_backoff,
            max: Duration::from_secs(60),
        }
        .delay(attempt)
    }
}

/// Milliseconds since `start`, saturating.
pub(crate) fn elapsed_ms(start: std::time::Instant) -> u64 {
    elapsed_ms_of(start.elapsed())
}

/// A timeout bound for a server setting: whole milliseconds rounded up, at least 1. Every
/// backend reads `0` as no limit (PostgreSQL's timeouts, MariaDB's `max_statement_time`,
/// MySQL's `max_execution_time`), so a zero or sub-millisecond bound must not become one.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn timeout_ms(duration: Duration) -> u64 {
    let ms = duration.as_micros().div_ceil(1_000).max(1);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// `duration` in whole milliseconds, saturating.
pub(crate) fn elapsed_ms_of(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Maps a database error at `stage` of applying `tenant`'s plan (attempt `attempts`) to
/// [`Error::Apply`] (the transaction was rolled back; the tenant is unchanged).
pub(crate) fn failed(
    tenant: &str,
    attempts: u32,
    stage: &str,
) -> impl FnOnce(sqlx::Error) -> Error + use<> {
    let (tenant, stage) = (tenant.to_owned(), stage.to_owned());
    move |source| Error::Apply {
        tenant,
        attempts,
        stage,
        source,
    }
}

/// `true` when `error` is not the server's answer but a lost connection (or another
/// client-side failure): a statement sent before it may or may not have taken effect.
/// (SQLite has no connection to lose.)
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn outcome_unknown(error: &sqlx::Error) -> bool {
    error.as_database_error().is_none()
}

/// Everything one tenant's apply needs.
#[derive(Debug)]
pub struct ApplyJob<'a, DB: sqlx::Database> {
    /// The tenant.
    pub tenant: &'a TenantName,
    /// The plan the steps come from.
    pub plan: &'a TenantPlan,
    /// The steps the policy allows, in plan order.
    pub steps: Vec<&'a PlanStep>,
    /// The tenant's contracted tables as planned on (re-verified under the lock).
    pub planned_on: Vec<&'a LiveTable>,
    /// The contracts (to re-introspect the same tables).
    pub contracts: &'a ContractSet<DB>,
    /// The drift being fixed, for the audit row.
    pub drift_before: Vec<&'a Finding>,
    /// Timeouts, retries and audit settings.
    pub options: &'a ApplyOptions,
    /// The approval covering the hazardous steps, recorded in the audit row.
    pub approval: Option<&'a super::ApprovalRef>,
}

impl<DB: Backend> ApplyJob<'_, DB> {
    /// The statements to run, in order.
    #[must_use]
    pub fn statements(&self) -> Vec<String> {
        self.steps
            .iter()
            .flat_map(|s| s.statements.iter().cloned())
            .collect()
    }

    /// The schemas to re-introspect under the lock: the tenant's, and the contracts' fixed
    /// schemas.
    #[must_use]
    pub fn schemas(&self) -> Vec<String> {
        let mut schemas = vec![self.tenant.to_string()];
        schemas.extend(self.contracts.fixed_schemas());
        schemas
    }

    /// The `(schema, table)` pairs re-verified under the lock: every contracted table
    /// a step of this job changes, and every contracted table such a table's foreign keys
    /// reference. A plan's steps alter no other table (an enum label is added to its type
    /// with `IF NOT EXISTS`, whatever else uses the type), so a change elsewhere in the
    /// tenant (drift the next check will find) does not make these steps stale; and the
    /// re-check costs what the steps touch, not what the tenant holds.
    #[must_use]
    pub fn rechecked_tables(&self) -> Vec<(String, String)> {
        rechecked_tables(
            DB::DIALECT,
            self.tenant.as_str(),
            self.contracts.entries().iter().map(|e| &e.contract),
            self.steps.iter().map(|s| s.table.as_str()),
        )
    }

    /// `true` when `live` (re-introspected under the lock) still matches what was planned
    /// on: every table of [`Self::rechecked_tables`] has the fingerprint it had, or is
    /// still absent. Tables are found as the dialect compares table names
    /// ([`Dialect::same_table`]: `Events` is the `events` a contract reads on SQLite).
    #[must_use]
    pub fn still_matches(&self, live: &[LiveTable]) -> bool {
        let keys = self.rechecked_tables();
        same_tables(DB::DIALECT, &keys, &self.planned_on, live)
    }
}

/// The `(schema, table)` pairs the contracts read in `tenant` (each once) that `changed`
/// names, or that a foreign key of such a table references.
fn rechecked_tables<'a>(
    dialect: Dialect,
    tenant: &str,
    contracts: impl Iterator<Item = &'a TableContract> + Clone,
    changed: impl Iterator<Item = &'a str> + Clone,
) -> Vec<(String, String)> {
    let schema_of = |contract: &'a TableContract| contract.schema.as_deref().unwrap_or(tenant);
    let changes = |contract: &TableContract| {
        changed
            .clone()
            .any(|t| dialect.same_table(t, &contract.table))
    };
    // `(schema, table)` of what the changed tables' foreign keys reference (SQLite has no
    // schemas: the tenant's file).
    let referenced: Vec<(&str, &str)> = contracts
        .clone()
        .filter(|c| changes(c))
        .flat_map(|c| {
            c.foreign_keys().map(move |(_, r)| {
                let schema = match dialect {
                    Dialect::Sqlite => tenant,
                    _ => r.schema.as_deref().unwrap_or_else(|| schema_of(c)),
                };
                (schema, r.table.as_str())
            })
        })
        .collect();
    let mut keys: Vec<(String, String)> = contracts
        .filter(|c| {
            changes(c)
                || referenced.iter().any(|(schema, table)| {
                    *schema == schema_of(c) && dialect.same_table(table, &c.table)
                })
        })
        .map(|c| (schema_of(c).to_owned(), c.table.clone()))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Compares, per `(schema, table)` of `keys`, the fingerprint in `planned` with the one in
/// `live`. Tables not in `keys` (another tenant's table named like a fixed-schema
/// contract's, a contracted table no step changes) play no part.
fn same_tables(
    dialect: Dialect,
    keys: &[(String, String)],
    planned: &[&LiveTable],
    live: &[LiveTable],
) -> bool {
    keys.iter().all(|(schema, table)| {
        fingerprint(dialect, planned.iter().copied(), schema, table)
            == fingerprint(dialect, live.iter(), schema, table)
    })
}

/// The fingerprint of `schema.table` among `tables`, if it is there.
fn fingerprint<'t>(
    dialect: Dialect,
    mut tables: impl Iterator<Item = &'t LiveTable>,
    schema: &str,
    table: &str,
) -> Option<&'t str> {
    tables
        .find(|t| t.schema == schema && dialect.same_table(&t.name, table))
        .map(|t| t.fingerprint.as_str())
}

#[cfg(test)]
mod tests {
    use contract_core::{ColumnContract, Reference};

    use super::*;

    #[cfg(any(feature = "postgres", feature = "mysql"))]
    #[test]
    fn a_timeout_is_whole_milliseconds_rounded_up_and_never_zero() {
        assert_eq!(timeout_ms(Duration::ZERO), 1);
        assert_eq!(timeout_ms(Duration::from_micros(400)), 1);
        assert_eq!(timeout_ms(Duration::from_micros(1_001)), 2);
        assert_eq!(timeout_ms(Duration::from_millis(2_500)), 2_500);
        assert_eq!(timeout_ms(Duration::MAX), u64::MAX);
    }

    fn table(schema: &str, name: &str, fingerprint: &str) -> LiveTable {
        let mut t = LiveTable::new(schema, name);
        t.fingerprint = fingerprint.to_owned();
        t
    }

    fn contract(schema: Option<&str>, table: &str) -> TableContract {
        TableContract {
            struct_name: table.to_owned(),
            schema: schema.map(str::to_owned),
            table: table.to_owned(),
            columns: Vec::new(),
        }
    }

    fn keys(
        dialect: Dialect,
        contracts: &[TableContract],
        changed: &[&str],
    ) -> Vec<(String, String)> {
        rechecked_tables(dialect, "t1", contracts.iter(), changed.iter().copied())
    }

    fn pair(schema: &str, table: &str) -> (String, String) {
        (schema.to_owned(), table.to_owned())
    }

    #[test]
    fn a_table_read_by_two_contracts_is_compared_once() {
        let contracts = [contract(None, "events"), contract(None, "events")];
        let keys = keys(Dialect::Postgres, &contracts, &["events"]);
        assert_eq!(keys, [pair("t1", "events")]);
        let events = table("t1", "events", "a");
        let planned = [&events, &events];
        let live = [table("t1", "events", "a")];
        assert!(same_tables(Dialect::Postgres, &keys, &planned, &live));
        let changed = [table("t1", "events", "b")];
        assert!(!same_tables(Dialect::Postgres, &keys, &planned, &changed));
        assert!(!same_tables(Dialect::Postgres, &keys, &planned, &[]));
    }

    #[test]
    fn only_the_changed_tables_and_the_tables_they_reference_are_rechecked() {
        // `orders` references `accounts`; `sessions` is contracted but no step changes it.
        let mut orders = contract(None, "orders");
        orders.columns.push(ColumnContract {
            references: Some(Reference::parse("accounts(id)").expect("reference")),
            ..ColumnContract::new("account_id", "i64")
        });
        let contracts = [
            contract(None, "accounts"),
            orders,
            contract(None, "sessions"),
        ];
        let keys = keys(Dialect::Postgres, &contracts, &["orders"]);
        assert_eq!(keys, [pair("t1", "accounts"), pair("t1", "orders")]);
        let (accounts, sessions) = (table("t1", "accounts", "a"), table("t1", "sessions", "s"));
        let planned = [&accounts, &sessions];
        // `sessions` drifted meanwhile: not this plan's business.
        let live = [accounts.clone(), table("t1", "sessions", "changed")];
        assert!(same_tables(Dialect::Postgres, &keys, &planned, &live));
        // The referenced `accounts` changed: stale.
        let live = [table("t1", "accounts", "changed"), sessions.clone()];
        assert!(!same_tables(Dialect::Postgres, &keys, &planned, &live));
        // `orders` was created meanwhile (the plan creates it): stale.
        let live = [
            accounts.clone(),
            sessions.clone(),
            table("t1", "orders", "o"),
        ];
        assert!(!same_tables(Dialect::Postgres, &keys, &planned, &live));
    }

    #[test]
    fn a_fixed_schema_table_is_keyed_by_its_schema() {
        // `shared.plans` is a fixed-schema contract; the tenant's own `plans` table is
        // re-read too (every table name in every schema) but no contract reads it there.
        let contracts = [contract(None, "events"), contract(Some("shared"), "plans")];
        let keys = keys(Dialect::Postgres, &contracts, &["events", "plans"]);
        assert_eq!(keys, [pair("shared", "plans"), pair("t1", "events")]);
        let (events, plans) = (table("t1", "events", "a"), table("shared", "plans", "p"));
        let planned = [&events, &plans];
        let live = [events.clone(), plans.clone(), table("t1", "plans", "x")];
        assert!(same_tables(Dialect::Postgres, &keys, &planned, &live));
        let absent_then = [&events];
        let created = [events.clone(), plans.clone()];
        assert!(!same_tables(
            Dialect::Postgres,
            &keys,
            &absent_then,
            &created
        ));
    }

    #[test]
    fn tables_are_found_as_the_dialect_compares_names() {
        // SQLite: `Events` is the table `events` reads, so a changed `Events` is stale.
        let contracts = [contract(None, "events")];
        let keys_sqlite = keys(Dialect::Sqlite, &contracts, &["Events"]);
        assert_eq!(keys_sqlite, [pair("t1", "events")]);
        let planned = table("t1", "Events", "a");
        let changed = [table("t1", "Events", "b")];
        assert!(!same_tables(
            Dialect::Sqlite,
            &keys_sqlite,
            &[&planned],
            &changed
        ));
        assert!(same_tables(
            Dialect::Sqlite,
            &keys_sqlite,
            &[&planned],
            std::slice::from_ref(&planned)
        ));
        // PostgreSQL: `"Events"` is another table; `events` is absent both times.
        let keys_pg = keys(Dialect::Postgres, &contracts, &["events"]);
        assert!(same_tables(
            Dialect::Postgres,
            &keys_pg,
            &[&planned],
            &changed
        ));
    }

    #[test]
    fn backoff_doubles_with_bounded_jitter() {
        let options = ApplyOptions {
            base_backoff: Duration::from_millis(100),
            ..ApplyOptions::default()
        };
        for attempt in 1..=4 {
            let b = options.backoff(attempt);
            let base = Duration::from_millis(100 * (1 << (attempt - 1)));
            assert!(b >= base && b <= base * 3 / 2, "attempt {attempt}: {b:?}");
        }
    }
}
