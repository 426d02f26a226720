//! Remediation on MySQL/MariaDB (one database per tenant): safe-only apply with the
//! two-phase audit row, a no-op second run, racing replicas, a statement that fails half
//! way (MySQL cannot roll back DDL) and lock-wait-timeout retries.

use crate::support;

use support::exec;

use std::time::Duration;

use contract_sqlx::plan::Remediation;
use contract_sqlx::{
    Contract, TenantDirectory, Tenants, check::ContractSet, remediate, remediation::ApplyOptions,
    report::DriftKind,
};
use sqlx::types::Json;
use sqlx::{MySql, MySqlPool};

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "events")]
#[allow(dead_code)]
struct Event {
    #[contract(primary_key)]
    id: i64,
    user_id: i64,
    kind: String,
    note: Option<String>,
    #[contract(default = "'new'")]
    status: String,
    #[contract(default = "'{}'")]
    event_metadata: Option<Json<serde_json::Value>>,
}

/// A contract whose second new column has a default the server rejects.
#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "levels")]
#[allow(dead_code)]
struct Level {
    #[contract(primary_key)]
    id: i64,
    label: Option<String>,
    #[contract(default = "'high'")]
    rank: Option<i32>,
}

const FULL: &str = "(id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, kind VARCHAR(32) NOT NULL, \
                    note TEXT, status TEXT NOT NULL DEFAULT 'new', event_metadata JSON DEFAULT '{}')";

/// Databases `<prefix>_t1..=n`, dropped when the value is dropped.
struct Fleet {
    pool: MySqlPool,
    prefix: String,
    names: Vec<String>,
    /// Drops the databases even when an assertion failed.
    _cleanup: support::MySqlDatabases,
}

impl Fleet {
    async fn create(pool: &MySqlPool, n: usize) -> Self {
        let prefix = support::unique_name("ct_rem");
        let names: Vec<String> = (1..=n).map(|i| format!("{prefix}_t{i}")).collect();
        // Before the first CREATE: a failure part way drops the databases already made.
        let cleanup = support::MySqlDatabases(names.clone());
        for name in &names {
            exec(pool, format!("CREATE DATABASE `{name}`")).await;
        }
        Self {
            pool: pool.clone(),
            prefix,
            _cleanup: cleanup,
            names,
        }
    }

    async fn events(&self, i: usize, definition: &str) {
        let db = &self.names[i - 1];
        exec(
            &self.pool,
            format!("CREATE TABLE `{db}`.events {definition}"),
        )
        .await;
        exec(
            &self.pool,
            format!("INSERT INTO `{db}`.events (id, user_id, kind) VALUES (1, 7, 'click')"),
        )
        .await;
    }

    async fn directory(&self, pool: &MySqlPool) -> TenantDirectory<MySql> {
        TenantDirectory::new()
            .discover(
                pool,
                &Tenants::schemas_like(format!("{}\\_t%", self.prefix)),
            )
            .await
            .expect("discover")
    }

    /// `(status, attempts, statements, error)` of every audit row of tenant `i`.
    /// An absent audit table reads as no rows; any other failure fails the test.
    async fn audit(&self, i: usize) -> Vec<(String, i32, String, Option<String>)> {
        let exists: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'contract_audit'",
        )
        .bind(&self.names[i - 1])
        .fetch_one(&self.pool)
        .await
        .expect("catalog");
        if exists == 0 {
            return Vec::new();
        }
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT status, attempts, statements, error FROM `{}`.contract_audit ORDER BY started_at",
            self.names[i - 1]
        )))
        .fetch_all(&self.pool)
        .await
        .expect("audit table")
    }

    async fn has_column(&self, i: usize, table: &str, column: &str) -> bool {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND COLUMN_NAME = ?",
        )
        .bind(&self.names[i - 1])
        .bind(table)
        .bind(column)
        .fetch_one(&self.pool)
        .await
        .expect("columns")
            == 1
    }
}

fn options() -> ApplyOptions {
    ApplyOptions::default().with_lock_timeout(Duration::from_secs(5))
}

#[tokio::test]
async fn safe_only_adds_missing_columns_refuses_type_change_and_audits_once() {
    let pool = support::mysql_pool().await;
    let fleet = Fleet::create(&pool, 4).await;
    // t1 healthy; t2 lacks a nullable and a defaulted column; t3 lacks the JSON column;
    // t4 has an incompatible `kind` (VARBINARY where String is read).
    fleet.events(1, FULL).await;
    fleet
        .events(
            2,
            "(id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, kind VARCHAR(32) NOT NULL, event_metadata JSON DEFAULT '{}')",
        )
        .await;
    fleet
        .events(
            3,
            "(id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, kind VARCHAR(32) NOT NULL, note TEXT, status TEXT NOT NULL DEFAULT 'new')",
        )
        .await;
    fleet
        .events(4, &FULL.replace("kind VARCHAR(32)", "kind VARBINARY(32)"))
        .await;
    let dir = fleet.directory(&pool).await;
    let contracts = ContractSet::<MySql>::new().with::<Event>();
    let run = remediate(&dir, &contracts, Remediation::SafeOnly)
        .options(options())
        .run()
        .await
        .expect("remediate");
    assert!(run.failed.is_empty(), "{:?}", run.failed);
    let mut remediated: Vec<&str> = run.audits.iter().map(|a| a.tenant.as_str()).collect();
    remediated.sort_unstable();
    assert_eq!(remediated, [&fleet.names[1], &fleet.names[2]]);
    let t2 = run
        .audits
        .iter()
        .find(|a| a.tenant == fleet.names[1])
        .unwrap();
    assert_eq!(t2.status, "applied");
    assert_eq!(
        t2.statements,
        [
            format!(
                "ALTER TABLE `{}`.`events` ADD COLUMN `note` TEXT, ALGORITHM=INSTANT",
                fleet.names[1]
            ),
            format!(
                "ALTER TABLE `{}`.`events` ADD COLUMN `status` TEXT NOT NULL DEFAULT 'new', ALGORITHM=INSTANT",
                fleet.names[1]
            ),
        ]
    );

    // The type mismatch is refused with the reason, and t4 stays drifted and unchanged.
    let t4 = run
        .plans
        .iter()
        .find(|p| p.tenant == fleet.names[3])
        .expect("t4 plan");
    assert!(t4.steps.is_empty(), "{:?}", t4.steps);
    assert_eq!(t4.refusals.len(), 1, "{:?}", t4.refusals);
    assert_eq!(t4.refusals[0].kind, DriftKind::TypeMismatch);
    assert!(
        t4.refusals[0].reason.contains("copies the table"),
        "{}",
        t4.refusals[0].reason
    );
    assert_eq!(
        run.after.tenants_with("compliant").count(),
        3,
        "{}",
        run.after
    );
    assert_eq!(
        run.after
            .tenants_with("drifted")
            .next()
            .map(|t| t.tenant.as_str()),
        Some(fleet.names[3].as_str())
    );

    // The columns really exist and the consumer's row type decodes, defaults included.
    for (i, column) in [(2, "note"), (2, "status"), (3, "event_metadata")] {
        assert!(fleet.has_column(i, "events", column).await, "t{i}.{column}");
    }
    for i in [2, 3] {
        let rows: Vec<Event> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT * FROM `{}`.events",
            fleet.names[i - 1]
        )))
        .fetch_all(&pool)
        .await
        .unwrap_or_else(|e| panic!("decode t{i}: {e}"));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].status, "new");
        assert_eq!(
            rows[0].event_metadata.as_ref().map(|j| &j.0),
            Some(&serde_json::json!({}))
        );
    }

    // Exactly one settled audit row per remediated tenant, in the tenant's database.
    for i in [2, 3] {
        let rows = fleet.audit(i).await;
        assert_eq!(rows.len(), 1, "t{i}: {rows:?}");
        assert_eq!(
            (rows[0].0.as_str(), rows[0].1, rows[0].3.as_deref()),
            ("applied", 1, None)
        );
    }
    assert!(fleet.audit(1).await.is_empty());
    assert!(fleet.audit(4).await.is_empty());

    // A second run changes nothing and writes nothing.
    let again = remediate(&dir, &contracts, Remediation::SafeOnly)
        .options(options())
        .run()
        .await
        .expect("second run");
    assert!(again.audits.is_empty(), "{:?}", again.audits);
    assert!(again.failed.is_empty(), "{:?}", again.failed);
    assert_eq!(again.plans.len(), 1, "only t4 is still drifted");
    for i in [2, 3] {
        assert_eq!(fleet.audit(i).await.len(), 1);
    }
}

#[tokio::test]
async fn four_racing_replicas_remediate_each_tenant_once() {
    let pool = support::mysql_pool().await;
    let fleet = Fleet::create(&pool, 6).await;
    for i in 1..=6 {
        let definition = if i <= 4 {
            "(id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, kind VARCHAR(32) NOT NULL)"
        } else {
            FULL
        };
        fleet.events(i, definition).await;
    }
    let contracts = ContractSet::<MySql>::new().with::<Event>();
    let mut runs = tokio::task::JoinSet::new();
    for _ in 0..4 {
        // Each replica has its own pool, like a separate process.
        let replica = support::mysql_pool().await;
        let dir = fleet.directory(&replica).await;
        let contracts = contracts.clone();
        runs.spawn(async move {
            let run = remediate(&dir, &contracts, Remediation::SafeOnly)
                .options(options())
                .run()
                .await;
            replica.close().await;
            run
        });
    }
    let mut total = 0;
    let mut failures = Vec::new();
    while let Some(run) = runs.join_next().await {
        let run = run.expect("task").expect("remediate");
        failures.extend(run.failed.clone());
        if run.failed.is_empty() {
            assert!(run.after.is_clean(), "{}", run.after);
        }
        total += run.audits.len();
    }
    let mut rows = Vec::new();
    for i in 1..=6 {
        rows.push(fleet.audit(i).await);
    }
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(
        total, 4,
        "one remediation per drifted tenant across all replicas"
    );
    for (i, rows) in rows.iter().enumerate() {
        let expected = usize::from(i < 4);
        assert_eq!(rows.len(), expected, "t{}: {rows:?}", i + 1);
        assert!(rows.iter().all(|r| r.0 == "applied"), "{rows:?}");
    }
}

#[tokio::test]
async fn failing_statement_leaves_a_failed_audit_row_and_the_applied_part() {
    let pool = support::mysql_pool().await;
    let fleet = Fleet::create(&pool, 1).await;
    let db = fleet.names[0].clone();
    exec(
        &pool,
        format!("CREATE TABLE `{db}`.levels (id BIGINT PRIMARY KEY)"),
    )
    .await;
    let dir = fleet.directory(&pool).await;
    let contracts = ContractSet::<MySql>::new().with::<Level>();
    let run = remediate(&dir, &contracts, Remediation::SafeOnly)
        .options(options())
        .run()
        .await
        .expect("remediate");
    assert!(run.audits.is_empty(), "{:?}", run.audits);
    assert_eq!(run.failed.len(), 1, "{:?}", run.failed);
    let error = &run.failed[0].error;
    assert_eq!(run.failed[0].tenant, db);
    assert!(
        error.contains("after 1 statement(s) had been applied"),
        "{error}"
    );
    assert!(error.contains("Invalid default value"), "{error}");

    // DDL commits implicitly: the first column stays, and the audit row says what ran.
    assert!(fleet.has_column(1, "levels", "label").await);
    assert!(!fleet.has_column(1, "levels", "rank").await);
    let rows = fleet.audit(1).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, "failed");
    assert!(
        rows[0]
            .3
            .as_deref()
            .is_some_and(|e| e.contains("Invalid default value")),
        "{rows:?}"
    );
    let statements: Vec<String> = serde_json::from_str(&rows[0].2).expect("statements json");
    assert_eq!(statements.len(), 2);
    // The row lists both planned statements; its error says which one ran and stays.
    let recorded = rows[0].3.as_deref().unwrap_or_default();
    assert!(
        recorded.starts_with("1 of 2 statement(s) had been applied and stay")
            && recorded.contains(&statements[0])
            && recorded.contains(&format!("then `{}` failed", statements[1])),
        "{recorded}"
    );
    assert!(
        run.after.tenants_with("drifted").count() == 1,
        "{}",
        run.after
    );
}

#[tokio::test]
async fn lock_wait_timeout_is_retried_with_backoff_then_applies() {
    let pool = support::mysql_pool().await;
    let fleet = Fleet::create(&pool, 1).await;
    let db = fleet.names[0].clone();
    fleet
        .events(
            1,
            "(id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, kind VARCHAR(32) NOT NULL)",
        )
        .await;
    let dir = fleet.directory(&pool).await;
    let contracts = ContractSet::<MySql>::new().with::<Event>();
    // An open transaction that read the table holds its metadata lock: the ALTER waits.
    let mut blocker = pool.begin().await.expect("begin");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM `{db}`.events"
    )))
    .execute(&mut *blocker)
    .await
    .expect("read");
    let options = ApplyOptions::default()
        .with_lock_timeout(Duration::from_secs(1))
        .with_base_backoff(Duration::from_secs(1))
        .with_max_attempts(3);
    let run = {
        let (dir, contracts, options) = (dir.clone(), contracts.clone(), options.clone());
        tokio::spawn(async move {
            remediate(&dir, &contracts, Remediation::SafeOnly)
                .options(options.clone())
                .run()
                .await
        })
    };
    let mut waited = false;
    for _ in 0..200 {
        let waiting: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE STATE = 'Waiting for table metadata lock' AND INFO LIKE CONCAT('ALTER TABLE `', ?, '`%')",
            )
            .bind(&db)
            .fetch_one(&pool)
            .await
            .expect("processlist");
        if waiting > 0 {
            waited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(waited, "the remediation never waited on the metadata lock");
    // The first attempt times out after 1 s; release during the backoff.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    blocker.rollback().await.expect("release");
    let run = run.await.expect("task").expect("remediate");
    assert!(run.failed.is_empty(), "{:?}", run.failed);
    assert_eq!(run.audits.len(), 1);
    assert!(run.audits[0].attempts >= 2, "{:?}", run.audits[0]);
    assert!(run.after.is_clean(), "{}", run.after);
    let rows = fleet.audit(1).await;
    assert_eq!(rows.len(), 1, "one audit row across retries: {rows:?}");
    assert_eq!(rows[0].0, "applied");
    assert_eq!(i64::from(rows[0].1), i64::from(run.audits[0].attempts));
}

#[tokio::test]
async fn lock_wait_timeout_exhausted_fails_with_the_tenant_unchanged() {
    let pool = support::mysql_pool().await;
    let fleet = Fleet::create(&pool, 1).await;
    let db = fleet.names[0].clone();
    fleet
        .events(1, "(id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, kind VARCHAR(32) NOT NULL, note TEXT, status TEXT NOT NULL DEFAULT 'new')")
        .await;
    let dir = fleet.directory(&pool).await;
    let contracts = ContractSet::<MySql>::new().with::<Event>();
    let mut blocker = pool.begin().await.expect("begin");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM `{db}`.events"
    )))
    .execute(&mut *blocker)
    .await
    .expect("read");
    let options = ApplyOptions::default()
        .with_lock_timeout(Duration::from_secs(1))
        .with_base_backoff(Duration::from_millis(50))
        .with_max_attempts(2);
    let run = remediate(&dir, &contracts, Remediation::SafeOnly)
        .options(options.clone())
        .run()
        .await
        .expect("remediate");
    blocker.rollback().await.expect("release");
    assert_eq!(run.failed.len(), 1, "{:?}", run.failed);
    let error = &run.failed[0].error;
    assert!(
        error.contains("after 2 attempt(s)") && error.contains("the tenant is unchanged"),
        "{error}"
    );
    assert!(error.contains("Lock wait timeout"), "{error}");
    assert!(!fleet.has_column(1, "events", "event_metadata").await);
    let rows = fleet.audit(1).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0].0.as_str(), rows[0].1), ("failed", 2));

    // Once the lock is free the next run applies.
    let retry = remediate(&dir, &contracts, Remediation::SafeOnly)
        .options(options.clone())
        .run()
        .await
        .expect("retry");
    assert_eq!(retry.audits.len(), 1, "{:?}", retry.failed);
    assert!(retry.after.is_clean(), "{}", retry.after);
    let statuses: Vec<String> = fleet.audit(1).await.into_iter().map(|r| r.0).collect();
    assert_eq!(statuses, ["failed", "applied"]);
}

/// An apply interrupted after its DDL (its connection killed while it settled the audit
/// row) leaves the row `pending`; the next run judges it against the live schema, under
/// the tenant's lock, and settles it `applied` with the evidence — it never stays pending.
#[tokio::test]
async fn pending_audit_row_left_by_an_interrupted_apply_is_reconciled_on_the_next_run() {
    use sqlx::Connection as _;
    let pool = support::mysql_pool().await;
    let fleet = Fleet::create(&pool, 1).await;
    let db = fleet.names[0].clone();
    fleet
        .events(
            1,
            "(id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, kind VARCHAR(32) NOT NULL, \
             status TEXT NOT NULL DEFAULT 'new', event_metadata JSON DEFAULT '{}')",
        )
        .await;
    let dir = fleet.directory(&pool).await;
    let contracts = ContractSet::<MySql>::new().with::<Event>();
    let options = ApplyOptions::default().with_lock_timeout(Duration::from_secs(30));
    let url = support::mysql_url();
    // A reader's open transaction holds the table's metadata lock: the ALTER waits for it.
    let mut reader = sqlx::MySqlConnection::connect(&url).await.expect("reader");
    exec(&mut reader, "START TRANSACTION").await;
    exec(
        &mut reader,
        &format!("SELECT id FROM `{db}`.events LIMIT 1"),
    )
    .await;
    let apply = tokio::spawn({
        let (dir, contracts, options) = (dir.clone(), contracts.clone(), options.clone());
        async move {
            remediate(&dir, &contracts, Remediation::SafeOnly)
                .options(options)
                .run()
                .await
        }
    });
    // The pending row is written (and committed) before the DDL.
    poll(|| async { fleet.audit(1).await.iter().any(|r| r.0 == "pending") }).await;
    let mut blocker = sqlx::MySqlConnection::connect(&url).await.expect("blocker");
    exec(&mut blocker, "START TRANSACTION").await;
    exec(
        &mut blocker,
        &format!("SELECT audit_id FROM `{db}`.contract_audit WHERE status = 'pending' FOR UPDATE"),
    )
    .await;
    exec(&mut reader, "COMMIT").await;
    // The DDL ran; the apply now waits to settle its row: kill its connection there.
    poll(|| fleet.has_column(1, "events", "note")).await;
    let settling = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT CAST(ID AS SIGNED) FROM information_schema.PROCESSLIST \
             WHERE INFO LIKE 'UPDATE %contract_audit%' AND INFO NOT LIKE '%PROCESSLIST%'",
        )
        .fetch_optional(&pool)
        .await
        .expect("processlist")
    };
    poll(|| async { settling().await.is_some() }).await;
    let id = settling().await.expect("settling connection");
    exec(&pool, format!("KILL CONNECTION {id}")).await;
    exec(&mut blocker, "ROLLBACK").await;
    let interrupted = apply.await.expect("join").expect("run");
    assert_eq!(interrupted.failed.len(), 1, "{:?}", interrupted.failed);
    let rows = fleet.audit(1).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, "pending", "the interrupted apply left {rows:?}");

    // While another replica holds the tenant's lock (its apply may be running) the row is
    // left alone.
    let mut other = sqlx::MySqlConnection::connect(&url)
        .await
        .expect("other replica");
    let held: i64 = sqlx::query_scalar("SELECT GET_LOCK(?, 0)")
        .bind(format!("contract:tenant:{db}"))
        .fetch_one(&mut other)
        .await
        .expect("lock");
    assert_eq!(held, 1);
    let during = remediate(&dir, &contracts, Remediation::SafeOnly)
        .options(options.clone())
        .run()
        .await
        .expect("run while locked");
    assert!(during.reconciled.is_empty());
    assert_eq!(fleet.audit(1).await[0].0, "pending");
    other.close().await.expect("release");

    // The next run finds no drift to fix, and still settles the row.
    let next = remediate(&dir, &contracts, Remediation::SafeOnly)
        .options(options)
        .run()
        .await
        .expect("next run");
    assert!(next.audits.is_empty());
    let rows = fleet.audit(1).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, "applied", "after reconciliation: {rows:?}");
    let evidence: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT evidence FROM `{db}`.contract_audit"
    )))
    .fetch_one(&pool)
    .await
    .expect("evidence");
    let evidence = evidence.expect("evidence recorded");
    assert!(
        evidence.contains("no longer shows") && evidence.contains("note"),
        "{evidence}"
    );
    let entries = contract_sqlx::remediation::AuditEntry::read_mysql(
        &pool,
        &contract_sqlx::remediation::AuditConfig::default(),
        &contract_sqlx::remediation::AuditQuery::default().tenant(db.as_str()),
    )
    .await
    .expect("audit log");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(
        entries[0].evidence.as_ref(),
        Some(&evidence),
        "{}",
        entries[0]
    );
    assert_eq!(next.reconciled.len(), 1);
    assert_eq!(
        next.reconciled[0].outcome,
        contract_sqlx::remediation::ReconcileOutcome::Applied
    );
    reader.close().await.expect("close");
    blocker.close().await.expect("close");
}

/// Polls `check` every 20 ms for up to 30 s (a generous bound, not a timing assertion).
async fn poll<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1500 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not reached within 30 s");
}

/// A version of the consumer that reads `accounts` only.
#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "accounts")]
#[allow(dead_code)]
struct Account {
    #[contract(primary_key)]
    id: i64,
}

/// A pending row (an apply interrupted before its DDL ran) of a finding the contracts
/// running now do not read: another version of the consumer wrote it. Their check shows no
/// drift there whether or not the fix ran, so the row cannot be judged: `unknown`. It was
/// judged `applied`, for a column that was never added.
#[tokio::test]
async fn a_pending_row_of_what_the_running_contracts_do_not_read_is_judged_unknown() {
    let pool = support::mysql_pool().await;
    let fleet = Fleet::create(&pool, 1).await;
    let db = &fleet.names[0];
    exec(
        &pool,
        format!(
            "CREATE TABLE `{db}`.events (id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, \
             kind VARCHAR(32) NOT NULL, status TEXT NOT NULL DEFAULT 'new', \
             event_metadata JSON DEFAULT '{{}}'); \
             CREATE TABLE `{db}`.accounts (id BIGINT PRIMARY KEY)"
        ),
    )
    .await;
    let dir = fleet.directory(&pool).await;
    // Version 1 adds `events.note` and audits it ...
    let v1 = ContractSet::<MySql>::new().with::<Event>();
    let run = remediate(&dir, &v1, Remediation::SafeOnly)
        .options(options())
        .run()
        .await
        .expect("version 1");
    assert_eq!(run.audits.len(), 1, "{:?}", run.failed);
    // ... or rather, was interrupted before its DDL ran: the column is not there and the
    // row is pending.
    exec(
        &pool,
        format!(
            "ALTER TABLE `{db}`.events DROP COLUMN note; \
             UPDATE `{db}`.contract_audit SET status = 'pending'"
        ),
    )
    .await;

    let v2 = ContractSet::<MySql>::new().with::<Account>();
    let run = remediate(&dir, &v2, Remediation::SafeOnly)
        .options(options())
        .run()
        .await
        .expect("version 2");
    assert_eq!(run.reconciled.len(), 1, "{:?}", run.reconciled);
    let settled = &run.reconciled[0];
    assert_eq!(
        settled.outcome,
        contract_sqlx::remediation::ReconcileOutcome::Unknown,
        "{settled}"
    );
    assert!(
        settled.evidence.contains("do not read what it fixed"),
        "{settled}"
    );
    assert!(!fleet.has_column(1, "events", "note").await);
}
