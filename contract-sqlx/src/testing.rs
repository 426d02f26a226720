//! Contract tests for users' own test suites: assert a contract against a migrated
//! database, or offline against a committed schema snapshot, with a readable diff.
//!
//! ```no_run
//! # #[cfg(feature = "postgres")]
//! # async fn demo(pool: sqlx::PgPool) {
//! use contract_sqlx::{Contract, testing};
//!
//! #[derive(sqlx::FromRow, Contract)]
//! #[contract(table = "events")]
//! struct Event { id: i64, payload: serde_json::Value }
//!
//! // Against a database migrated by the test (fails with the findings):
//! testing::assert_contract::<Event, sqlx::Postgres>(&pool, "tenant_template").await;
//! // Offline, against a snapshot committed next to the test:
//! testing::assert_snapshot::<Event>("tests/snapshots/events.json");
//! # }
//! ```

use std::path::Path;

use contract_core::{
    ColumnContract, Contract, Dialect, DiffScope, Finding, LiveColumn, LiveTable, TableContract,
    TenantName, TypeFit, TypeOracle, diff,
};
use serde::{Deserialize, Serialize};
use sqlx::Pool;

use crate::backend::Backend;
use crate::check::ContractSet;
use crate::check::TypeChecks;
use crate::check::{check_tenant, snapshot};

/// Set to `overwrite` to make [`write_snapshot`] callers refresh snapshot files.
pub const SNAPSHOT_ENV: &str = "CONTRACT_SNAPSHOT";

/// A committed record of a contract verified against a live schema: the contract as it
/// was, the live table, and sqlx's verdict for each column at that time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The backend the snapshot was taken on.
    pub dialect: Dialect,
    /// The contract at the time.
    pub contract: TableContract,
    /// The live table (`None`: it did not exist).
    pub live: Option<LiveTable>,
    /// Per column: the Rust type, the SQL type sqlx maps it to, and sqlx's verdict.
    pub verdicts: Vec<SnapshotVerdict>,
}

/// sqlx's verdict for one column, as recorded in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SnapshotVerdict {
    /// Column name.
    pub column: String,
    /// The Rust type at the time.
    pub rust_type: String,
    /// The SQL type sqlx mapped it to.
    pub expected_sql_type: String,
    /// Whether the live type was compatible.
    pub compatible: bool,
    /// A value-dependent risk found then.
    pub risk: Option<String>,
}

/// The findings of contract `T` against `schema` (a tenant schema, database or file).
///
/// # Errors
///
/// An invalid schema name, or a database failure.
pub async fn check_contract<T, DB>(pool: &Pool<DB>, schema: &str) -> crate::Result<Vec<Finding>>
where
    T: Contract + TypeChecks<DB>,
    DB: Backend,
{
    let tenant = TenantName::new(schema)?;
    let contracts = ContractSet::<DB>::new().with::<T>();
    let snapshot = snapshot(pool, &[tenant.as_str().to_owned()], &contracts).await?;
    Ok(check_tenant(schema, &contracts, &snapshot).findings)
}

/// Panics with the findings unless contract `T` holds on `schema` (info findings pass).
///
/// # Panics
///
/// When the contract does not hold or the database cannot be read.
pub async fn assert_contract<T, DB>(pool: &Pool<DB>, schema: &str)
where
    T: Contract + TypeChecks<DB>,
    DB: Backend,
{
    match check_contract::<T, DB>(pool, schema).await {
        Ok(findings) => fail_on(T::STRUCT_NAME, schema, &findings),
        Err(error) => panic!(
            "contract {} could not be checked on `{schema}`: {}",
            T::STRUCT_NAME,
            crate::error::error_chain(&error)
        ),
    }
}

fn fail_on(name: &str, schema: &str, findings: &[Finding]) {
    let failing: Vec<String> = findings
        .iter()
        .filter(|f| f.severity >= contract_core::Severity::AtRisk)
        .map(|f| {
            format!(
                "  - [{} {}] {}: expected {}, found {}",
                f.severity,
                f.kind,
                f.location(),
                f.expected,
                f.actual
            )
        })
        .collect();
    assert!(
        failing.is_empty(),
        "contract {name} does not hold on `{schema}`:\n{}",
        failing.join("\n")
    );
}

/// Takes a [`Snapshot`] of contract `T` against `schema`.
///
/// # Errors
///
/// An invalid schema name, or a database failure.
pub async fn take_snapshot<T, DB>(pool: &Pool<DB>, schema: &str) -> crate::Result<Snapshot>
where
    T: Contract + TypeChecks<DB>,
    DB: Backend,
{
    TenantName::new(schema)?;
    let contracts = ContractSet::<DB>::new().with::<T>();
    let fleet = snapshot(pool, &[schema.to_owned()], &contracts).await?;
    let contract = T::contract();
    let live = fleet.table_for(schema, &contract).cloned();
    let entry = &contracts.entries()[0];
    let verdicts = contract
        .columns
        .iter()
        .filter_map(|column| {
            let live_column = live.as_ref()?.column_in(DB::DIALECT, &column.name)?;
            let check = entry.check(&column.name)?;
            let fit = DB::fit(check, live_column, &fleet.types);
            Some(SnapshotVerdict {
                column: column.name.clone(),
                rust_type: column.rust_type.clone(),
                expected_sql_type: fit.expected_sql_type,
                compatible: fit.compatible,
                risk: fit.risk,
            })
        })
        .collect();
    Ok(Snapshot {
        dialect: DB::DIALECT,
        contract,
        live,
        verdicts,
    })
}

/// Writes a snapshot of `T` against `schema` to `path` when `CONTRACT_SNAPSHOT=overwrite`
/// is set or the file does not exist yet; returns whether it wrote.
///
/// # Panics
///
/// When the database cannot be read or the file cannot be written.
pub async fn write_snapshot<T, DB>(pool: &Pool<DB>, schema: &str, path: impl AsRef<Path>) -> bool
where
    T: Contract + TypeChecks<DB>,
    DB: Backend,
{
    let path = path.as_ref();
    let overwrite = std::env::var(SNAPSHOT_ENV).is_ok_and(|v| v == "overwrite");
    if path.exists() && !overwrite {
        return false;
    }
    let snapshot = take_snapshot::<T, DB>(pool, schema)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "snapshot of {} on `{schema}`: {}",
                T::STRUCT_NAME,
                crate::error::error_chain(&e)
            )
        });
    let json = serde_json::to_string_pretty(&snapshot)
        .unwrap_or_else(|e| panic!("serialise snapshot: {e}"));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    }
    std::fs::write(path, json + "\n").unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    true
}

/// Offline check: contract `T` as compiled now must still hold on the committed snapshot.
///
/// Fails when a column was added, removed, renamed or retyped since the snapshot was taken
/// (refresh it against a migrated database with `CONTRACT_SNAPSHOT=overwrite`), or when
/// the snapshot itself records drift.
///
/// # Panics
///
/// With a line per difference, or when the file cannot be read.
pub fn assert_snapshot<T: Contract>(path: impl AsRef<Path>) {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!("cannot read contract snapshot {}: {e}; create it with testing::write_snapshot against a migrated database", path.display())
    });
    let snapshot: Snapshot = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("contract snapshot {} is not valid: {e}", path.display()));
    let findings = snapshot_findings(&T::contract(), &snapshot);
    fail_on(T::STRUCT_NAME, &path.display().to_string(), &findings);
}

/// The findings of `contract` against a snapshot, judged with the recorded verdicts; a
/// column whose Rust type is not in the snapshot is a type mismatch ("not verified").
#[must_use]
pub fn snapshot_findings(contract: &TableContract, snapshot: &Snapshot) -> Vec<Finding> {
    struct Recorded<'a>(&'a [SnapshotVerdict]);
    impl TypeOracle for Recorded<'_> {
        fn fit(&self, _: &TableContract, column: &ColumnContract, _: &LiveColumn) -> TypeFit {
            match self
                .0
                .iter()
                .find(|v| v.column == column.name && v.rust_type == column.rust_type)
            {
                Some(v) => TypeFit {
                    compatible: v.compatible,
                    expected_sql_type: v.expected_sql_type.clone(),
                    risk: v.risk.clone(),
                },
                None => TypeFit {
                    compatible: false,
                    expected_sql_type:
                        "not verified in the snapshot; refresh it with CONTRACT_SNAPSHOT=overwrite"
                            .into(),
                    risk: None,
                },
            }
        }
    }
    let schema = snapshot
        .live
        .as_ref()
        .map_or("snapshot", |t| t.schema.as_str());
    diff(
        DiffScope {
            tenant: "snapshot",
            schema,
            dialect: snapshot.dialect,
        },
        contract,
        snapshot.live.as_ref(),
        &Recorded(&snapshot.verdicts),
    )
}
