//! The guard at run time on PostgreSQL: start-up check, gate, DDL closing one tenant's
//! gate (with and without the event trigger), pauses across restarts, privileges.

use crate::support;
use crate::support::faults::{drop_a_pass_waiting_for, open_gates};

use std::str::FromStr;
use std::time::Duration;

use contract_sqlx::guard::install_ddl_trigger;
use contract_sqlx::plan::Remediation;
use contract_sqlx::{Contract, Error, Gate, Guard, Tenants, guard::PausedBy};
use sqlx::{PgPool, Postgres};
use support::{PgScratch, exec};

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "events")]
#[allow(dead_code)]
struct Event {
    id: i64,
    user_id: i64,
    #[contract(default = "'{}'")]
    event_metadata: Option<serde_json::Value>,
}

async fn seed(pool: &PgPool, tenants: usize) {
    let mut ddl = String::new();
    for i in 1..=tenants {
        ddl.push_str(&format!(
            "CREATE SCHEMA tenant_{i}; CREATE TABLE tenant_{i}.events (id int8 NOT NULL, user_id int8 NOT NULL, event_metadata jsonb);"
        ));
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
        .execute(pool)
        .await
        .expect("seed");
}

async fn start(pool: &PgPool, policy: Remediation) -> Guard<Postgres> {
    Guard::<Postgres>::builder()
        .contract::<Event>()
        .tenants(Tenants::schemas_like("tenant_%"))
        .remediation(policy)
        .revalidate_every(Duration::from_millis(200))
        .start(pool)
        .await
        .expect("guard start")
}

/// Polls `check` every 50 ms for up to `bound` (a generous bound, not a timing assertion).
async fn eventually(bound: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + bound;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

#[tokio::test]
async fn start_up_pauses_only_the_drifted_tenant_and_persists_the_pause() {
    let scratch = PgScratch::create("contract_guard_start").await;
    seed(&scratch.pool, 5).await;
    exec(
        &scratch.pool,
        "ALTER TABLE tenant_3.events ALTER COLUMN user_id TYPE int4",
    )
    .await;
    let guard = start(&scratch.pool, Remediation::Off).await;
    assert_eq!(
        open_gates(&guard),
        ["tenant_1", "tenant_2", "tenant_4", "tenant_5"]
    );
    match guard.gate("tenant_3") {
        Gate::Paused(why) => {
            assert_eq!(why.paused_by, PausedBy::Guard);
            assert_eq!(why.findings.len(), 1);
            assert!(
                why.reason.contains("tenant_3.events.user_id"),
                "{}",
                why.reason
            );
            assert!(why.expected_fingerprint.is_some() && why.observed_fingerprint.is_some());
        }
        Gate::Open(_) => panic!("tenant_3 must be paused"),
    }
    assert!(!guard.gate("no_such_tenant").is_open());
    let stored: Vec<(String, String)> =
        sqlx::query_as("SELECT tenant, paused_by FROM public.contract_pauses")
            .fetch_all(&scratch.pool)
            .await
            .expect("pauses");
    assert_eq!(stored, [("tenant_3".to_owned(), "guard".to_owned())]);
    assert_eq!(
        guard.report().summary(),
        "4 compliant, 1 drifted, 0 unreachable of 5 tenants"
    );
    scratch.drop_db().await;
}

/// Holds the control plane's pauses, which a pass reads after it observed every tenant and
/// before it sets any pause.
const PAUSES_LOCKED: &str = "LOCK TABLE public.contract_pauses IN ACCESS EXCLUSIVE MODE";

/// A pass dropped after it observed a tenant's drift and before it set the pauses leaves
/// them to the next pass: the gate closes, and once the drift is fixed (another pass
/// dropped the same way) it reopens. The dropped pass had kept the tenant's new
/// fingerprint, so the next found nothing changed: the drifted tenant's gate stayed open
/// for good (and, the other way, a fixed tenant stayed paused).
#[tokio::test]
async fn a_pass_dropped_before_it_set_the_pauses_leaves_them_to_the_next() {
    let scratch = PgScratch::create("contract_guard_dropped_pass").await;
    seed(&scratch.pool, 2).await;
    let guard = start(&scratch.pool, Remediation::Off).await;
    assert_eq!(open_gates(&guard), ["tenant_1", "tenant_2"]);

    exec(
        &scratch.pool,
        "ALTER TABLE tenant_2.events ALTER COLUMN user_id TYPE int4",
    )
    .await;
    let waiting = drop_a_pass_waiting_for(&scratch.pool, &guard, PAUSES_LOCKED).await;
    assert!(waiting.contains("contract_pauses"), "{waiting}");
    guard.revalidate().await.expect("the next pass");
    assert_eq!(
        open_gates(&guard),
        ["tenant_1"],
        "the drifted tenant is paused"
    );

    exec(
        &scratch.pool,
        "ALTER TABLE tenant_2.events ALTER COLUMN user_id TYPE int8",
    )
    .await;
    let waiting = drop_a_pass_waiting_for(&scratch.pool, &guard, PAUSES_LOCKED).await;
    assert!(waiting.contains("contract_pauses"), "{waiting}");
    guard.revalidate().await.expect("the next pass");
    assert_eq!(
        open_gates(&guard),
        ["tenant_1", "tenant_2"],
        "the fixed tenant is open again"
    );
    drop(guard);
    scratch.drop_db().await;
}

#[tokio::test]
async fn ddl_closes_one_gate_by_periodic_revalidation_and_reopens_after_fix() {
    let scratch = PgScratch::create("contract_guard_poll").await;
    seed(&scratch.pool, 4).await;
    let guard = start(&scratch.pool, Remediation::Off).await;
    let task = guard.spawn();
    let permit = match guard.gate("tenant_2") {
        Gate::Open(permit) => permit,
        Gate::Paused(why) => panic!("{}", why.reason),
    };
    exec(
        &scratch.pool,
        "ALTER TABLE tenant_2.events DROP COLUMN user_id",
    )
    .await;
    assert!(
        eventually(Duration::from_secs(20), || !guard
            .gate("tenant_2")
            .is_open())
        .await,
        "gate never closed"
    );
    assert!(
        !permit.is_current(),
        "a permit issued before the pause is no longer current"
    );
    assert_eq!(open_gates(&guard), ["tenant_1", "tenant_3", "tenant_4"]);
    exec(
        &scratch.pool,
        "ALTER TABLE tenant_2.events ADD COLUMN user_id int8 NOT NULL DEFAULT 0",
    )
    .await;
    assert!(
        eventually(Duration::from_secs(20), || guard.gate("tenant_2").is_open()).await,
        "gate never reopened"
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM public.contract_pauses")
        .fetch_one(&scratch.pool)
        .await
        .expect("count");
    assert_eq!(
        stored, 0,
        "the lifted guard pause is removed from the table"
    );
    task.abort();
    scratch.drop_db().await;
}

/// A sweep dropped after it read the DDL trigger's schema versions and before it read the
/// tenants they picked (a caller's timeout around `revalidate`) leaves those to the next
/// sweep: the drifted tenant's gate closes. The dropped sweep had recorded every tenant's
/// new version first, so the sweeps after it found nothing moved and the gate stayed open
/// on the drift until a full check (helper-69).
#[tokio::test]
async fn a_sweep_dropped_before_it_read_the_picked_tenants_leaves_them_to_the_next() {
    let scratch = PgScratch::create("contract_guard_dropped_sweep").await;
    seed(&scratch.pool, 2).await;
    install_ddl_trigger(&scratch.pool)
        .await
        .expect("trigger (tests run as superuser)");
    // One connection, which has read the catalog's own definitions by the time the test
    // locks `pg_attribute`: the versions' read then goes through, the tenants' read waits.
    let single = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&scratch.url)
        .await
        .expect("pool");
    let guard = Guard::<Postgres>::builder()
        .contract::<Event>()
        .tenants(Tenants::schemas_like("tenant_%"))
        .revalidate_every(Duration::from_secs(3600))
        .full_check_every(1000)
        .start(&single)
        .await
        .expect("guard start");
    guard.revalidate().await.expect("a sweep on the versions");
    assert_eq!(open_gates(&guard), ["tenant_1", "tenant_2"]);

    exec(
        &scratch.pool,
        "ALTER TABLE tenant_2.events ALTER COLUMN user_id TYPE int4",
    )
    .await;
    let waiting = drop_a_pass_waiting_for(
        &scratch.pool,
        &guard,
        "LOCK TABLE pg_catalog.pg_attribute IN ACCESS EXCLUSIVE MODE",
    )
    .await;
    // In the tenants' read (their columns), past the versions' and signatures' reads.
    assert!(waiting.contains("format_type"), "{waiting}");
    guard.revalidate().await.expect("the next sweep");
    assert_eq!(
        open_gates(&guard),
        ["tenant_1"],
        "the drifted tenant is paused"
    );
    drop(guard);
    single.close().await;
    scratch.drop_db().await;
}

#[tokio::test]
async fn ddl_closes_one_gate_promptly_with_the_event_trigger() {
    let scratch = PgScratch::create("contract_guard_trigger").await;
    seed(&scratch.pool, 4).await;
    install_ddl_trigger(&scratch.pool)
        .await
        .expect("trigger (tests run as superuser)");
    let guard = Guard::<Postgres>::builder()
        .contract::<Event>()
        .tenants(Tenants::schemas_like("tenant_%"))
        .revalidate_every(Duration::from_secs(3600)) // only the trigger can close the gate in time
        .start(&scratch.pool)
        .await
        .expect("start");
    let listener = guard.listen_for_ddl().await.expect("listen");
    let task = guard.spawn();
    exec(
        &scratch.pool,
        "ALTER TABLE tenant_4.events ALTER COLUMN id TYPE text",
    )
    .await;
    assert!(
        eventually(Duration::from_secs(20), || !guard
            .gate("tenant_4")
            .is_open())
        .await,
        "gate never closed"
    );
    assert_eq!(open_gates(&guard), ["tenant_1", "tenant_2", "tenant_3"]);
    let version: i64 = sqlx::query_scalar(
        "SELECT version FROM public.contract_schema_version WHERE schema_name = 'tenant_4'",
    )
    .fetch_one(&scratch.pool)
    .await
    .expect("version row");
    assert!(version >= 1);
    task.abort();
    listener.abort();
    scratch.drop_db().await;
}

#[tokio::test]
async fn operator_pause_survives_restart_and_is_never_lifted_by_the_guard() {
    let scratch = PgScratch::create("contract_guard_operator").await;
    seed(&scratch.pool, 3).await;
    let first = start(&scratch.pool, Remediation::Off).await;
    first
        .pause("tenant_2")
        .by("alice")
        .reason("investigating an incident")
        .await
        .expect("pause");
    first
        .pause("tenant_1")
        .queue("emails")
        .by("bob")
        .reason("provider outage")
        .await
        .expect("queue pause");
    assert!(!first.gate("tenant_2").is_open());
    assert!(!first.gate_queue("tenant_1", "emails").is_open());
    assert!(first.gate_queue("tenant_1", "events").is_open());
    drop(first);

    let second = start(&scratch.pool, Remediation::SafeOnly).await;
    second.revalidate().await.expect("revalidate");
    match second.gate("tenant_2") {
        Gate::Paused(why) => {
            assert_eq!(why.paused_by, PausedBy::Operator("alice".into()));
            assert_eq!(why.reason, "investigating an incident");
        }
        Gate::Open(_) => panic!("operator pause lost on restart"),
    }
    assert!(!second.gate_queue("tenant_1", "emails").is_open());
    second.resume("tenant_2").await.expect("resume");
    assert!(second.gate("tenant_2").is_open());
    second.revalidate().await.expect("revalidate");
    assert!(second.gate("tenant_2").is_open());
    scratch.drop_db().await;
}

#[tokio::test]
async fn guard_pause_lifts_itself_after_remediation() {
    let scratch = PgScratch::create("contract_guard_remediate").await;
    seed(&scratch.pool, 3).await;
    exec(
        &scratch.pool,
        "ALTER TABLE tenant_1.events DROP COLUMN event_metadata",
    )
    .await;
    let off = start(&scratch.pool, Remediation::Off).await;
    assert!(!off.gate("tenant_1").is_open());
    drop(off);
    // A restarted guard with SafeOnly remediates at start-up and opens the gate.
    let guard = start(&scratch.pool, Remediation::SafeOnly).await;
    assert!(guard.gate("tenant_1").is_open(), "{}", guard.report());
    assert_eq!(guard.epoch().current(), 1);
    let log = guard.execution_log().expect("log");
    assert!(
        log.outcome
            .starts_with("3 compliant, 0 drifted, 0 unreachable of 3 tenants"),
        "{}",
        log.outcome
    );
    let entry = log.tenant("tenant_1").expect("tenant_1's entry");
    assert_eq!(entry.outcome, contract_sqlx::report::TenantOutcome::Applied);
    assert!(
        entry.audit_id.is_some() && !entry.statements.is_empty(),
        "{entry:?}"
    );
    assert_eq!(entry.policy, "safe_only");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM public.contract_pauses")
        .fetch_one(&scratch.pool)
        .await
        .expect("count");
    assert_eq!(stored, 0);
    scratch.drop_db().await;
}

/// A server-wide login role, dropped by [`PgRole::drop_now`] or, after a failed
/// assertion, on drop. Declare it before the scratch database it has privileges in, so
/// that database is dropped first (its grants would block `DROP ROLE`).
struct PgRole {
    name: String,
    armed: bool,
}

impl PgRole {
    /// A uniquely named role (not created yet: the test creates it with what it needs).
    fn new(prefix: &str) -> Self {
        Self {
            name: support::unique_name(prefix),
            armed: true,
        }
    }

    /// Runs `sql` as this role (`SET ROLE` on a pooled connection, reset after).
    async fn run(&self, pool: &PgPool, sql: &'static str) -> sqlx::Result<()> {
        let mut conn = pool.acquire().await?;
        exec(&mut *conn, format!("SET ROLE \"{}\"", self.name)).await;
        let outcome = sqlx::raw_sql(sql).execute(&mut *conn).await.map(drop);
        exec(&mut *conn, "RESET ROLE").await;
        outcome
    }

    async fn drop_now(mut self) {
        exec(
            &support::pg_pool().await,
            &format!("DROP ROLE IF EXISTS \"{}\"", self.name),
        )
        .await;
        self.armed = false;
    }
}

impl Drop for PgRole {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let name = std::mem::take(&mut self.name);
        support::clean_up_blocking(move || async move {
            use sqlx::Connection as _;
            if let Ok(mut admin) = sqlx::PgConnection::connect(&support::pg_url()).await {
                let drop = format!("DROP ROLE IF EXISTS \"{name}\"");
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
                    .execute(&mut admin)
                    .await;
            }
        });
    }
}

#[tokio::test]
async fn trigger_installer_reports_missing_privilege_clearly() {
    let role = PgRole::new("contract_role");
    let scratch = PgScratch::create("contract_guard_priv").await;
    // A password of its own: whatever user and password the test URL carries, the
    // connection authenticates as the role (trust, md5 or scram alike).
    let password = support::unique_name("pw");
    exec(
        &scratch.pool,
        &format!(
            "CREATE ROLE \"{}\" LOGIN PASSWORD '{password}'; GRANT CREATE ON SCHEMA public TO \"{}\"",
            role.name, role.name
        ),
    )
    .await;
    let options = sqlx::postgres::PgConnectOptions::from_str(&scratch.url)
        .expect("scratch url")
        .username(&role.name)
        .password(&password);
    let limited = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("connect as role");
    let user: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&limited)
        .await
        .expect("current_user");
    assert_eq!(user, role.name, "connected as the limited role");
    let err = install_ddl_trigger(&limited).await.expect_err("must fail");
    assert!(matches!(err, Error::Privilege { .. }), "{err}");
    assert!(err.to_string().contains("superuser"), "{err}");
    limited.close().await;
    scratch.drop_db().await;
    role.drop_now().await;
}

/// The DDL trigger fires for every role's DDL: a role that owns its tenant's schema but
/// may not write the trigger's version table still alters its tables (the trigger's
/// functions run as their owner), its change moves the version, and it may read the
/// versions (a guard that is no superuser uses them).
#[tokio::test]
async fn ddl_by_a_role_that_is_no_superuser_still_works_under_the_trigger() {
    let role = PgRole::new("contract_owner");
    let scratch = PgScratch::create("contract_guard_owner").await;
    seed(&scratch.pool, 1).await;
    install_ddl_trigger(&scratch.pool)
        .await
        .expect("trigger (tests run as superuser)");
    exec(
        &scratch.pool,
        format!(
            "CREATE ROLE \"{r}\" NOLOGIN; ALTER SCHEMA tenant_1 OWNER TO \"{r}\"; \
             ALTER TABLE tenant_1.events OWNER TO \"{r}\"",
            r = role.name
        ),
    )
    .await;
    let version = async || -> Option<i64> {
        sqlx::query_scalar(
            "SELECT max(version) FROM public.contract_schema_version WHERE schema_name = 'tenant_1'",
        )
        .fetch_one(&scratch.pool)
        .await
        .expect("version")
    };
    let before = version().await;

    let altered = role
        .run(
            &scratch.pool,
            "ALTER TABLE tenant_1.events ADD COLUMN extra int4",
        )
        .await;
    let read = role
        .run(
            &scratch.pool,
            "SELECT count(*) FROM public.contract_schema_version",
        )
        .await;
    altered.expect("the owner's DDL must not fail on the trigger's version table");
    read.expect("every role may read the versions");
    assert_ne!(
        before,
        version().await,
        "the owner's DDL moved tenant_1's version"
    );
    scratch.drop_db().await;
    role.drop_now().await;
}

/// The trigger's functions run as their owner, the installer: nothing another role put in
/// their way may run with them. A version table created beforehand by another role (which
/// could carry a trigger of its own) makes the install fail, and leaves no trigger.
#[tokio::test]
async fn the_trigger_is_not_installed_over_a_version_table_another_role_owns() {
    let role = PgRole::new("contract_squatter");
    let scratch = PgScratch::create("contract_guard_squat").await;
    exec(
        &scratch.pool,
        format!(
            "CREATE ROLE \"{r}\" NOLOGIN; GRANT CREATE ON SCHEMA public TO \"{r}\"",
            r = role.name
        ),
    )
    .await;
    role.run(
        &scratch.pool,
        "CREATE TABLE public.contract_schema_version (schema_name text PRIMARY KEY, \
         version int8 NOT NULL, changed_at timestamptz NOT NULL)",
    )
    .await
    .expect("the other role creates the table first");

    let error = install_ddl_trigger(&scratch.pool)
        .await
        .expect_err("the install must refuse a table another role owns");
    let mut chain = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        chain = format!("{chain}: {cause}");
        source = cause.source();
    }
    assert!(
        chain.contains("must belong to the installing role"),
        "{chain}"
    );
    assert!(chain.contains("belongs to another role"), "{chain}");
    let triggers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'contract\\_%'",
    )
    .fetch_one(&scratch.pool)
    .await
    .expect("count");
    assert_eq!(triggers, 0, "nothing of the failed install is left");
    scratch.drop_db().await;
    role.drop_now().await;
}

#[tokio::test]
async fn failed_remediation_is_retried_with_backoff_until_it_succeeds() {
    let scratch = PgScratch::create("contract_guard_retry").await;
    seed(&scratch.pool, 2).await;
    exec(
        &scratch.pool,
        "ALTER TABLE tenant_1.events DROP COLUMN event_metadata",
    )
    .await;
    // Another session holds a lock the ALTER needs: the first remediation times out.
    let mut blocker = scratch.pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE tenant_1.events IN ACCESS SHARE MODE")
        .execute(&mut *blocker)
        .await
        .expect("lock");
    let options = contract_sqlx::remediation::ApplyOptions::default()
        .with_lock_timeout(Duration::from_millis(100))
        .with_max_attempts(1);
    let guard = Guard::<Postgres>::builder()
        .contract::<Event>()
        .tenants(Tenants::schemas_like("tenant_%"))
        .remediation(Remediation::SafeOnly)
        .apply_options(options)
        .revalidate_every(Duration::from_millis(200))
        .start(&scratch.pool)
        .await
        .expect("start");
    match guard.gate("tenant_1") {
        Gate::Paused(why) => assert!(
            why.reason
                .contains("remediation failed and will be retried"),
            "{}",
            why.reason
        ),
        Gate::Open(_) => panic!("tenant_1 must stay paused while its remediation fails"),
    }
    assert!(guard.gate("tenant_2").is_open());
    let task = guard.spawn();
    blocker.rollback().await.expect("release");
    assert!(
        eventually(Duration::from_secs(20), || guard.gate("tenant_1").is_open()).await,
        "never retried"
    );
    task.abort();
    scratch.drop_db().await;
}

#[tokio::test]
async fn connect_installs_the_epoch_hook_and_starts_the_guard_in_one_call() {
    let scratch = PgScratch::create("contract_guard_connect").await;
    seed(&scratch.pool, 2).await;
    exec(
        &scratch.pool,
        "ALTER TABLE tenant_2.events ALTER COLUMN user_id TYPE int4",
    )
    .await;
    let (pool, guard) = Guard::<Postgres>::builder()
        .contract::<Event>()
        .tenants(Tenants::schemas_like("tenant_%"))
        .connect(
            sqlx::postgres::PgPoolOptions::new().max_connections(1),
            &scratch.url,
        )
        .await
        .expect("connect");
    // A cached statement on the consumer pool, then a remediation bumps the epoch.
    let read = |pool: PgPool| async move {
        sqlx::query("SELECT * FROM tenant_2.events")
            .fetch_all(&pool)
            .await
            .map(|r| r.len())
            .map_err(|e| e.to_string())
    };
    assert_eq!(read(pool.clone()).await, Ok(0));
    assert!(!guard.gate("tenant_2").is_open());
    let hash = match guard.gate("tenant_2") {
        Gate::Paused(why) => why.plan_hash.clone(),
        Gate::Open(_) => None,
    };
    assert!(hash.is_none(), "policy Off plans nothing");
    let dir = contract_sqlx::TenantDirectory::new()
        .discover(&pool, &Tenants::list(["tenant_2"]))
        .await
        .expect("dir");
    let contracts = contract_sqlx::check::ContractSet::<Postgres>::new().with::<Event>();
    let dry = contract_sqlx::remediate(&dir, &contracts, Remediation::DryRun)
        .options(Default::default())
        .run()
        .await
        .expect("plan");
    let hash = dry.awaiting_approval["tenant_2"].hash.clone();
    contract_sqlx::remediate(&dir, &contracts, Remediation::Approved(hash))
        .options(Default::default())
        .epoch(guard.epoch())
        .run()
        .await
        .expect("apply");
    assert_eq!(
        read(pool.clone()).await,
        Ok(0),
        "the hook recycled the stale connection"
    );
    guard.revalidate().await.expect("revalidate");
    assert!(guard.gate("tenant_2").is_open());
    pool.close().await;
    scratch.drop_db().await;
}

#[tokio::test]
async fn replicas_starting_together_all_create_or_find_the_pause_table() {
    let scratch = PgScratch::create("contract_guard_replicas").await;
    seed(&scratch.pool, 2).await;
    let mut starts = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&scratch.url)
            .await
            .expect("pool");
        starts.spawn(async move { start(&pool, Remediation::Off).await.tenants().len() });
    }
    while let Some(started) = starts.join_next().await {
        assert_eq!(started.expect("every replica starts"), 2);
    }
    scratch.drop_db().await;
}

/// A known tenant's schema changed by someone else (here: a column retyped by hand, then
/// fixed by another replica) bumps this guard's schema epoch, so the consumer's pooled
/// connection that prepared its query on the drifted schema is recycled before the gate
/// reopens (otherwise: `cached plan must not change result type` on every read).
#[tokio::test]
async fn epoch_is_bumped_when_another_replica_fixes_a_tenant() {
    let scratch = PgScratch::create("contract_guard_epoch").await;
    seed(&scratch.pool, 2).await;
    exec(
        &scratch.pool,
        "INSERT INTO tenant_1.events VALUES (1, 7, NULL)",
    )
    .await;
    let epoch = contract_sqlx::SchemaEpoch::new();
    let replica_b = Guard::<Postgres>::builder()
        .contract::<Event>()
        .tenants(Tenants::schemas_like("tenant_%"))
        .epoch(epoch.clone())
        .in_memory_control()
        .start(&scratch.pool)
        .await
        .expect("guard start");
    let consumer = epoch
        .install(sqlx::postgres::PgPoolOptions::new().max_connections(1))
        .connect(&scratch.url)
        .await
        .expect("consumer pool");
    let read = |pool: PgPool| async move {
        // A persistent (cached, named) prepared statement, like a consumer's hot query.
        sqlx::query_as::<_, (i64, i64)>("SELECT id, user_id FROM tenant_1.events")
            .fetch_all(&pool)
            .await
            .map(|rows| rows.len())
            .map_err(|e| e.to_string())
    };

    // Retyped by hand; B's consumer runs a batch before B's guard notices (it prepares the
    // statement on the drifted schema and fails to decode int4 into i64).
    exec(
        &scratch.pool,
        "ALTER TABLE tenant_1.events ALTER COLUMN user_id TYPE int4",
    )
    .await;
    assert!(read(consumer.clone()).await.is_err());
    replica_b.revalidate().await.expect("pass");
    assert!(!replica_b.gate("tenant_1").is_open());

    // Replica A fixes it (as its approved remediation would); B's next pass reopens.
    exec(
        &scratch.pool,
        "ALTER TABLE tenant_1.events ALTER COLUMN user_id TYPE int8 USING user_id::int8",
    )
    .await;
    let before = epoch.current();
    replica_b.revalidate().await.expect("pass");
    assert!(replica_b.gate("tenant_1").is_open());
    assert!(epoch.current() > before, "the schema epoch was not bumped");
    for _ in 0..3 {
        assert_eq!(read(consumer.clone()).await, Ok(1));
    }
    drop(replica_b);
    consumer.close().await;
    scratch.drop_db().await;
}
