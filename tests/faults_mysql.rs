//! Faults on MySQL/MariaDB, through a fault-injecting proxy: a connection cut at each step
//! of a remediation (DDL commits implicitly there, so the audit row must tell the truth),
//! a guard pass cut, the server unreachable at start-up and away for 30 s with passes
//! running. The databases are set up directly; the code under test goes through the proxy.

use crate::support;

use std::time::{Duration, Instant};

use contract_sqlx::control::ControlPlane;
use contract_sqlx::plan::Remediation;
use contract_sqlx::{Contract, Guard, TenantDirectory, Tenants, check::ContractSet, remediate};
use sqlx::{Connection as _, MySql, MySqlPool};
use support::faults::{
    PassCounter, all_paused_unreachable, mysql_pool_through, open_gates, passes_to_reopen,
    ride_out_outage,
};
use support::proxy::{Cut, Fault, Proxy, Refusal, mysql_options, target_of};
use support::{exec, mysql_url};

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "events")]
#[allow(dead_code)]
struct Event {
    #[contract(primary_key)]
    id: i64,
    user_id: i64,
    note: Option<String>,
    #[contract(default = "'new'")]
    status: String,
}

const FULL: &str = "(id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, note TEXT, status TEXT NOT NULL DEFAULT 'new')";
/// Two safe additions away from the contract: two `ALTER TABLE` statements.
const DRIFTED: &str = "(id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL)";

/// Tenant databases `<prefix>_t1..`, each with one row in `events`, and a control
/// database for the guard's pauses; all dropped when the value is dropped.
struct Fleet {
    pool: MySqlPool,
    prefix: String,
    names: Vec<String>,
    control: String,
    _cleanup: support::MySqlDatabases,
}

impl Fleet {
    async fn create(pool: &MySqlPool, definitions: &[&str]) -> Self {
        let prefix = support::unique_name("ct_flt");
        let names: Vec<String> = (1..=definitions.len())
            .map(|i| format!("{prefix}_t{i}"))
            .collect();
        let control = format!("{prefix}_ctl");
        let mut all = names.clone();
        all.push(control.clone());
        let cleanup = support::MySqlDatabases(all.clone());
        for name in &all {
            exec(pool, format!("CREATE DATABASE `{name}`")).await;
        }
        for (name, definition) in names.iter().zip(definitions) {
            exec(pool, format!("CREATE TABLE `{name}`.events {definition}")).await;
            exec(
                pool,
                format!("INSERT INTO `{name}`.events (id, user_id) VALUES (1, 7)"),
            )
            .await;
        }
        Self {
            pool: pool.clone(),
            prefix,
            names,
            control,
            _cleanup: cleanup,
        }
    }

    fn tenants(&self) -> Tenants {
        Tenants::schemas_like(format!("{}\\_t%", self.prefix))
    }

    async fn directory(&self, pool: &MySqlPool) -> TenantDirectory<MySql> {
        TenantDirectory::new()
            .discover(pool, &self.tenants())
            .await
            .expect("discover")
    }

    fn control_plane(&self) -> ControlPlane {
        ControlPlane::default().with_schema(self.control.clone())
    }

    /// Statuses of tenant `i`'s audit rows, oldest first (none without the table).
    async fn audit(&self, i: usize) -> Vec<String> {
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
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT status FROM `{}`.contract_audit ORDER BY started_at",
            self.names[i - 1]
        )))
        .fetch_all(&self.pool)
        .await
        .expect("audit rows")
    }

    /// How many of the two columns remediation adds tenant `i`'s `events` has.
    async fn added_columns(&self, i: usize) -> i64 {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? \
             AND TABLE_NAME = 'events' AND COLUMN_NAME IN ('note', 'status')",
        )
        .bind(&self.names[i - 1])
        .fetch_one(&self.pool)
        .await
        .expect("columns")
    }

    /// `true` once no session holds tenant `i`'s remediation lock (the server ends a cut
    /// session when it next reads from it).
    async fn tenant_lock_free(&self, i: usize) -> bool {
        let lock = format!("contract:tenant:{}", self.names[i - 1]);
        for _ in 0..100 {
            let free: Option<i64> = sqlx::query_scalar("SELECT IS_FREE_LOCK(?)")
                .bind(&lock)
                .fetch_one(&self.pool)
                .await
                .expect("lock");
            if free == Some(1) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    async fn stored_pauses(&self) -> Vec<String> {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT tenant FROM `{}`.contract_pauses ORDER BY tenant",
            self.control
        )))
        .fetch_all(&self.pool)
        .await
        .expect("pauses")
    }
}

async fn proxy_to_mysql() -> Proxy {
    Proxy::start(target_of(&mysql_url())).await
}

// ---- the proxy on the MySQL protocol ----

#[tokio::test]
async fn proxy_cuts_mysql_connections_before_sending_or_before_the_answer() {
    let pool = support::mysql_pool().await;
    let fleet = Fleet::create(&pool, &[]).await;
    let marks = format!("`{}`.marks", fleet.control);
    exec(&pool, format!("CREATE TABLE {marks} (label TEXT)")).await;
    let proxy = proxy_to_mysql().await;
    let options = mysql_options(&proxy, &mysql_url());
    for (label, cut, done) in [
        ("never-sent", Cut::BeforeSending, false),
        ("done-unheard", Cut::BeforeAnswer, true),
    ] {
        let mut conn = sqlx::MySqlConnection::connect_with(&options)
            .await
            .expect("through the proxy");
        let fault = proxy.arm(&[label], cut);
        let insert = format!("INSERT INTO {marks} VALUES ('{label}')");
        let sent = sqlx::raw_sql(sqlx::AssertSqlSafe(insert))
            .execute(&mut conn)
            .await;
        assert!(sent.is_err() && fault.fired(), "{label}");
        let stored: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {marks} WHERE label = '{label}'"
        )))
        .fetch_one(&pool)
        .await
        .expect("marks");
        assert_eq!(stored, i64::from(done), "{label}");
    }
    let mut conn = sqlx::MySqlConnection::connect_with(&options)
        .await
        .expect("connect");
    proxy.cut_all();
    assert!(sqlx::query("SELECT 1").execute(&mut conn).await.is_err());
    assert_eq!((proxy.accepted(), proxy.cut()), (3, 3));
}

// ---- remediation cut at each apply stage ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    BeforeTenantLock,
    AfterFirstDdl,
    /// Before the audit row is settled `applied` (MySQL's commit point).
    BeforeSettling,
    /// After the settling `UPDATE` was sent, before its answer.
    DuringSettling,
}

/// A DDL statement as sent: the `COM_QUERY` command byte, then its text (the pending
/// audit row binds a copy of the statements, without that byte).
const DDL: &str = "\u{3}ALTER TABLE";

impl Stage {
    fn arm(self, proxy: &Proxy) -> Fault {
        match self {
            // The tenant lock's name is a bound parameter of `GET_LOCK`.
            Stage::BeforeTenantLock => proxy.arm(&["contract:tenant:"], Cut::BeforeSending),
            Stage::AfterFirstDdl => proxy.arm(&[DDL], Cut::BeforeAnswer),
            // The settling statement is prepared, then executed with its status bound.
            Stage::BeforeSettling => proxy.arm(&[DDL, "SET status"], Cut::BeforeSending),
            Stage::DuringSettling => proxy.arm(&[DDL, "SET status", "applied"], Cut::BeforeAnswer),
        }
    }
}

/// t1 and t2 lack two columns, t3 complies; the cut hits whichever drifted tenant's apply
/// reaches the armed stage first (tenants are applied in parallel). The run reports it, the
/// hit tenant's audit row tells what happened, the other one is remediated in the same run,
/// and the next run converges: compliant, one `applied` row per tenant, none left `pending`.
async fn remediation_cut(stage: Stage) {
    let direct = support::mysql_pool().await;
    let fleet = Fleet::create(&direct, &[DRIFTED, DRIFTED, FULL]).await;
    let proxy = proxy_to_mysql().await;
    let pool = mysql_pool_through(&proxy, &mysql_url());
    let dir = fleet.directory(&pool).await;
    let contracts = ContractSet::<MySql>::new().with::<Event>();

    let fault = stage.arm(&proxy);
    let run = remediate(&dir, &contracts, Remediation::SafeOnly)
        .run()
        .await
        .expect("run");
    assert!(fault.fired(), "{stage:?}: the cut never happened");
    let failed: Vec<&str> = run.failed.iter().map(|f| f.tenant.as_str()).collect();
    assert_eq!(
        failed.len(),
        1,
        "{stage:?}: one failure is reported: {failed:?}"
    );
    // The tenant the cut hit (1 or 2, by position) and the drifted one it spared.
    let hit = match fleet.names.iter().position(|n| n == failed[0]) {
        Some(index @ (0 | 1)) => index + 1,
        _ => panic!("{stage:?}: the failure names a drifted tenant: {failed:?}"),
    };
    let other = 3 - hit;
    let error = &run.failed[0].error;
    // What the server did to the hit tenant before the cut, and what its audit row must say.
    let (columns, rows): (i64, &[&str]) = match stage {
        Stage::BeforeTenantLock => (0, &[]),
        // The first ALTER ran; the client cannot know it: the row stays `pending`.
        Stage::AfterFirstDdl => (1, &["pending"]),
        Stage::BeforeSettling => (2, &["pending"]),
        Stage::DuringSettling => (2, &["applied"]),
    };
    assert_eq!(fleet.added_columns(hit).await, columns, "{stage:?}");
    assert_eq!(
        fleet.audit(hit).await,
        rows,
        "{stage:?}: the audit row tells the truth"
    );
    assert_eq!(
        error.contains("unchanged"),
        columns == 0,
        "{stage:?}: the error says the tenant is unchanged exactly when it is: {error}"
    );
    assert_eq!(fleet.added_columns(other).await, 2);
    assert_eq!(fleet.audit(other).await, ["applied"]);
    assert!(
        fleet.tenant_lock_free(hit).await,
        "{stage:?}: the tenant lock was left held"
    );

    let next = remediate(&dir, &contracts, Remediation::SafeOnly)
        .run()
        .await
        .expect("next run");
    assert!(next.failed.is_empty(), "{:?}", next.failed);
    assert!(next.after.is_clean(), "{}", next.after);
    assert_eq!(fleet.added_columns(hit).await, 2);
    let hit_rows = fleet.audit(hit).await;
    assert!(
        !hit_rows.iter().any(|s| s == "pending"),
        "{stage:?}: the next run settles the pending audit row: {hit_rows:?}"
    );
    assert_eq!(
        hit_rows.iter().filter(|s| *s == "applied").count(),
        1,
        "{stage:?}: exactly one applied audit row: {hit_rows:?}"
    );
    // Only a partial apply needs a second remediation.
    assert_eq!(
        hit_rows.len(),
        if stage == Stage::AfterFirstDdl { 2 } else { 1 },
        "{hit_rows:?}"
    );
    assert_eq!(fleet.audit(other).await, ["applied"]);
    assert!(fleet.audit(3).await.is_empty());
    pool.close().await;
}

#[tokio::test]
async fn remediation_cut_before_the_tenant_lock() {
    remediation_cut(Stage::BeforeTenantLock).await;
}

#[tokio::test]
async fn remediation_cut_after_the_first_ddl_was_answered() {
    remediation_cut(Stage::AfterFirstDdl).await;
}

#[tokio::test]
async fn remediation_cut_before_the_audit_row_is_settled() {
    remediation_cut(Stage::BeforeSettling).await;
}

#[tokio::test]
async fn remediation_cut_after_the_settling_update_was_sent() {
    remediation_cut(Stage::DuringSettling).await;
}

/// The remediation future is dropped while its first DDL waits for a metadata lock
/// someone else holds. MySQL runs the statement once the lock is free (it does not notice
/// the client left): the pending audit row must be settled by the next run, which
/// converges with one `applied` row, and the tenant lock is released.
#[tokio::test]
async fn remediation_future_dropped_mid_ddl_is_settled_by_the_next_run() {
    let pool = support::mysql_pool().await;
    let fleet = Fleet::create(&pool, &[DRIFTED, FULL]).await;
    let t1 = fleet.names[0].clone();
    let dir = fleet.directory(&pool).await;
    let contracts = ContractSet::<MySql>::new().with::<Event>();
    // An open transaction that read the table holds its metadata lock: the ALTER waits.
    let mut blocker = pool.begin().await.expect("begin");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM `{t1}`.events"
    )))
    .execute(&mut *blocker)
    .await
    .expect("read");
    let options = contract_sqlx::remediation::ApplyOptions::default()
        .with_lock_timeout(Duration::from_secs(60));
    let run = {
        let (dir, contracts) = (dir.clone(), contracts.clone());
        tokio::spawn(async move {
            remediate(&dir, &contracts, Remediation::SafeOnly)
                .options(options)
                .run()
                .await
        })
    };
    let mut seen = false;
    for _ in 0..200 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
             WHERE STATE = 'Waiting for table metadata lock' AND INFO LIKE CONCAT('ALTER TABLE `', ?, '`%')",
        )
        .bind(&t1)
        .fetch_one(&pool)
        .await
        .expect("processlist");
        if waiting > 0 {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "the remediation never reached its DDL");
    run.abort();
    assert!(run.await.is_err_and(|e| e.is_cancelled()));
    blocker.rollback().await.expect("release");
    assert!(
        fleet.tenant_lock_free(1).await,
        "the tenant lock was left held"
    );
    assert_eq!(fleet.audit(1).await, ["pending"], "nobody could settle it");

    let next = remediate(&dir, &contracts, Remediation::SafeOnly)
        .run()
        .await
        .expect("next run");
    assert!(next.after.is_clean(), "{}", next.after);
    let rows = fleet.audit(1).await;
    assert!(
        !rows.iter().any(|s| s == "pending"),
        "the next run settles the pending audit row: {rows:?}"
    );
    assert_eq!(
        rows.iter().filter(|s| *s == "applied").count(),
        1,
        "{rows:?}"
    );
}

// ---- the guard ----

fn guard_builder(fleet: &Fleet) -> contract_sqlx::guard::GuardBuilder<MySql> {
    Guard::<MySql>::builder()
        .contract::<Event>()
        .tenants(fleet.tenants())
        .control_plane(fleet.control_plane())
}

#[tokio::test]
async fn guard_pass_cut_closes_the_gates_and_they_reopen_within_two_passes() {
    let direct = support::mysql_pool().await;
    let fleet = Fleet::create(&direct, &[FULL, FULL, FULL]).await;
    let proxy = proxy_to_mysql().await;
    let pool = mysql_pool_through(&proxy, &mysql_url());
    let guard = guard_builder(&fleet)
        .revalidate_every(Duration::from_secs(3600))
        .start(&pool)
        .await
        .expect("start");
    assert_eq!(open_gates(&guard).len(), 3);

    // The pass's introspection (the one statement binding every tenant) is cut.
    let names: Vec<&str> = fleet.names.iter().map(String::as_str).collect();
    let fault = proxy.arm(&names, Cut::BeforeSending);
    guard
        .revalidate()
        .await
        .expect("the pauses are still stored");
    assert!(fault.fired());
    assert!(all_paused_unreachable(&guard), "{:?}", guard.pauses());
    assert_eq!(fleet.stored_pauses().await, fleet.names);
    assert_eq!(passes_to_reopen(&guard, 2).await, Some(1));
    assert!(
        fleet.stored_pauses().await.is_empty(),
        "lifted pauses are removed"
    );

    // The whole server away: the pass fails (its pauses cannot be stored) and still closes.
    proxy.refuse(Refusal::Close).await;
    proxy.cut_all();
    assert!(
        guard.revalidate().await.is_err(),
        "the pause table is unreachable"
    );
    assert!(all_paused_unreachable(&guard), "{:?}", guard.pauses());
    assert!(guard.revalidate().await.is_err());
    assert!(
        all_paused_unreachable(&guard),
        "still closed on the next pass"
    );
    proxy.heal().await;
    assert_eq!(passes_to_reopen(&guard, 2).await, Some(1));
    assert!(fleet.stored_pauses().await.is_empty());
    pool.close().await;
}

#[tokio::test]
async fn guard_start_with_the_server_unreachable_opens_no_gate() {
    let direct = support::mysql_pool().await;
    let fleet = Fleet::create(&direct, &[FULL, FULL]).await;
    let proxy = proxy_to_mysql().await;
    let pool = mysql_pool_through(&proxy, &mysql_url());
    let listed = || Tenants::list(fleet.names.clone());
    proxy.refuse(Refusal::Close).await;
    let error = guard_builder(&fleet)
        .start(&pool)
        .await
        .expect_err("no discovery");
    assert!(
        error.to_string().contains("listing tenant databases"),
        "{error}"
    );
    let error = guard_builder(&fleet)
        .tenants(listed())
        .start(&pool)
        .await
        .expect_err("no pause table");
    assert!(
        error
            .to_string()
            .contains("creating the control-plane tables failed; the server could not be reached"),
        "{error}"
    );
    proxy.refuse(Refusal::Down).await;
    let guard = guard_builder(&fleet)
        .tenants(listed())
        .in_memory_control()
        .start(&pool)
        .await
        .expect("a guard with every gate closed");
    assert!(all_paused_unreachable(&guard), "{:?}", guard.pauses());
    proxy.heal().await;
    assert_eq!(passes_to_reopen(&guard, 2).await, Some(1));
    pool.close().await;
}

/// The server is away for 30 s while the guard's background passes run (every 500 ms):
/// every gate closes and stays closed, a tenant drifting meanwhile is remediated once
/// after healing, and every gate reopens within two passes.
#[tokio::test]
async fn thirty_second_outage_with_passes_running() {
    let passes = PassCounter::default();
    let _recorder = metrics::set_default_local_recorder(&passes);
    let direct = support::mysql_pool().await;
    let fleet = Fleet::create(&direct, &[DRIFTED, FULL, FULL]).await;
    let proxy = proxy_to_mysql().await;
    let pool = mysql_pool_through(&proxy, &mysql_url());
    let guard = guard_builder(&fleet)
        .remediation(Remediation::SafeOnly)
        .revalidate_every(Duration::from_millis(500))
        .start(&pool)
        .await
        .expect("start");
    assert_eq!(open_gates(&guard).len(), 3, "t1 remediated at start-up");
    let task = guard.spawn();
    let t2 = &fleet.names[1];
    let drift = exec(
        &direct,
        format!("ALTER TABLE `{t2}`.events DROP COLUMN note"),
    );
    ride_out_outage(&guard, &proxy, &passes, Duration::from_secs(30), drift).await;
    for (i, rows) in [(1, 1), (2, 1), (3, 0)] {
        assert_eq!(fleet.audit(i).await.len(), rows, "t{i}: applied once");
        assert_eq!(fleet.added_columns(i).await, 2);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fleet.stored_pauses().await.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(fleet.stored_pauses().await, Vec::<String>::new());
    task.abort();
    pool.close().await;
}
