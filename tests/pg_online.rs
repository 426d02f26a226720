//! Online remediation on PostgreSQL: multi-transaction steps (`NOT VALID`, `VALIDATE`,
//! `SET NOT NULL`) cut between transactions resume on the next pass from the audit row.

use crate::support;

use contract_sqlx::plan::Remediation;
use contract_sqlx::remediation::ReconcileOutcome;
use contract_sqlx::{Contract, Tenants, check::ContractSet, remediate};
use sqlx::{PgPool, Postgres};
use support::faults::pg_pool_through;
use support::proxy::{Cut, Proxy, target_of};
use support::{PgScratch, exec, pg_tenant_directory, pg_url};

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "events")]
#[allow(dead_code)]
pub(crate) struct Event {
    #[contract(primary_key)]
    id: i64,
    user_id: i64,
}

/// `(status, phase)` of `tenant`'s audit rows.
async fn audit(pool: &PgPool, tenant: &str) -> Vec<(String, Option<i32>)> {
    sqlx::query_as("SELECT status, phase FROM public.contract_audit WHERE tenant = $1")
        .bind(tenant)
        .fetch_all(pool)
        .await
        .expect("audit rows")
}

/// `convalidated` of the constraints of `tenant.table` named `name`.
async fn validated(pool: &PgPool, tenant: &str, table: &str, name: &str) -> Vec<bool> {
    sqlx::query_scalar(
        "SELECT c.convalidated FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid \
         JOIN pg_namespace n ON n.oid = r.relnamespace \
         WHERE n.nspname = $1 AND r.relname = $2 AND c.conname = $3",
    )
    .bind(tenant)
    .bind(table)
    .bind(name)
    .fetch_all(pool)
    .await
    .expect("constraints")
}

async fn not_null(pool: &PgPool, tenant: &str, table: &str, column: &str) -> bool {
    sqlx::query_scalar(
        "SELECT a.attnotnull FROM pg_attribute a JOIN pg_class r ON r.oid = a.attrelid \
         JOIN pg_namespace n ON n.oid = r.relnamespace \
         WHERE n.nspname = $1 AND r.relname = $2 AND a.attname = $3",
    )
    .bind(tenant)
    .bind(table)
    .bind(column)
    .fetch_one(pool)
    .await
    .expect("column")
}

/// Runs `change` and kills it (drops its future) once the checkpoint counts `reached`
/// rows, asserting that it got there and was killed before all `rows` were done.
async fn kill_mid_backfill(
    pool: &PgPool,
    change: &contract_sqlx::remediation::OnlineTypeChange,
    reached: i64,
    rows: i64,
) {
    kill_at(pool, change, "%", reached, rows).await;
}

/// [`kill_mid_backfill`], counting the checkpoints whose key is `LIKE key`.
async fn kill_at(
    pool: &PgPool,
    change: &contract_sqlx::remediation::OnlineTypeChange,
    key: &str,
    reached: i64,
    rows: i64,
) {
    use std::time::Duration;
    let killed = {
        let (pool, change) = (pool.clone(), change.clone());
        tokio::spawn(
            async move { contract_sqlx::remediation::change_type_online(&pool, &change).await },
        )
    };
    let done_rows = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT coalesce(max(rows_done), 0) FROM public.contract_online_progress WHERE change LIKE $1",
        )
        .bind(key)
        .fetch_one(pool)
        .await
        .unwrap_or(0)
    };
    let mut done = 0;
    for _ in 0..400 {
        done = done_rows().await;
        if done >= reached {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    killed.abort();
    assert!(
        killed.await.is_err_and(|e| e.is_cancelled()),
        "killed mid-backfill"
    );
    assert!(done >= reached, "the backfill never got going: {done}");
    let at_kill = done_rows().await;
    assert!(at_kill < rows, "killed before the end: {at_kill}");
}

/// A tenant's approved multi-transaction plan of `C`, cut right before its `VALIDATE` was
/// sent: the first transaction is committed and its audit row pending at phase 1.
struct CutBeforeValidate {
    scratch: PgScratch,
    /// Kept for `pool`, whose connections go through it.
    _proxy: Proxy,
    pool: PgPool,
    dir: contract_sqlx::TenantDirectory<Postgres>,
    contracts: ContractSet<Postgres>,
    plan: contract_sqlx::plan::TenantPlan,
}

impl CutBeforeValidate {
    /// The scratch database set up by `setup`, the plan approved and cut; the run reports
    /// where it stopped.
    async fn new<C: Contract + contract_sqlx::check::TypeChecks<Postgres>>(
        prefix: &str,
        setup: &str,
    ) -> Self {
        let scratch = PgScratch::create(prefix).await;
        exec(&scratch.pool, setup).await;
        let proxy = Proxy::start(target_of(&pg_url())).await;
        let pool = pg_pool_through(&proxy, &scratch.url);
        let dir = pg_tenant_directory(&pool).await;
        let contracts = ContractSet::<Postgres>::new().with::<C>();
        let dry = remediate(&dir, &contracts, Remediation::DryRun)
            .run()
            .await
            .expect("dry run");
        let plan = dry.plans[0].clone();
        assert!(
            plan.steps.iter().any(|s| s.phases.len() > 1),
            "a multi-transaction plan: {plan}"
        );
        assert!(
            plan.to_string().contains("transaction 2: validate"),
            "{plan}"
        );

        // The first transaction's audit row names every statement: the cut waits for the
        // second transaction's read of that row, then its VALIDATE.
        let fault = proxy.arm(
            &["SELECT phase, status", "VALIDATE CONSTRAINT"],
            Cut::BeforeSending,
        );
        let run = remediate(&dir, &contracts, Remediation::Approved(plan.hash.clone()))
            .run()
            .await
            .expect("run");
        assert!(fault.fired(), "the cut never happened");
        assert_eq!(run.failed.len(), 1, "{:?}", run.failed);
        let error = &run.failed[0].error;
        assert!(
            error.contains("stopped in transaction 2 of")
                && error.contains(", validate at `ALTER TABLE")
                && error.contains("the next pass resumes at transaction 2"),
            "{error}"
        );
        assert_eq!(
            audit(&scratch.pool, "tenant_1").await,
            [("pending".to_owned(), Some(1))]
        );
        Self {
            scratch,
            _proxy: proxy,
            pool,
            dir,
            contracts,
            plan,
        }
    }

    /// The same approved plan run again.
    async fn run_again(&self) -> contract_sqlx::remediation::RemediationRun {
        remediate(
            &self.dir,
            &self.contracts,
            Remediation::Approved(self.plan.hash.clone()),
        )
        .run()
        .await
        .expect("next run")
    }

    async fn drop_db(self) {
        self.pool.close().await;
        self.scratch.drop_db().await;
    }
}

/// The approved plan for `tenant` is cut right before its `VALIDATE` is sent: the first
/// transaction is committed (a valid schema), the run reports where it stopped, and the
/// next pass resumes from the pending audit row and completes.
async fn cut_before_validate<C: Contract + contract_sqlx::check::TypeChecks<Postgres>>(
    prefix: &str,
    setup: &str,
    check: impl AsyncFn(&PgPool, bool),
) {
    let cut = CutBeforeValidate::new::<C>(prefix, setup).await;
    check(&cut.scratch.pool, false).await;

    let next = cut.run_again().await;
    assert!(next.failed.is_empty(), "{:?}", next.failed);
    assert_eq!(next.reconciled.len(), 1, "{:?}", next.reconciled);
    assert_eq!(next.reconciled[0].outcome, ReconcileOutcome::Applied);
    assert!(
        next.reconciled[0]
            .evidence
            .starts_with("resumed at transaction 2 of"),
        "{}",
        next.reconciled[0]
    );
    assert!(next.after.is_clean(), "{}", next.after);
    let rows = audit(&cut.scratch.pool, "tenant_1").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, "applied");
    check(&cut.scratch.pool, true).await;
    cut.drop_db().await;
}

/// `tenant_1.events` with a nullable `user_id` and 1,000 rows, none `NULL`.
const NULLABLE_EVENTS: &str = "CREATE SCHEMA tenant_1; CREATE TABLE tenant_1.events (id int8 PRIMARY KEY, user_id int8); \
     INSERT INTO tenant_1.events SELECT g, g FROM generate_series(1, 1000) g";

/// The plan's `NOT VALID` check is dropped by hand between its transactions, so its
/// `VALIDATE` can never run again. The next run settles the pending row (`failed`: the
/// column is still nullable) instead of resuming it on every pass, plans from the live
/// schema and applies; the run after finds nothing pending.
#[tokio::test]
async fn a_pending_transaction_whose_check_was_dropped_by_hand_is_settled_not_resumed_forever() {
    let cut = CutBeforeValidate::new::<Event>("contract_online_gone", NULLABLE_EVENTS).await;
    exec(
        &cut.scratch.pool,
        "ALTER TABLE tenant_1.events DROP CONSTRAINT events_user_id_not_null",
    )
    .await;

    let next = cut.run_again().await;
    assert_eq!(next.reconciled.len(), 1, "{:?}", next.reconciled);
    let settled = &next.reconciled[0];
    assert_eq!(settled.outcome, ReconcileOutcome::Failed, "{settled}");
    assert!(
        settled
            .evidence
            .starts_with("transaction 2 of 3 (validate at `ALTER TABLE")
            && settled.evidence.contains("can no longer run")
            && settled.evidence.contains("still there"),
        "{settled}"
    );
    assert!(next.failed.is_empty(), "{:?}", next.failed);
    assert!(next.after.is_clean(), "{}", next.after);
    assert!(not_null(&cut.scratch.pool, "tenant_1", "events", "user_id").await);
    let mut rows: Vec<(String, Option<i32>, Option<String>)> = sqlx::query_as(
        "SELECT status, phase, evidence FROM public.contract_audit WHERE tenant = 'tenant_1'",
    )
    .fetch_all(&cut.scratch.pool)
    .await
    .expect("audit rows");
    rows.sort();
    assert_eq!(
        rows,
        [
            ("applied".to_owned(), Some(3), None),
            ("failed".to_owned(), Some(1), Some(settled.evidence.clone())),
        ]
    );

    // The audit log says how the row was settled.
    let entries = contract_sqlx::remediation::AuditEntry::read_postgres(
        &cut.scratch.pool,
        &contract_sqlx::remediation::AuditConfig::default(),
        &contract_sqlx::remediation::AuditQuery::default().tenant("tenant_1"),
    )
    .await
    .expect("audit log");
    let failed = entries
        .iter()
        .find(|e| e.status == "failed")
        .expect("the settled row");
    assert_eq!(failed.evidence.as_ref(), Some(&settled.evidence));
    assert!(failed.to_string().contains("can no longer run"), "{failed}");

    let after = cut.run_again().await;
    assert!(after.reconciled.is_empty(), "{:?}", after.reconciled);
    assert!(after.failed.is_empty(), "{:?}", after.failed);
    cut.drop_db().await;
}

/// The resume of a plan stopped before its `VALIDATE` runs with the caller's timeouts, not
/// the defaults: with `statement_timeout` set to 300 ms and a session holding a lock the
/// `VALIDATE` waits for, it is the statement timeout that ends the wait. The resume used
/// the default options, so a `VALIDATE` needing more than the default 60 s could never
/// complete, whatever the guard was configured with.
#[tokio::test]
async fn a_resumed_transaction_runs_with_the_caller_s_timeouts() {
    use contract_sqlx::remediation::ApplyOptions;
    use std::time::Duration;

    let cut = CutBeforeValidate::new::<Event>("contract_online_resume_opts", NULLABLE_EVENTS).await;
    let mut holder = cut.scratch.pool.acquire().await.expect("connection");
    exec(
        &mut *holder,
        "BEGIN; LOCK TABLE tenant_1.events IN SHARE UPDATE EXCLUSIVE MODE",
    )
    .await;
    let options = ApplyOptions::default()
        .with_statement_timeout(Duration::from_millis(300))
        .with_lock_timeout(Duration::from_secs(30))
        .with_max_attempts(1);
    let next = remediate(
        &cut.dir,
        &cut.contracts,
        Remediation::Approved(cut.plan.hash.clone()),
    )
    .options(options)
    .run()
    .await
    .expect("next run");
    exec(&mut *holder, "ROLLBACK").await;
    drop(holder);
    assert_eq!(next.reconciled.len(), 1, "{:?}", next.reconciled);
    let resumed = &next.reconciled[0];
    assert_eq!(resumed.outcome, ReconcileOutcome::Unknown, "{resumed}");
    assert!(
        resumed.evidence.contains("statement timeout"),
        "ended by the caller's statement_timeout: {resumed}"
    );
    assert_eq!(
        audit(&cut.scratch.pool, "tenant_1").await,
        [("pending".to_owned(), Some(1))],
        "still pending for the next pass"
    );

    let done = cut.run_again().await;
    assert_eq!(done.reconciled.len(), 1, "{:?}", done.reconciled);
    assert_eq!(done.reconciled[0].outcome, ReconcileOutcome::Applied);
    assert!(not_null(&cut.scratch.pool, "tenant_1", "events", "user_id").await);
    cut.drop_db().await;
}

/// A plan stopped between its transactions is not resumed by the guard's first pass,
/// which `start` awaits with every gate closed: here its `VALIDATE` would wait for a lock a
/// session holds (a 60 s `lock_timeout`), and `start` waited with it, the healthy
/// `tenant_2` closed all along. Now `start` returns with `tenant_2` open, nothing is
/// applied to `tenant_1` (its row stays pending at transaction 1, though the plan the
/// first pass makes of it is approved), and a later pass resumes the plan once the lock is
/// gone, also after a pass dropped while its resume waited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_leaves_a_stopped_plan_to_the_next_pass_and_opens_the_healthy_gates() {
    use contract_sqlx::Guard;
    use contract_sqlx::remediation::ApplyOptions;
    use std::time::Duration;

    let setup = format!(
        "{NULLABLE_EVENTS}; CREATE SCHEMA tenant_2; \
         CREATE TABLE tenant_2.events (id int8 PRIMARY KEY, user_id int8 NOT NULL)"
    );
    let cut = CutBeforeValidate::new::<Event>("contract_online_start_resume", &setup).await;
    let mut holder = cut.scratch.pool.acquire().await.expect("connection");
    exec(
        &mut *holder,
        "BEGIN; LOCK TABLE tenant_1.events IN SHARE UPDATE EXCLUSIVE MODE",
    )
    .await;
    let options = ApplyOptions::default()
        .with_lock_timeout(Duration::from_secs(60))
        .with_max_attempts(1);
    // The plan the first pass makes of the schema as the cut left it, approved: nothing
    // keeps it from being applied but the tenant's deferral.
    let replanned = remediate(&cut.dir, &cut.contracts, Remediation::DryRun)
        .run()
        .await
        .expect("dry run")
        .plans[0]
        .hash
        .clone();
    let start = Guard::<Postgres>::builder()
        .contract::<Event>()
        .tenants(Tenants::schemas_like("tenant_%"))
        .remediation(Remediation::Approved(replanned))
        .apply_options(options)
        .start(&cut.scratch.pool);
    let guard = tokio::time::timeout(Duration::from_secs(20), start)
        .await
        .expect("start returns without waiting for the resume's lock")
        .expect("guard start");
    assert!(guard.gate("tenant_2").is_open(), "the healthy tenant flows");
    assert!(!guard.gate("tenant_1").is_open(), "nullable: paused");
    assert_eq!(
        audit(&cut.scratch.pool, "tenant_1").await,
        [("pending".to_owned(), Some(1))],
        "neither resumed nor applied again"
    );
    // A pass dropped while its resume waits for the lock (a caller's timeout) leaves the
    // resume to the next pass (helper-66: the tenant was taken off the set first).
    let dropped = tokio::time::timeout(Duration::from_secs(2), guard.revalidate()).await;
    assert!(dropped.is_err(), "the resume was to wait for the lock");

    exec(&mut *holder, "ROLLBACK").await;
    drop(holder);
    for _ in 0..10 {
        guard.revalidate().await.expect("pass");
        if guard.gate("tenant_1").is_open() {
            break;
        }
    }
    assert!(guard.gate("tenant_1").is_open(), "resumed and reopened");
    assert!(not_null(&cut.scratch.pool, "tenant_1", "events", "user_id").await);
    assert_eq!(
        audit(&cut.scratch.pool, "tenant_1").await,
        [("applied".to_owned(), Some(3))],
        "the pending row resumed, not a second apply"
    );
    drop(guard);
    cut.drop_db().await;
}

#[tokio::test]
async fn set_not_null_cut_between_not_valid_and_validate_resumes_next_pass() {
    cut_before_validate::<Event>("contract_online_nn", NULLABLE_EVENTS, async |pool, done| {
        let check = validated(pool, "tenant_1", "events", "events_user_id_not_null").await;
        if done {
            assert!(not_null(pool, "tenant_1", "events", "user_id").await);
            assert_eq!(
                check, [false; 0],
                "the check is dropped once NOT NULL is set"
            );
        } else {
            assert!(!not_null(pool, "tenant_1", "events", "user_id").await);
            assert_eq!(check, [false], "the check is committed NOT VALID");
            // Valid meanwhile: new rows are checked.
            let insert = sqlx::query("INSERT INTO tenant_1.events VALUES (0, NULL)")
                .execute(pool)
                .await;
            assert!(insert.is_err(), "a NULL is refused by the NOT VALID check");
        }
    })
    .await;
}

/// A checksum of every row of `tenant_1.accounts` (`id`, the value as text).
async fn checksum(pool: &PgPool) -> String {
    sqlx::query_scalar(
        "SELECT md5(string_agg(id::text || ':' || coalesce(user_id::text, '-') || ':' || note, ',' ORDER BY id)) \
         FROM tenant_1.accounts",
    )
    .fetch_one(pool)
    .await
    .expect("checksum")
}

/// The statements of the audit rows, one per line.
async fn audit_statements(pool: &PgPool) -> String {
    sqlx::query_scalar::<_, String>(
        "SELECT string_agg(s, E'\\n') FROM public.contract_audit, jsonb_array_elements_text(statements) s",
    )
    .fetch_one(pool)
    .await
    .expect("audit statements")
}

/// The plan a dry run makes with the online threshold off (every type change made in
/// place), approved and run: the plan, and its audit row's statements, which the record
/// the run returned lists too (the drops of what an interrupted online change left
/// included).
async fn approved_in_place(
    pool: &PgPool,
    contracts: &ContractSet<Postgres>,
) -> (contract_sqlx::plan::TenantPlan, String) {
    use contract_sqlx::remediation::ApplyOptions;

    let tenants = pg_tenant_directory(pool).await;
    let options = ApplyOptions::default().with_online_threshold(None);
    let dry = remediate(&tenants, contracts, Remediation::DryRun)
        .options(options.clone())
        .run()
        .await
        .expect("dry run");
    let plan = dry.plans.first().expect("a plan").clone();
    let run = remediate(
        &tenants,
        contracts,
        Remediation::Approved(plan.hash.clone()),
    )
    .options(options)
    .run()
    .await
    .expect("approved run");
    assert!(run.failed.is_empty(), "{:?}", run.failed);
    let recorded = audit_statements(pool).await;
    assert_eq!(
        run.audits
            .iter()
            .map(|a| a.statements.join("\n"))
            .collect::<Vec<_>>(),
        [recorded.as_str()],
        "the record returned lists what the row lists, the drops included"
    );
    (plan, recorded)
}

async fn column_type(pool: &PgPool, column: &str) -> String {
    sqlx::query_scalar(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
         WHERE attrelid = 'tenant_1.accounts'::regclass AND attname = $1 AND NOT attisdropped",
    )
    .bind(column)
    .fetch_one(pool)
    .await
    .expect("column type")
}

/// A shadow-column backfill killed (its future dropped) after some batches resumes from
/// the stored checkpoint on the next call and ends with every row equal and the new type.
#[tokio::test]
async fn online_type_change_killed_mid_backfill_resumes_from_the_checkpoint() {
    use contract_sqlx::remediation::{OnlineProcedure, OnlineTypeChange, change_type_online};
    use std::time::Duration;

    let scratch = PgScratch::create("contract_online_tc").await;
    exec(
        &scratch.pool,
        "CREATE SCHEMA tenant_1; \
         CREATE TABLE tenant_1.accounts (id int8 PRIMARY KEY, user_id int4 NOT NULL DEFAULT 7, note text NOT NULL); \
         CREATE INDEX accounts_user_id_idx ON tenant_1.accounts (user_id); \
         INSERT INTO tenant_1.accounts SELECT g, g * 3, 'n' || g FROM generate_series(1, 20000) g; \
         ANALYZE tenant_1.accounts",
    )
    .await;
    let before = checksum(&scratch.pool).await;
    let change = OnlineTypeChange::new("tenant_1", "accounts", "user_id", "int8")
        .batches(500, Duration::from_millis(20))
        .procedure(OnlineProcedure::ShadowColumn);
    kill_mid_backfill(&scratch.pool, &change, 2000, 20000).await;
    // A writer between the runs: the trigger keeps the shadow column in sync.
    exec(&scratch.pool, "UPDATE tenant_1.accounts SET user_id = 1 WHERE id = 19999; INSERT INTO tenant_1.accounts (id, note) VALUES (20001, 'late')").await;
    // The expected data now: the writes above, every value as it was.
    let expected = checksum(&scratch.pool).await;
    assert_ne!(expected, before);

    let report = change_type_online(&scratch.pool, &change)
        .await
        .expect("resumed run");
    let resumed = report.resumed_from.expect("resumed from a checkpoint");
    assert!(resumed >= 2000, "resumed from key {resumed}");
    assert!(
        report.rows_backfilled <= 20001 - resumed,
        "only the rest is backfilled: {} rows after key {resumed}",
        report.rows_backfilled
    );
    assert_eq!(
        checksum(&scratch.pool).await,
        expected,
        "every row is equal"
    );
    assert_eq!(column_type(&scratch.pool, "user_id").await, "bigint");
    let (not_null, default, index): (bool, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT a.attnotnull, pg_get_expr(d.adbin, d.adrelid), \
                (SELECT indexdef FROM pg_indexes WHERE schemaname = 'tenant_1' AND indexname = 'accounts_user_id_idx') \
         FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
         WHERE a.attrelid = 'tenant_1.accounts'::regclass AND a.attname = 'user_id'",
    )
    .fetch_one(&scratch.pool)
    .await
    .expect("column");
    assert!(not_null, "NOT NULL moved to the new column");
    assert_eq!(default.as_deref(), Some("7"), "the default moved");
    assert!(
        index.as_deref().is_some_and(|i| i.contains("(user_id)")),
        "the index was rebuilt on the new column: {index:?}"
    );
    let leftovers: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'tenant_1.accounts'::regclass AND NOT tgisinternal) \
              + (SELECT count(*) FROM public.contract_online_progress)",
    )
    .fetch_one(&scratch.pool)
    .await
    .expect("leftovers");
    assert_eq!(leftovers, 0, "no trigger or checkpoint left");
    scratch.drop_db().await;
}

/// `tenant_1.accounts` of 20,000 rows with an `int4` `user_id`, for the shadow-column tests.
const SHADOW_ACCOUNTS: &str = "CREATE SCHEMA tenant_1; \
     CREATE TABLE tenant_1.accounts (id int8 PRIMARY KEY, user_id int4 NOT NULL, note text NOT NULL); \
     INSERT INTO tenant_1.accounts SELECT g, g * 3, 'n' || g FROM generate_series(1, 20000) g; \
     ANALYZE tenant_1.accounts";

/// A shadow-column change to `int8` killed mid-backfill, then a change of the same column to
/// `numeric(20,2)`: the leftover `int8` shadow column is dropped and the backfill starts
/// over. `ADD COLUMN IF NOT EXISTS` used to keep it, the integers compared equal to their
/// casts, and the swap put `bigint` in place of the `numeric(20,2)` asked for.
#[tokio::test]
async fn an_online_change_to_another_type_drops_the_shadow_column_an_interrupted_one_left() {
    use contract_sqlx::remediation::{OnlineProcedure, OnlineTypeChange, change_type_online};
    use std::time::Duration;

    let scratch = PgScratch::create("contract_online_other").await;
    exec(&scratch.pool, SHADOW_ACCOUNTS).await;
    let values = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT md5(string_agg(id::text || ':' || (user_id * 100)::int8::text, ',' ORDER BY id)) \
             FROM tenant_1.accounts",
        )
        .fetch_one(&scratch.pool)
        .await
        .expect("values")
    };
    let before = values().await;
    let to_int8 = OnlineTypeChange::new("tenant_1", "accounts", "user_id", "int8")
        .batches(500, Duration::from_millis(20))
        .procedure(OnlineProcedure::ShadowColumn);
    kill_mid_backfill(&scratch.pool, &to_int8, 2000, 20000).await;
    assert_eq!(
        column_type(&scratch.pool, "user_id_contract_new").await,
        "bigint",
        "the interrupted change left its shadow column"
    );

    let to_numeric = OnlineTypeChange::new("tenant_1", "accounts", "user_id", "numeric(20,2)")
        .procedure(OnlineProcedure::ShadowColumn);
    let report = change_type_online(&scratch.pool, &to_numeric)
        .await
        .expect("the change to numeric");
    assert_eq!(report.resumed_from, None, "started over, not resumed");
    assert_eq!(
        column_type(&scratch.pool, "user_id").await,
        "numeric(20,2)",
        "the type asked for, not the leftover's"
    );
    assert_eq!(values().await, before, "every value kept");
    let leftovers: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'tenant_1.accounts'::regclass AND NOT tgisinternal), \
                (SELECT count(*) FROM public.contract_online_progress), \
                (SELECT count(*) FROM pg_attribute WHERE attrelid = 'tenant_1.accounts'::regclass \
                   AND attname LIKE '%contract%' AND NOT attisdropped)",
    )
    .fetch_one(&scratch.pool)
    .await
    .expect("leftovers");
    assert_eq!(
        leftovers,
        (0, 0, 0),
        "no trigger, checkpoint or shadow column left"
    );
    scratch.drop_db().await;
}

/// A shadow-column change killed mid-backfill whose shadow column (and trigger) were then
/// dropped by hand: the next run starts over. Its checkpoint was kept, so the run resumed
/// past the rows it had filled into a new, empty shadow column and failed its verification
/// on every pass.
#[tokio::test]
async fn an_online_change_whose_shadow_column_was_dropped_by_hand_starts_over() {
    use contract_sqlx::remediation::{OnlineProcedure, OnlineTypeChange, change_type_online};
    use std::time::Duration;

    let scratch = PgScratch::create("contract_online_orphan").await;
    exec(&scratch.pool, SHADOW_ACCOUNTS).await;
    let before = checksum(&scratch.pool).await;
    let change = OnlineTypeChange::new("tenant_1", "accounts", "user_id", "int8")
        .batches(500, Duration::from_millis(20))
        .procedure(OnlineProcedure::ShadowColumn);
    kill_mid_backfill(&scratch.pool, &change, 2000, 20000).await;
    exec(
        &scratch.pool,
        "DROP TRIGGER accounts_user_id_contract ON tenant_1.accounts; \
         ALTER TABLE tenant_1.accounts DROP COLUMN user_id_contract_new",
    )
    .await;
    let report = change_type_online(&scratch.pool, &change)
        .await
        .expect("the next run");
    assert_eq!(report.resumed_from, None, "started over");
    assert_eq!(column_type(&scratch.pool, "user_id").await, "bigint");
    assert_eq!(checksum(&scratch.pool).await, before, "every row is equal");
    scratch.drop_db().await;
}

/// A shadow-column change killed mid-backfill, then the same change made in place (the
/// online threshold turned off): what the killed run left is dropped first and the
/// `ALTER … TYPE` runs. Its trigger names the column in `WHEN`, which PostgreSQL refuses
/// for a type change, so the remediation failed on every pass.
#[tokio::test]
async fn a_type_change_in_place_drops_what_an_interrupted_online_change_left() {
    use contract_sqlx::remediation::{OnlineProcedure, OnlineTypeChange};
    use std::time::Duration;

    let scratch = PgScratch::create("contract_online_then_plain").await;
    exec(&scratch.pool, SHADOW_ACCOUNTS).await;
    let before = checksum(&scratch.pool).await;
    let online = OnlineTypeChange::new("tenant_1", "accounts", "user_id", "int8")
        .batches(500, Duration::from_millis(20))
        .procedure(OnlineProcedure::ShadowColumn);
    kill_mid_backfill(&scratch.pool, &online, 2000, 20000).await;

    let contracts = ContractSet::<Postgres>::new().with::<Account>();
    let (plan, recorded) = approved_in_place(&scratch.pool, &contracts).await;
    assert!(
        plan.statements().any(|s| s.contains("TYPE int8 USING")),
        "{plan}"
    );
    assert!(
        recorded.contains("DROP TRIGGER IF EXISTS \"accounts_user_id_contract\"")
            && recorded.contains("DROP COLUMN IF EXISTS \"user_id_contract_new\"")
            && !recorded.contains("DO $"),
        "the drops are in the audit row: {recorded}"
    );
    assert_eq!(column_type(&scratch.pool, "user_id").await, "bigint");
    assert_eq!(checksum(&scratch.pool).await, before, "every row is equal");
    let leftovers: (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'tenant_1.accounts'::regclass AND NOT tgisinternal), \
                (SELECT count(*) FROM pg_proc WHERE proname LIKE '%contract%'), \
                (SELECT count(*) FROM public.contract_online_progress), \
                (SELECT count(*) FROM pg_attribute WHERE attrelid = 'tenant_1.accounts'::regclass \
                   AND attname LIKE '%contract%' AND NOT attisdropped)",
    )
    .fetch_one(&scratch.pool)
    .await
    .expect("leftovers");
    assert_eq!(
        leftovers,
        (0, 0, 0, 0),
        "no trigger, function, checkpoint or shadow column left"
    );
    scratch.drop_db().await;
}

/// The same in a plan of several transactions (the type changed in place in the first, a
/// `SET NOT NULL` validated in the later ones): the record returned lists what the first
/// transaction dropped, as its audit row does. It listed the plan's statements only.
#[tokio::test]
async fn a_phased_plan_s_record_lists_what_its_first_transaction_dropped() {
    use contract_sqlx::remediation::{OnlineProcedure, OnlineTypeChange};
    use std::time::Duration;

    let scratch = PgScratch::create("contract_online_then_phased").await;
    exec(&scratch.pool, SHADOW_ACCOUNTS).await;
    let online = OnlineTypeChange::new("tenant_1", "accounts", "user_id", "int8")
        .batches(500, Duration::from_millis(20))
        .procedure(OnlineProcedure::ShadowColumn);
    kill_mid_backfill(&scratch.pool, &online, 2000, 20000).await;
    exec(
        &scratch.pool,
        "ALTER TABLE tenant_1.accounts ALTER COLUMN note DROP NOT NULL",
    )
    .await;

    let contracts = ContractSet::<Postgres>::new().with::<AccountNote>();
    let (plan, recorded) = approved_in_place(&scratch.pool, &contracts).await;
    assert!(
        plan.statements().any(|s| s.contains("TYPE int8 USING"))
            && plan.statements().any(|s| s.contains("VALIDATE")),
        "a type change in place and a validated NOT NULL: {plan}"
    );
    assert!(
        recorded.contains("DROP TRIGGER IF EXISTS \"accounts_user_id_contract\""),
        "the drops are in the audit row: {recorded}"
    );
    assert_eq!(column_type(&scratch.pool, "user_id").await, "bigint");
    scratch.drop_db().await;
}

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "accounts")]
#[allow(dead_code)]
struct AccountNote {
    #[contract(primary_key)]
    id: i64,
    user_id: i64,
    note: String,
}

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "accounts")]
#[allow(dead_code)]
struct AccountUser {
    user_id: i64,
}

/// A table copy killed mid-copy, then the same change made in place: the copy, its trigger
/// and its checkpoints are dropped in the in-place change's transaction (and listed in its
/// audit row). The copy's trigger went on copying every write into the stale copy.
#[tokio::test]
async fn a_type_change_in_place_drops_an_interrupted_copy_of_the_table() {
    use contract_sqlx::remediation::OnlineProcedure;

    let (scratch, change) = copy_of_20k_rows("contract_online_copy_then_plain").await;
    let change = change.procedure(OnlineProcedure::TableCopy);
    kill_at(&scratch.pool, &change, "copy:%::int8", 2000, 20000).await;
    assert!(
        copy_leftovers(&scratch.pool).await > 0,
        "the killed copy left its table"
    );
    let contracts = ContractSet::<Postgres>::new().with::<AccountUser>();
    let (_, recorded) = approved_in_place(&scratch.pool, &contracts).await;
    assert!(
        recorded.contains("DROP TABLE IF EXISTS \"tenant_1\".\"accounts_contract_copy\""),
        "{recorded}"
    );
    assert_eq!(copy_leftovers(&scratch.pool).await, 0);
    assert_eq!(column_type(&scratch.pool, "user_id").await, "bigint");
    let rows: (i64, i64) =
        sqlx::query_as("SELECT count(*), sum(user_id - id * 3)::int8 FROM tenant_1.accounts")
            .fetch_one(&scratch.pool)
            .await
            .expect("rows");
    assert_eq!(rows, (20000, 0));
    scratch.drop_db().await;
}

/// A type change made in place while an online change of the same column runs (another
/// replica, or a direct call): it waits for the table's online lock and fails on lock
/// timeout, and the running change finishes with every row. The in-place change took the
/// running change's trigger and shadow column for leftovers and dropped them.
#[tokio::test]
async fn a_type_change_in_place_leaves_a_running_online_change_alone() {
    use contract_sqlx::remediation::{ApplyOptions, OnlineProcedure, OnlineTypeChange};
    use std::time::Duration;

    let scratch = PgScratch::create("contract_online_running_plain").await;
    exec(&scratch.pool, SHADOW_ACCOUNTS).await;
    let before = checksum(&scratch.pool).await;
    let tenants = pg_tenant_directory(&scratch.pool).await;
    let contracts = ContractSet::<Postgres>::new().with::<Account>();
    let options = ApplyOptions::default()
        .with_online_threshold(None)
        .with_lock_timeout(Duration::from_millis(100))
        .with_max_attempts(2);
    let dry = remediate(&tenants, &contracts, Remediation::DryRun)
        .options(options.clone())
        .run()
        .await
        .expect("dry run");
    let hash = dry.plans.first().expect("a plan").hash.clone();
    let online = OnlineTypeChange::new("tenant_1", "accounts", "user_id", "int8")
        .batches(500, Duration::from_millis(30))
        .procedure(OnlineProcedure::ShadowColumn);
    let running = {
        let (pool, online) = (scratch.pool.clone(), online.clone());
        tokio::spawn(
            async move { contract_sqlx::remediation::change_type_online(&pool, &online).await },
        )
    };
    backfill_started(&scratch.pool, "%")
        .await
        .expect("the backfill started");
    let run = remediate(&tenants, &contracts, Remediation::Approved(hash))
        .options(options)
        .run()
        .await
        .expect("the run");
    assert_eq!(run.failed.len(), 1, "{:?}", run.audits);
    let report = running
        .await
        .expect("join")
        .expect("the running change finishes");
    assert_eq!(report.rows_backfilled, 20000, "{report:?}");
    assert_eq!(column_type(&scratch.pool, "user_id").await, "bigint");
    assert_eq!(checksum(&scratch.pool).await, before, "every row is equal");
    scratch.drop_db().await;
}

/// Shadow-column changes of `o`.`x_y` (killed mid-backfill) and `o_x`.`y`: both names make
/// the same `o_x_y_contract`, and the function was named by it alone, so the second change
/// replaced the first's trigger function with one that reads `NEW.y`: every write to `o`
/// failed. Each change has a function of its own now.
#[tokio::test]
async fn shadow_changes_whose_table_and_column_names_run_together_keep_their_own_functions() {
    use contract_sqlx::remediation::{OnlineProcedure, OnlineTypeChange, change_type_online};
    use std::time::Duration;

    let scratch = PgScratch::create("contract_online_fn_names").await;
    exec(
        &scratch.pool,
        "CREATE SCHEMA tenant_1; \
         CREATE TABLE tenant_1.o (id int8 PRIMARY KEY, x_y int4 NOT NULL); \
         CREATE TABLE tenant_1.o_x (id int8 PRIMARY KEY, y int4 NOT NULL); \
         INSERT INTO tenant_1.o SELECT g, g FROM generate_series(1, 20000) g; \
         INSERT INTO tenant_1.o_x SELECT g, g FROM generate_series(1, 100) g",
    )
    .await;
    let first = OnlineTypeChange::new("tenant_1", "o", "x_y", "int8")
        .batches(500, Duration::from_millis(20))
        .procedure(OnlineProcedure::ShadowColumn);
    kill_mid_backfill(&scratch.pool, &first, 2000, 20000).await;
    let second = OnlineTypeChange::new("tenant_1", "o_x", "y", "int8")
        .procedure(OnlineProcedure::ShadowColumn);
    change_type_online(&scratch.pool, &second)
        .await
        .expect("the second change");
    exec(
        &scratch.pool,
        "INSERT INTO tenant_1.o VALUES (20001, 20001)",
    )
    .await;
    change_type_online(&scratch.pool, &first)
        .await
        .expect("the first change, resumed");
    // The change completed: the new type, every row (the one written between the two
    // changes included) carried over.
    let after: (String, i64) = sqlx::query_as(
        "SELECT format_type(a.atttypid, a.atttypmod), \
                (SELECT count(*) FROM tenant_1.o WHERE x_y = id) \
         FROM pg_attribute a WHERE a.attrelid = 'tenant_1.o'::regclass AND a.attname = 'x_y'",
    )
    .fetch_one(&scratch.pool)
    .await
    .expect("column");
    assert_eq!(after, ("bigint".to_owned(), 20001));
    scratch.drop_db().await;
}

/// A checkpoint of this column under the unquoted key of earlier versions (a change killed
/// before the upgrade) is dropped when the column's next change starts: it is never resumed
/// and stayed in the progress table for good.
#[tokio::test]
async fn a_checkpoint_under_an_earlier_version_s_key_is_dropped() {
    use contract_sqlx::remediation::{OnlineProcedure, OnlineTypeChange, change_type_online};

    let scratch = PgScratch::create("contract_online_legacy_key").await;
    exec(&scratch.pool, SHADOW_ACCOUNTS).await;
    exec(
        &scratch.pool,
        "CREATE TABLE public.contract_online_progress (change text PRIMARY KEY, last_key int8, \
             rows_done int8 NOT NULL DEFAULT 0, state text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now()); \
         INSERT INTO public.contract_online_progress (change, last_key, rows_done, state) \
             VALUES ('tenant_1.accounts.user_id::int8', 5000, 5000, 'backfill'), \
                    ('tenant_1.accounts.user_id::x::int8', 5000, 5000, 'backfill')",
    )
    .await;
    let change = OnlineTypeChange::new("tenant_1", "accounts", "user_id", "int8")
        .procedure(OnlineProcedure::ShadowColumn);
    let report = change_type_online(&scratch.pool, &change)
        .await
        .expect("the change");
    assert_eq!(report.resumed_from, None);
    let left: Vec<String> =
        sqlx::query_scalar("SELECT change FROM public.contract_online_progress ORDER BY change")
            .fetch_all(&scratch.pool)
            .await
            .expect("checkpoints");
    assert_eq!(
        left,
        ["tenant_1.accounts.user_id::x::int8"],
        "only the other column's (`user_id::x`) is kept"
    );
    scratch.drop_db().await;
}

/// Two columns whose dotted names read the same unquoted (`a`.`b.c` and `a.b`.`c`): a
/// change of one leaves the other's checkpoint alone, and the other resumes from it. Their
/// checkpoints shared a key, so the second change took the first's checkpoint for a
/// leftover and dropped it: the first started over.
#[tokio::test]
async fn changes_of_columns_whose_dotted_names_read_alike_keep_their_own_checkpoints() {
    use contract_sqlx::remediation::{OnlineProcedure, OnlineTypeChange, change_type_online};
    use std::time::Duration;

    let scratch = PgScratch::create("contract_online_dotted").await;
    exec(
        &scratch.pool,
        "CREATE SCHEMA tenant_1; \
         CREATE TABLE tenant_1.a (id int8 PRIMARY KEY, \"b.c\" int4 NOT NULL); \
         CREATE TABLE tenant_1.\"a.b\" (id int8 PRIMARY KEY, c int4 NOT NULL); \
         INSERT INTO tenant_1.a SELECT g, g * 3 FROM generate_series(1, 20000) g; \
         INSERT INTO tenant_1.\"a.b\" SELECT g, g * 5 FROM generate_series(1, 2000) g; \
         ANALYZE tenant_1.a; ANALYZE tenant_1.\"a.b\"",
    )
    .await;
    let first = OnlineTypeChange::new("tenant_1", "a", "b.c", "int8")
        .batches(500, Duration::from_millis(20))
        .procedure(OnlineProcedure::ShadowColumn);
    kill_mid_backfill(&scratch.pool, &first, 2000, 20000).await;
    let second = OnlineTypeChange::new("tenant_1", "a.b", "c", "int8")
        .procedure(OnlineProcedure::ShadowColumn);
    change_type_online(&scratch.pool, &second)
        .await
        .expect("the second change");
    let report = change_type_online(&scratch.pool, &first)
        .await
        .expect("the first change, again");
    assert!(
        report.resumed_from.is_some(),
        "resumed from its checkpoint: {report:?}"
    );
    let sums: (String, String, i64, i64) = sqlx::query_as(
        "SELECT (SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
                 WHERE attrelid = 'tenant_1.a'::regclass AND attname = 'b.c'), \
                (SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
                 WHERE attrelid = 'tenant_1.\"a.b\"'::regclass AND attname = 'c'), \
                (SELECT sum(\"b.c\" - id * 3) FROM tenant_1.a)::int8, \
                (SELECT sum(c - id * 5) FROM tenant_1.\"a.b\")::int8",
    )
    .fetch_one(&scratch.pool)
    .await
    .expect("types and values");
    assert_eq!(sums, ("bigint".into(), "bigint".into(), 0, 0));
    scratch.drop_db().await;
}

/// Table copies of one column to `int8`, then to `numeric`, each killed mid-copy, then to
/// `int8` again: the last one copies anew. Each copy dropped only its own checkpoint with
/// the copy table it replaced, so the `int8` checkpoint outlived the `numeric` copy and the
/// last run resumed into it: its rows read the same as text, and `numeric` was swapped in.
#[tokio::test]
async fn a_copy_is_not_resumed_into_the_copy_table_of_another_change() {
    use contract_sqlx::remediation::{OnlineProcedure, OnlineTypeChange, change_type_online};
    use std::time::Duration;

    let (scratch, to_int8) = copy_of_20k_rows("contract_online_copy_other").await;
    let to_int8 = to_int8.procedure(OnlineProcedure::TableCopy);
    kill_at(&scratch.pool, &to_int8, "copy:%::int8", 2000, 20000).await;
    let to_numeric = OnlineTypeChange::new("tenant_1", "accounts", "user_id", "numeric")
        .batches(500, Duration::from_millis(20))
        .procedure(OnlineProcedure::TableCopy);
    kill_at(&scratch.pool, &to_numeric, "copy:%::numeric", 2000, 20000).await;

    let report = change_type_online(&scratch.pool, &to_int8)
        .await
        .expect("the change to int8");
    assert_eq!(report.resumed_from, None, "copied anew");
    assert_eq!(column_type(&scratch.pool, "user_id").await, "bigint");
    let (table, mirror) = copy_sums(&scratch.pool).await;
    assert_eq!(table, mirror, "every row is equal");
    assert_eq!(copy_leftovers(&scratch.pool).await, 0);
    scratch.drop_db().await;
}

/// A column named `a$contract$b` is changed online by either procedure. Their function
/// bodies were quoted with the fixed tag `$contract$`, which the name ended early: the
/// change failed with a syntax error on every pass.
#[tokio::test]
async fn a_column_whose_name_holds_the_dollar_quote_tag_is_changed_online() {
    use contract_sqlx::remediation::{OnlineProcedure, OnlineTypeChange, change_type_online};

    let scratch = PgScratch::create("contract_online_dollar").await;
    let mut setup = String::from("CREATE SCHEMA tenant_1;");
    for table in ["by_shadow", "by_copy"] {
        setup.push_str(&format!(
            "CREATE TABLE tenant_1.{table} (id int8 PRIMARY KEY, \"a$contract$b\" int4 NOT NULL); \
             CREATE INDEX \"{table}$contract$idx\" ON tenant_1.{table} (\"a$contract$b\"); \
             INSERT INTO tenant_1.{table} SELECT g, g * 3 FROM generate_series(1, 3000) g;"
        ));
    }
    exec(&scratch.pool, setup).await;
    for (table, procedure) in [
        ("by_shadow", OnlineProcedure::ShadowColumn),
        ("by_copy", OnlineProcedure::TableCopy),
    ] {
        let change =
            OnlineTypeChange::new("tenant_1", table, "a$contract$b", "int8").procedure(procedure);
        let report = change_type_online(&scratch.pool, &change)
            .await
            .unwrap_or_else(|e| panic!("{table}: {e}"));
        assert_eq!(report.procedure, procedure);
        let (kind, sum): (String, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT format_type(atttypid, atttypmod), (SELECT sum(\"a$contract$b\")::int8 FROM tenant_1.{table}) \
             FROM pg_attribute WHERE attrelid = 'tenant_1.{table}'::regclass AND attname = 'a$contract$b'"
        )))
        .fetch_one(&scratch.pool)
        .await
        .expect("column");
        assert_eq!(
            (kind.as_str(), sum),
            ("bigint", 3 * 3000 * 3001 / 2),
            "{table}"
        );
    }
    scratch.drop_db().await;
}

/// A primary-key column is refused with the reason, and nothing is changed.
#[tokio::test]
async fn online_type_change_refuses_a_primary_key_column_and_says_why() {
    use contract_sqlx::remediation::{OnlineTypeChange, change_type_online};

    let scratch = PgScratch::create("contract_online_pk").await;
    exec(
        &scratch.pool,
        "CREATE SCHEMA tenant_1; CREATE TABLE tenant_1.accounts (id int4 PRIMARY KEY, user_id int4, note text NOT NULL)",
    )
    .await;
    let error = change_type_online(
        &scratch.pool,
        &OnlineTypeChange::new("tenant_1", "accounts", "id", "int8"),
    )
    .await
    .expect_err("refused");
    assert_eq!(
        error.to_string(),
        "not remediable online: `tenant_1.accounts.id` is part of the primary key (swapping it needs a new unique index and a new key constraint); change it by hand in a maintenance window"
    );
    assert_eq!(column_type(&scratch.pool, "id").await, "integer");
    let columns: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 'tenant_1.accounts'::regclass AND attnum > 0",
    )
    .fetch_one(&scratch.pool)
    .await
    .expect("columns");
    assert_eq!(columns, 3, "no shadow column");
    scratch.drop_db().await;
}

/// The planner turns a rewrite online by table size, through the normal remediation path:
/// a table at or above the (here tiny) threshold gets the `backfill` hazard and the online
/// phases, and its approved plan runs the online procedure; a smaller one keeps the plain
/// `ALTER … USING`. Both end with the new type and every row equal.
#[tokio::test]
async fn the_planner_turns_rewrites_of_big_tables_online_and_keeps_small_ones_plain() {
    use contract_sqlx::plan::{Hazard, PhaseKind};
    use contract_sqlx::remediation::ApplyOptions;
    use std::time::Duration;

    let scratch = PgScratch::create("contract_online_planned").await;
    let mut setup = String::new();
    for (tenant, rows) in [("tenant_big", 500), ("tenant_small", 50)] {
        setup.push_str(&format!(
            "CREATE SCHEMA {tenant}; \
             CREATE TABLE {tenant}.events (id int8 PRIMARY KEY, user_id int4 NOT NULL); \
             INSERT INTO {tenant}.events SELECT g, g * 3 FROM generate_series(1, {rows}) g; \
             ANALYZE {tenant}.events; "
        ));
    }
    exec(&scratch.pool, &setup).await;
    // Per tenant: the column's type and a checksum of every row.
    let sums = async || {
        let mut sums = Vec::new();
        for tenant in ["tenant_big", "tenant_small"] {
            let row: (String, String) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT format_type(a.atttypid, a.atttypmod), \
                        (SELECT md5(string_agg(id || ':' || user_id, ',' ORDER BY id)) FROM {tenant}.events) \
                 FROM pg_attribute a WHERE a.attrelid = '{tenant}.events'::regclass AND a.attname = 'user_id'"
            )))
            .fetch_one(&scratch.pool)
            .await
            .expect("checksum");
            sums.push((tenant, row.0, row.1));
        }
        sums
    };
    let before = sums().await;
    let contracts = ContractSet::<Postgres>::new().with::<Event>();
    let tenants = pg_tenant_directory(&scratch.pool).await;
    let options = ApplyOptions::default()
        .with_online_threshold(Some(100))
        .with_online_batches(64, Duration::ZERO);
    let dry = remediate(&tenants, &contracts, Remediation::DryRun)
        .options(options.clone())
        .run()
        .await
        .expect("dry run");
    let plan = |tenant: &str| {
        dry.plans
            .iter()
            .find(|p| p.tenant == tenant)
            .cloned()
            .expect("a plan")
    };
    let (big, small) = (plan("tenant_big"), plan("tenant_small"));
    assert_eq!(big.hazards(), [Hazard::Backfill], "{big}");
    let online = big.steps[0].online.as_ref().expect("online");
    assert_eq!((online.rows_estimate, online.threshold_rows), (500, 100));
    let kinds: Vec<PhaseKind> = big.steps[0].phases.iter().map(|p| p.kind).collect();
    assert_eq!(
        kinds,
        [
            PhaseKind::Expand,
            PhaseKind::Backfill,
            PhaseKind::Verify,
            PhaseKind::Swap
        ]
    );
    let text = big.to_string();
    assert!(
        text.contains("hazards: backfill (copies the column in batches")
            && text.contains("phase 2: backfill (ROW EXCLUSIVE"),
        "{text}"
    );
    let json = serde_json::to_value(&big).expect("json");
    assert_eq!(json["steps"][0]["online"]["new_type"], "int8");
    assert_eq!(json["steps"][0]["phases"][3]["kind"], "swap");
    assert!(small.hazards().contains(&Hazard::TableRewrite), "{small}");
    // The threshold changes only the big table's plan: the small one's hash is the one a
    // planner without online changes gives (approvals of small tables' plans stay valid).
    let never = remediate(&tenants, &contracts, Remediation::DryRun)
        .options(options.clone().with_online_threshold(None))
        .run()
        .await
        .expect("dry run without online changes");
    let hash_without = |tenant: &str| {
        never
            .plans
            .iter()
            .find(|p| p.tenant == tenant)
            .map(|p| p.hash.clone())
    };
    assert_eq!(hash_without("tenant_small"), Some(small.hash.clone()));
    assert_ne!(hash_without("tenant_big"), Some(big.hash.clone()));
    assert!(
        small.statements().any(|s| s.contains("TYPE int8 USING")),
        "{small}"
    );

    for plan in [&big, &small] {
        let run = remediate(
            &tenants,
            &contracts,
            Remediation::Approved(plan.hash.clone()),
        )
        .options(options.clone())
        .run()
        .await
        .expect("approved run");
        assert!(run.failed.is_empty(), "{:?}", run.failed);
        assert_eq!(run.audits.len(), 1);
        let logged = run.log.tenant(&plan.tenant).expect("logged");
        let statements = logged.statements.join("\n");
        if plan.tenant == "tenant_big" {
            assert!(
                statements.contains("500 of about 500 rows backfilled in 8 batches"),
                "{statements}"
            );
            // Progress in the execution log: the first batch's sample and the end's.
            let done: Vec<(u64, u64)> = logged
                .progress
                .iter()
                .map(|p| (p.rows_done, p.rows_total))
                .collect();
            assert_eq!(done.first(), Some(&(64, 500)), "{:?}", logged.progress);
            assert_eq!(done.last(), Some(&(500, 500)), "{:?}", logged.progress);
            let json: serde_json::Value =
                serde_json::from_str(&run.log.to_json_line()).expect("log json");
            let entry = json["tenants"]
                .as_array()
                .and_then(|t| t.iter().find(|t| t["tenant"] == "tenant_big"))
                .expect("tenant_big in the JSON log");
            let last = &entry["progress"][done.len() - 1];
            assert_eq!(
                (
                    &last["column"],
                    &last["rows_done"],
                    &last["rows_total"],
                    &last["eta_s"]
                ),
                (
                    &serde_json::json!("tenant_big.events.user_id"),
                    &serde_json::json!(500),
                    &serde_json::json!(500),
                    &serde_json::json!(0)
                ),
                "{json}"
            );
        } else {
            assert!(logged.progress.is_empty(), "{:?}", logged.progress);
            assert!(statements.contains("USING"), "{statements}");
        }
    }
    let after = sums().await;
    assert_eq!(
        after,
        before
            .iter()
            .map(|(t, _, sum)| (*t, "bigint".to_owned(), sum.clone()))
            .collect::<Vec<_>>()
    );
    let again = remediate(&tenants, &contracts, Remediation::DryRun)
        .options(options)
        .run()
        .await
        .expect("re-check");
    assert!(again.plans.is_empty(), "both compliant: {:?}", again.plans);
    scratch.drop_db().await;
}

/// A scratch database with [`copy_setup`]'s table of 20,000 rows, and the change the copy
/// tests apply to it (batches of 500 rows, 20 ms apart).
async fn copy_of_20k_rows(
    prefix: &str,
) -> (PgScratch, contract_sqlx::remediation::OnlineTypeChange) {
    let scratch = PgScratch::create(prefix).await;
    exec(&scratch.pool, copy_setup(20_000)).await;
    let change = contract_sqlx::remediation::OnlineTypeChange::new(
        "tenant_1", "accounts", "user_id", "int8",
    )
    .batches(500, std::time::Duration::from_millis(20));
    (scratch, change)
}

/// `tenant_1.accounts` for the table-copy tests: a `serial` key, a column with a default,
/// a check, an index and a partial unique index, a generated column, a comment, grants
/// (to predefined roles, which every cluster has) and storage parameters; `rows` rows.
fn copy_setup(rows: i64) -> String {
    format!(
        "CREATE SCHEMA tenant_1; \
         CREATE TABLE tenant_1.accounts (id serial PRIMARY KEY, user_id int4 NOT NULL DEFAULT 7 CHECK (user_id >= 0), \
             note text NOT NULL, twice int8 GENERATED ALWAYS AS (id * 2) STORED) WITH (fillfactor = 90); \
         CREATE INDEX accounts_user_id_idx ON tenant_1.accounts (user_id); \
         CREATE UNIQUE INDEX accounts_note_key ON tenant_1.accounts (note) WHERE note <> ''; \
         COMMENT ON TABLE tenant_1.accounts IS 'the accounts'; \
         GRANT SELECT, INSERT ON tenant_1.accounts TO pg_monitor; \
         GRANT UPDATE ON tenant_1.accounts TO pg_read_all_stats WITH GRANT OPTION; \
         INSERT INTO tenant_1.accounts (user_id, note) SELECT g * 3, 'n' || g FROM generate_series(1, {rows}) g; \
         CREATE TABLE tenant_1.mirror AS SELECT id::int8, user_id::int8, note FROM tenant_1.accounts; \
         ALTER TABLE tenant_1.mirror ADD PRIMARY KEY (id); \
         ANALYZE tenant_1.accounts"
    )
}

/// Everything the swap must keep: index names and definitions, constraints, grants,
/// owner, comment, storage parameters, the sequence's owner and the column types.
async fn table_facts(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT 'index ' || indexname || ': ' || indexdef FROM pg_indexes WHERE schemaname = 'tenant_1' AND tablename = 'accounts' \
         UNION ALL SELECT 'constraint ' || conname || ': ' || pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'tenant_1.accounts'::regclass \
         UNION ALL SELECT 'grant ' || a.grantee::regrole || ' ' || a.privilege_type || ' ' || a.is_grantable \
             FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = 'tenant_1.accounts'::regclass \
         UNION ALL SELECT 'table ' || pg_get_userbyid(relowner) || ' ' || coalesce(obj_description(oid, 'pg_class'), '-') || ' ' || reloptions::text \
             FROM pg_class WHERE oid = 'tenant_1.accounts'::regclass \
         UNION ALL SELECT 'sequence ' || coalesce(pg_get_serial_sequence('tenant_1.accounts', 'id'), '-') \
         UNION ALL SELECT 'column ' || attname || ' ' || format_type(atttypid, atttypmod) || ' ' || attnotnull \
             FROM pg_attribute WHERE attrelid = 'tenant_1.accounts'::regclass AND attnum > 0 AND NOT attisdropped \
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("table facts")
}

/// `(table, mirror)` checksums of every row of `tenant_1.accounts` and its mirror.
async fn copy_sums(pool: &PgPool) -> (String, String) {
    sqlx::query_as(
        "SELECT (SELECT md5(string_agg(id || ':' || user_id || ':' || note, ',' ORDER BY id)) FROM tenant_1.accounts), \
                (SELECT md5(string_agg(id || ':' || user_id || ':' || note, ',' ORDER BY id)) FROM tenant_1.mirror)",
    )
    .fetch_one(pool)
    .await
    .expect("checksums")
}

/// Leftovers of a copy: the shadow table, triggers, the function and checkpoints.
async fn copy_leftovers(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM pg_class WHERE relname LIKE '%contract_copy%' OR relname LIKE '%contract_old%' OR relname LIKE '%_cold') \
              + (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'tenant_1.accounts'::regclass AND NOT tgisinternal) \
              + (SELECT count(*) FROM pg_proc WHERE proname LIKE '%contract_copy%') \
              + (SELECT count(*) FROM public.contract_online_progress)",
    )
    .fetch_one(pool)
    .await
    .expect("leftovers")
}

/// A writer on its own connection until `stop`: inserts, updates and deletes, each written
/// to the table and its mirror in one transaction (a failed one rolls back both), half of
/// the updates and deletes just past the copy's checkpoint (rows of the running batch).
/// Returns the transactions committed and failed.
fn copy_writer(
    pool: PgPool,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    first_id: i64,
    rows: i64,
) -> tokio::task::JoinHandle<(u64, u64)> {
    tokio::spawn(async move {
        let (mut ok, mut failed, mut next, mut x) = (0, 0, first_id, 12345_i64);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            x = (x * 1_103_515_245 + 12345) % 2_147_483_648;
            // Every other write just past the copy's checkpoint: in the running batch.
            let at: i64 = sqlx::query_scalar(
                "SELECT coalesce(max(last_key), 0) FROM public.contract_online_progress",
            )
            .fetch_one(&pool)
            .await
            .unwrap_or(0);
            let id = if x % 2 == 0 {
                at + 1 + x % 200
            } else {
                1 + x % rows
            };
            let sql = match x % 3 {
                0 => {
                    next += 1;
                    format!(
                        "INSERT INTO tenant_1.accounts (id, user_id, note) VALUES ({next}, {x}, 'w{next}'); \
                         INSERT INTO tenant_1.mirror VALUES ({next}, {x}, 'w{next}')"
                    )
                }
                1 => format!(
                    "UPDATE tenant_1.accounts SET user_id = {x} WHERE id = {id}; \
                     UPDATE tenant_1.mirror SET user_id = {x} WHERE id = {id}"
                ),
                _ => format!(
                    "DELETE FROM tenant_1.accounts WHERE id = {id}; DELETE FROM tenant_1.mirror WHERE id = {id}"
                ),
            };
            let write = async {
                let mut tx = pool.begin().await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await
            };
            match write.await {
                Ok(()) => ok += 1,
                Err(_) => failed += 1,
            }
        }
        (ok, failed)
    })
}

/// The table copy killed (its future dropped) mid-copy resumes from the stored checkpoint
/// on the next call; writes between the runs are kept; the swapped table keeps its index
/// and constraint names, grants, owner, comment, storage parameters and sequence.
#[tokio::test]
async fn online_table_copy_killed_mid_copy_resumes_and_keeps_names_and_grants() {
    use contract_sqlx::remediation::{OnlineProcedure, change_type_online};

    let (scratch, change) = copy_of_20k_rows("contract_online_copy").await;
    let facts_before = table_facts(&scratch.pool).await;
    kill_mid_backfill(&scratch.pool, &change, 2000, 20000).await;
    // Writes between the runs, on both sides of the checkpoint: the trigger carries them.
    exec(
        &scratch.pool,
        "UPDATE tenant_1.accounts SET user_id = 1 WHERE id IN (5, 19999); DELETE FROM tenant_1.accounts WHERE id IN (6, 19998); \
         INSERT INTO tenant_1.accounts (note) VALUES ('late'); \
         UPDATE tenant_1.mirror SET user_id = 1 WHERE id IN (5, 19999); DELETE FROM tenant_1.mirror WHERE id IN (6, 19998); \
         INSERT INTO tenant_1.mirror VALUES (20001, 7, 'late')",
    )
    .await;

    let report = change_type_online(&scratch.pool, &change)
        .await
        .expect("resumed run");
    assert_eq!(report.procedure, OnlineProcedure::TableCopy);
    let resumed = report.resumed_from.expect("resumed from a checkpoint");
    assert!(resumed >= 2000, "resumed from key {resumed}");
    assert!(
        report.rows_backfilled <= 20001 - resumed,
        "only the rest is copied: {} rows after key {resumed}",
        report.rows_backfilled
    );
    let (table, mirror) = copy_sums(&scratch.pool).await;
    assert_eq!(table, mirror, "every row is equal");
    let expected: Vec<String> = facts_before
        .iter()
        .map(|f| f.replace("column user_id integer", "column user_id bigint"))
        .collect();
    assert_eq!(table_facts(&scratch.pool).await, expected);
    // The sequence went on where it was, and the generated column is computed.
    let (id, twice): (i32, i64) =
        sqlx::query_as("INSERT INTO tenant_1.accounts (note) VALUES ('after') RETURNING id, twice")
            .fetch_one(&scratch.pool)
            .await
            .expect("insert after the swap");
    assert_eq!((id, twice), (20002, 40004));
    assert_eq!(copy_leftovers(&scratch.pool).await, 0, "nothing left");
    scratch.drop_db().await;
}

/// A copy changed behind the trigger's back (a row altered, one deleted, in the part the
/// killed run had copied) fails the verification of the resumed run, which drops the copy
/// and says so; the next pass copies again and ends equal to the mirror.
#[tokio::test]
async fn online_table_copy_that_differs_is_dropped_by_the_verification_and_copied_again() {
    use contract_sqlx::Error;
    use contract_sqlx::remediation::{OnlineProcedure, change_type_online};

    let (scratch, change) = copy_of_20k_rows("contract_online_copy_v").await;
    kill_mid_backfill(&scratch.pool, &change, 2000, 20000).await;
    exec(
        &scratch.pool,
        "UPDATE tenant_1.accounts_contract_copy SET note = 'tampered' WHERE id = 10; \
         DELETE FROM tenant_1.accounts_contract_copy WHERE id = 11",
    )
    .await;

    let refused = change_type_online(&scratch.pool, &change).await;
    assert!(
        matches!(&refused, Err(Error::NotOnline { reason, .. }) if reason.contains("differs")),
        "the verification catches the difference: {refused:?}"
    );
    assert_eq!(
        copy_leftovers(&scratch.pool).await,
        0,
        "the copy is dropped"
    );
    assert_eq!(column_type(&scratch.pool, "user_id").await, "integer");

    let report = change_type_online(&scratch.pool, &change)
        .await
        .expect("the next pass");
    assert_eq!(report.procedure, OnlineProcedure::TableCopy);
    assert_eq!(report.resumed_from, None, "copied again from the start");
    let (table, mirror) = copy_sums(&scratch.pool).await;
    assert_eq!(table, mirror, "every row equal to the mirror");
    assert_eq!(column_type(&scratch.pool, "user_id").await, "bigint");
    assert_eq!(copy_leftovers(&scratch.pool).await, 0, "nothing left");
    scratch.drop_db().await;
}

/// A writer inserting, updating and deleting through the whole table copy (batches small
/// enough that it hits rows of running batches): the swapped table equals the mirror
/// the writer kept in the same transactions.
#[tokio::test]
async fn online_table_copy_under_a_concurrent_writer_equals_the_mirror() {
    use contract_sqlx::remediation::{OnlineProcedure, OnlineTypeChange, change_type_online};
    use std::sync::{Arc, atomic::AtomicBool, atomic::Ordering};
    use std::time::Duration;

    let scratch = PgScratch::create("contract_online_copy_w").await;
    exec(&scratch.pool, copy_setup(30_000)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|i| {
            copy_writer(
                scratch.pool.clone(),
                stop.clone(),
                100_000 * (i + 1),
                30_000,
            )
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let change = OnlineTypeChange::new("tenant_1", "accounts", "user_id", "int8")
        .batches(300, Duration::from_millis(5));
    let report = change_type_online(&scratch.pool, &change)
        .await
        .expect("online change");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut committed = 0;
    for writer in writers {
        committed += writer.await.expect("writer").0;
    }
    assert_eq!(report.procedure, OnlineProcedure::TableCopy);
    assert!(report.batches > 50, "{report:?}");
    assert!(
        committed > 100,
        "the writer wrote during the copy: {committed}"
    );
    let (table, mirror) = copy_sums(&scratch.pool).await;
    assert_eq!(table, mirror, "every row equal to the mirror");
    assert_eq!(column_type(&scratch.pool, "user_id").await, "bigint");
    assert_eq!(copy_leftovers(&scratch.pool).await, 0, "nothing left");
    scratch.drop_db().await;
}

/// A table other tables reference cannot be dropped in a swap: the change takes the shadow
/// column and says why; asked for the copy explicitly, it is refused with the reason and
/// nothing is changed.
#[tokio::test]
async fn online_table_copy_refuses_a_referenced_table_and_the_shadow_column_runs() {
    use contract_sqlx::remediation::{OnlineProcedure, OnlineTypeChange, change_type_online};

    let scratch = PgScratch::create("contract_online_copy_fk").await;
    exec(
        &scratch.pool,
        format!(
            "{}; ALTER TABLE tenant_1.accounts DROP CONSTRAINT accounts_user_id_check; \
             CREATE TABLE tenant_1.orders (id int8 PRIMARY KEY, account int4 REFERENCES tenant_1.accounts (id)); \
             INSERT INTO tenant_1.orders VALUES (1, 10)",
            copy_setup(2_000)
        ),
    )
    .await;
    let change = OnlineTypeChange::new("tenant_1", "accounts", "user_id", "int8");
    let error = change_type_online(
        &scratch.pool,
        &change.clone().procedure(OnlineProcedure::TableCopy),
    )
    .await
    .expect_err("refused");
    assert_eq!(
        error.to_string(),
        "not remediable online: `tenant_1.accounts.user_id` cannot be changed by a copy of the table: foreign keys of other tables reference it; change it by hand in a maintenance window"
    );
    assert_eq!(column_type(&scratch.pool, "user_id").await, "integer");
    assert_eq!(copy_leftovers(&scratch.pool).await, 0, "nothing created");

    let report = change_type_online(&scratch.pool, &change)
        .await
        .expect("shadow column");
    assert_eq!(report.procedure, OnlineProcedure::ShadowColumn);
    assert_eq!(
        report.table_copy_refused.as_deref(),
        Some("foreign keys of other tables reference it")
    );
    assert_eq!(column_type(&scratch.pool, "user_id").await, "bigint");
    let (table, mirror) = copy_sums(&scratch.pool).await;
    assert_eq!(table, mirror);
    scratch.drop_db().await;
}

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "accounts")]
#[allow(dead_code)]
struct Account {
    #[contract(primary_key)]
    id: i64,
    user_id: i64,
}

/// The planner and the online procedure agree: a primary-key column of a table at or above
/// the threshold, which the procedure refuses, is refused by the planner with the
/// procedure's reason (no step that would fail on every pass, no plain rewrite blocking
/// the table's writers); below the threshold it keeps the plain `ALTER … USING`.
#[tokio::test]
async fn the_planner_refuses_a_primary_key_column_of_a_big_table_and_says_why() {
    use contract_sqlx::plan::Hazard;
    use contract_sqlx::remediation::ApplyOptions;
    use contract_sqlx::report::TenantOutcome;

    let scratch = PgScratch::create("contract_online_pk_plan").await;
    let mut setup = String::new();
    for (tenant, rows) in [("tenant_big", 500), ("tenant_small", 50)] {
        setup.push_str(&format!(
            "CREATE SCHEMA {tenant}; \
             CREATE TABLE {tenant}.accounts (id int4 PRIMARY KEY, user_id int8 NOT NULL); \
             INSERT INTO {tenant}.accounts SELECT g, g * 3 FROM generate_series(1, {rows}) g; \
             ANALYZE {tenant}.accounts; "
        ));
    }
    exec(&scratch.pool, &setup).await;
    let contracts = ContractSet::<Postgres>::new().with::<Account>();
    let tenants = pg_tenant_directory(&scratch.pool).await;
    let options = ApplyOptions::default().with_online_threshold(Some(100));
    let dry = remediate(&tenants, &contracts, Remediation::DryRun)
        .options(options.clone())
        .run()
        .await
        .expect("dry run");
    let plan = |tenant: &str| {
        dry.plans
            .iter()
            .find(|p| p.tenant == tenant)
            .cloned()
            .expect("a plan")
    };
    let (big, small) = (plan("tenant_big"), plan("tenant_small"));
    assert!(
        big.steps
            .iter()
            .all(|s| s.online.is_none() && !s.hazards.contains(&Hazard::TableRewrite)),
        "neither online nor a plain rewrite of the big table: {big}"
    );
    assert_eq!(big.refusals.len(), 1, "{big}");
    let refusal = &big.refusals[0];
    assert_eq!(refusal.column.as_deref(), Some("id"), "{refusal}");
    assert!(
        refusal.reason.contains("refuses this column: it is part of the primary key (swapping it needs a new unique index and a new key constraint)")
            && refusal.reason.contains("change it by hand in a maintenance window"),
        "{refusal}"
    );
    assert!(
        big.to_string().contains("refused: accounts.id (type_mismatch): a rewrite of a table of 100 rows or more runs online"),
        "{big}"
    );
    assert!(
        small
            .statements()
            .any(|s| s.contains(r#"ALTER COLUMN "id" TYPE int8 USING "id"::int8"#)),
        "{small}"
    );

    // Approving the big tenant's plan runs nothing and fails nothing: the refusal is the
    // answer, in the execution log too.
    let run = remediate(
        &tenants,
        &contracts,
        Remediation::Approved(big.hash.clone()),
    )
    .options(options)
    .run()
    .await
    .expect("approved run");
    assert!(run.failed.is_empty(), "{:?}", run.failed);
    let logged = run.log.tenant("tenant_big").expect("logged");
    assert_eq!(logged.outcome, TenantOutcome::Refused, "{logged:?}");
    assert!(
        logged
            .refused
            .iter()
            .any(|r| r.contains("is part of the primary key")),
        "{:?}",
        logged.refused
    );
    let kind: String = sqlx::query_scalar(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
         WHERE attrelid = 'tenant_big.accounts'::regclass AND attname = 'id'",
    )
    .fetch_one(&scratch.pool)
    .await
    .expect("type");
    assert_eq!(kind, "integer");
    scratch.drop_db().await;
}

/// What the workload saw while the guard remediated `tenant_big` online.
#[derive(Debug, Default)]
struct Seen {
    /// Observations while the online change ran (the shadow column existed).
    during_change: usize,
    /// Of those, how many had `tenant_big`'s gate paused for its remediation.
    big_paused: usize,
    /// Of those, how many had every other tenant's gate open.
    others_open: usize,
    /// Messages of the other tenants consumed at the first and the last of them.
    others_consumed: (Option<i64>, i64),
    /// Observations of an open `tenant_big` gate while its column was still `int4`.
    opened_early: usize,
}

/// The guard remediates one tenant online (a table above a low threshold, a backfill slowed
/// by a pause between batches) while a producer keeps writing messages for three tenants
/// and a consumer claims them under the gate and decodes the tenant's rows with `Event`
/// (`user_id: i64`, so `int4` would fail to decode). During the backfill the remediated
/// tenant's gate stays paused and its messages wait; the other tenants' gates stay open
/// and their messages flow. The gate opens only after the swap, and then every message of
/// every tenant is consumed exactly once: nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_guard_keeps_the_tenant_paused_until_the_swap_while_the_others_flow() {
    use contract_sqlx::remediation::ApplyOptions;
    use contract_sqlx::{Gate, Guard};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    const TENANTS: [&str; 3] = ["tenant_big", "tenant_a", "tenant_b"];
    const OFFSET: i64 = 1_000_000;
    let scratch = PgScratch::create("contract_online_guard").await;
    exec(
        &scratch.pool,
        "CREATE SCHEMA tenant_big; \
         CREATE TABLE tenant_big.events (id int8 PRIMARY KEY, user_id int4 NOT NULL); \
         INSERT INTO tenant_big.events SELECT g, g * 3 FROM generate_series(1, 3000) g; \
         ANALYZE tenant_big.events; \
         CREATE SCHEMA tenant_a; CREATE TABLE tenant_a.events (id int8 PRIMARY KEY, user_id int8 NOT NULL); \
         CREATE SCHEMA tenant_b; CREATE TABLE tenant_b.events (id int8 PRIMARY KEY, user_id int8 NOT NULL); \
         CREATE TABLE public.queue (id bigserial PRIMARY KEY, tenant text NOT NULL, user_id int8 NOT NULL); \
         CREATE TABLE public.produced (tenant text PRIMARY KEY, n int8 NOT NULL)",
    )
    .await;
    let workload = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&scratch.url)
        .await
        .expect("workload pool");
    // 30 batches of 100 rows, 100 ms apart: a backfill of about 3 s.
    let options = ApplyOptions::default()
        .with_online_threshold(Some(1000))
        .with_online_batches(100, Duration::from_millis(100));
    let contracts = ContractSet::<Postgres>::new().with::<Event>();
    let dry = remediate(
        &pg_tenant_directory(&scratch.pool).await,
        &contracts,
        Remediation::DryRun,
    )
    .options(options.clone())
    .run()
    .await
    .expect("dry run");
    assert_eq!(dry.plans.len(), 1, "{:?}", dry.plans);
    let plan = dry.plans[0].clone();
    assert_eq!(plan.tenant, "tenant_big");
    assert!(plan.steps[0].online.is_some(), "an online step: {plan}");

    let guard = Guard::<Postgres>::builder()
        .contract::<Event>()
        .tenants(Tenants::schemas_like("tenant_%"))
        .remediation(Remediation::DryRun)
        .apply_options(options)
        .revalidate_every(Duration::from_millis(200))
        .start(&scratch.pool)
        .await
        .expect("guard start");
    assert!(!guard.gate("tenant_big").is_open(), "drifted: paused");
    assert!(guard.gate("tenant_a").is_open() && guard.gate("tenant_b").is_open());
    let passes = guard.spawn();

    let stop_producing = Arc::new(AtomicBool::new(false));
    let producer = {
        let (pool, stop) = (workload.clone(), stop_producing.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for tenant in TENANTS {
                    sqlx::query(
                        "WITH m AS (INSERT INTO public.queue (tenant, user_id) VALUES ($1, 7) RETURNING 1) \
                         INSERT INTO public.produced SELECT $1, 1 FROM m \
                         ON CONFLICT (tenant) DO UPDATE SET n = produced.n + 1",
                    )
                    .bind(tenant)
                    .execute(&pool)
                    .await
                    .expect("produce");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // Claims up to 20 messages of an open tenant, writes them to its table, reads them back
    // as `Event`, and commits only if the permit is still current (else releases them).
    let stop_consuming = Arc::new(AtomicBool::new(false));
    let consumer = {
        let (pool, stop, guard) = (workload.clone(), stop_consuming.clone(), guard.clone());
        tokio::spawn(async move {
            let mut decode_errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for tenant in TENANTS {
                    let Gate::Open(permit) = guard.gate(tenant) else {
                        continue;
                    };
                    let mut tx = pool.begin().await.expect("begin");
                    let ids: Vec<i64> = sqlx::query_scalar(
                        "DELETE FROM public.queue WHERE id IN (SELECT id FROM public.queue \
                         WHERE tenant = $1 ORDER BY id LIMIT 20 FOR UPDATE SKIP LOCKED) RETURNING id",
                    )
                    .bind(tenant)
                    .fetch_all(&mut *tx)
                    .await
                    .expect("claim");
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "INSERT INTO {tenant}.events SELECT i + {OFFSET}, 7 FROM unnest($1::int8[]) i"
                    )))
                    .bind(&ids)
                    .execute(&mut *tx)
                    .await
                    .expect("write");
                    let read = sqlx::query_as::<_, Event>(sqlx::AssertSqlSafe(format!(
                        "SELECT id, user_id FROM {tenant}.events WHERE id > {OFFSET} ORDER BY id DESC LIMIT 20"
                    )))
                    .persistent(false)
                    .fetch_all(&mut *tx)
                    .await;
                    match read {
                        Ok(_) if permit.is_current() => tx.commit().await.expect("commit"),
                        Ok(_) => tx.rollback().await.expect("release"),
                        Err(error) => {
                            decode_errors.push(format!("{tenant}: {error}"));
                            tx.rollback().await.expect("release");
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            decode_errors
        })
    };

    let consumed = |tenant: &'static str| {
        let pool = workload.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM {tenant}.events WHERE id > {OFFSET}"
            )))
            .fetch_one(&pool)
            .await
            .expect("consumed")
        }
    };
    // Approve: the next pass applies the plan online, in the guard's background task.
    guard.set_policy(Remediation::Approved(plan.hash.clone()));
    let mut seen = Seen::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gate never opened: {seen:?}"
        );
        // The gate first, then the column: an open gate must find the new type.
        let big = guard.gate("tenant_big");
        let others = ["tenant_a", "tenant_b"]
            .iter()
            .all(|t| guard.gate(t).is_open());
        // The shadow column (or the table copy) exists from the expand to the swap, the
        // backfill included.
        let (kind, changing): (String, bool) = sqlx::query_as(
            "SELECT format_type(a.atttypid, a.atttypmod), \
                    EXISTS (SELECT 1 FROM pg_attribute s WHERE s.attrelid = a.attrelid \
                            AND s.attname = 'user_id_contract_new' AND NOT s.attisdropped) \
                    OR to_regclass('tenant_big.events_contract_copy') IS NOT NULL \
             FROM pg_attribute a WHERE a.attrelid = 'tenant_big.events'::regclass \
               AND a.attname = 'user_id' AND NOT a.attisdropped",
        )
        .fetch_one(&workload)
        .await
        .expect("observe");
        if big.is_open() && kind == "integer" {
            seen.opened_early += 1;
        }
        if changing {
            seen.during_change += 1;
            if let Gate::Paused(why) = &big {
                seen.big_paused += usize::from(why.reason.starts_with("remediating"));
            }
            seen.others_open += usize::from(others);
            let n = consumed("tenant_a").await + consumed("tenant_b").await;
            seen.others_consumed.0.get_or_insert(n);
            seen.others_consumed.1 = n;
        }
        if big.is_open() {
            assert_eq!(kind, "bigint", "open only after the swap");
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(seen.opened_early, 0, "{seen:?}");
    assert!(
        seen.during_change >= 5,
        "the backfill was observed: {seen:?}"
    );
    assert_eq!(
        seen.big_paused, seen.during_change,
        "paused for its remediation throughout the backfill: {seen:?}"
    );
    assert_eq!(
        seen.others_open, seen.during_change,
        "the other gates stayed open: {seen:?}"
    );
    let (first, last) = seen.others_consumed;
    assert!(
        last > first.expect("observed"),
        "the other tenants' messages flowed during the backfill: {seen:?}"
    );

    // Drain: stop producing, let the consumer empty the queue, then count.
    stop_producing.store(true, Ordering::Relaxed);
    producer.await.expect("producer");
    let drained = async {
        for _ in 0..600 {
            let left: i64 = sqlx::query_scalar("SELECT count(*) FROM public.queue")
                .fetch_one(&workload)
                .await
                .expect("queue");
            if left == 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    assert!(drained.await, "the queue drains once every gate is open");
    stop_consuming.store(true, Ordering::Relaxed);
    let decode_errors = consumer.await.expect("consumer");
    assert!(decode_errors.is_empty(), "{decode_errors:?}");
    for tenant in TENANTS {
        let produced: i64 = sqlx::query_scalar("SELECT n FROM public.produced WHERE tenant = $1")
            .bind(tenant)
            .fetch_one(&workload)
            .await
            .expect("produced");
        assert!(produced > 0, "{tenant}");
        assert_eq!(consumed(tenant).await, produced, "{tenant}: nothing lost");
    }
    let backfilled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tenant_big.events WHERE id <= 3000 AND user_id = id * 3",
    )
    .fetch_one(&workload)
    .await
    .expect("rows");
    assert_eq!(backfilled, 3000, "every row kept its value");
    passes.abort();
    drop(guard);
    workload.close().await;
    scratch.drop_db().await;
}

/// A writer's update of a row the copy has not reached yet, left uncommitted until a batch
/// waits for it on that key: the batch fails with a unique violation when the writer
/// commits, is retried, skips the key, and the swapped table has the writer's value.
#[tokio::test]
async fn online_table_copy_retries_a_batch_that_met_a_writers_uncommitted_key() {
    use contract_sqlx::remediation::{OnlineProcedure, change_type_online};
    use sqlx::Connection;
    use std::time::Duration;

    let (scratch, change) = copy_of_20k_rows("contract_online_copy_k").await;
    let running = {
        let (pool, change) = (scratch.pool.clone(), change.clone());
        tokio::spawn(async move { change_type_online(&pool, &change).await })
    };
    let polled = async |sql: &str| -> i64 {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&scratch.pool)
            .await
            .unwrap_or(0)
    };
    let mut started = 0;
    for _ in 0..400 {
        started =
            polled("SELECT coalesce(max(rows_done), 0) FROM public.contract_online_progress").await;
        if started >= 1000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(started >= 1000, "the copy never got going: {started}");
    // The trigger inserts key 19000 into the copy, uncommitted.
    let mut writer = sqlx::PgConnection::connect(&scratch.url)
        .await
        .expect("writer");
    let mut tx = writer.begin().await.expect("writer transaction");
    sqlx::raw_sql(
        "UPDATE tenant_1.accounts SET user_id = 1 WHERE id = 19000; \
         UPDATE tenant_1.mirror SET user_id = 1 WHERE id = 19000",
    )
    .execute(&mut *tx)
    .await
    .expect("writer update");
    let mut waited = 0;
    for _ in 0..3000 {
        waited = polled(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'transactionid' \
             AND query LIKE '%pg_advisory_xact_lock%'",
        )
        .await;
        if waited > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(waited, 1, "a batch waits for the writer's key");
    tx.commit().await.expect("writer commit");
    let report = running
        .await
        .expect("change task")
        .expect("the copy retries the batch and completes");
    assert_eq!(report.procedure, OnlineProcedure::TableCopy);
    let (table, mirror) = copy_sums(&scratch.pool).await;
    assert_eq!(
        table, mirror,
        "every row is equal, the writer's update kept"
    );
    let _ = writer.close().await;
    scratch.drop_db().await;
}

/// In the guard, an approved multi-transaction plan whose `VALIDATE` meets a `NULL` row
/// stops after its first transaction. Once the row is fixed, the retry resumes the pending
/// audit row at `VALIDATE`: it used to run the plan from its first transaction again,
/// whose `ADD CONSTRAINT` failed ("already exists") on every pass until the process
/// restarted, the tenant paused all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_resumes_a_plan_stopped_between_its_transactions_once_the_data_is_fixed() {
    use contract_sqlx::Guard;
    use std::time::Duration;

    let scratch = PgScratch::create("contract_online_guard_resume").await;
    exec(&scratch.pool, NULLABLE_EVENTS).await;
    exec(
        &scratch.pool,
        "INSERT INTO tenant_1.events VALUES (0, NULL)",
    )
    .await;
    let contracts = ContractSet::<Postgres>::new().with::<Event>();
    let dry = remediate(
        &pg_tenant_directory(&scratch.pool).await,
        &contracts,
        Remediation::DryRun,
    )
    .run()
    .await
    .expect("dry run");
    let plan = dry.plans[0].clone();
    assert!(plan.steps.iter().any(|s| s.phases.len() > 1), "{plan}");

    let guard = Guard::<Postgres>::builder()
        .contract::<Event>()
        .tenants(Tenants::schemas_like("tenant_%"))
        .remediation(Remediation::DryRun)
        .revalidate_every(Duration::from_millis(50))
        .start(&scratch.pool)
        .await
        .expect("guard start");
    assert!(!guard.gate("tenant_1").is_open(), "drifted: paused");
    guard.set_policy(Remediation::Approved(plan.hash.clone()));
    guard.revalidate().await.expect("the pass that applies");
    assert_eq!(
        audit(&scratch.pool, "tenant_1").await,
        [("pending".to_owned(), Some(1))],
        "stopped at VALIDATE"
    );
    assert!(!guard.gate("tenant_1").is_open());

    exec(&scratch.pool, "DELETE FROM tenant_1.events WHERE id = 0").await;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        guard.revalidate().await.expect("pass");
        if guard.gate("tenant_1").is_open() {
            break;
        }
    }
    let rows: Vec<(String, Option<i32>, Option<String>)> =
        sqlx::query_as("SELECT status, phase, evidence FROM public.contract_audit")
            .fetch_all(&scratch.pool)
            .await
            .expect("audit rows");
    let pass = guard.last_pass().map(|p| format!("{p:?}"));
    assert!(
        guard.gate("tenant_1").is_open(),
        "still paused; audit rows {rows:?}; last pass {pass:?}"
    );
    assert!(not_null(&scratch.pool, "tenant_1", "events", "user_id").await);
    assert_eq!(
        audit(&scratch.pool, "tenant_1").await,
        [("applied".to_owned(), Some(3))],
        "the pending row resumed, not a second apply"
    );
    scratch.drop_db().await;
}

/// An approved online type change cut when its audit row is about to be sent: the change
/// and its row commit together or not at all. The row used to be written after the swap
/// had committed, in a statement of its own: cut there (or the process killed, or the
/// pass cancelled), the column was `bigint` with no audit row, and nothing planned it
/// again since the tenant complied. Run again, the change completes with one row.
#[tokio::test]
async fn an_online_change_cut_at_its_audit_row_commits_with_it_or_not_at_all() {
    use contract_sqlx::remediation::ApplyOptions;

    let scratch = PgScratch::create("contract_online_audit").await;
    int4_events(&scratch.pool, "tenant_1").await;
    let proxy = Proxy::start(target_of(&pg_url())).await;
    let pool = pg_pool_through(&proxy, &scratch.url);
    let dir = pg_tenant_directory(&pool).await;
    let contracts = ContractSet::<Postgres>::new().with::<Event>();
    let options = ApplyOptions::default()
        .with_online_threshold(Some(1000))
        .with_online_batches(1000, std::time::Duration::ZERO);
    let dry = remediate(&dir, &contracts, Remediation::DryRun)
        .options(options.clone())
        .run()
        .await
        .expect("dry run");
    let plan = dry.plans[0].clone();
    assert!(plan.steps[0].online.is_some(), "an online step: {plan}");
    let approved = || {
        remediate(&dir, &contracts, Remediation::Approved(plan.hash.clone()))
            .options(options.clone())
            .run()
    };

    let fault = proxy.arm(&["(audit_id, tenant, plan_hash"], Cut::BeforeSending);
    let cut = approved().await.expect("run");
    assert!(fault.fired(), "the cut never happened");
    assert_eq!(cut.failed.len(), 1, "{:?}", cut.failed);
    let changed = user_id_type(&scratch.pool).await == "bigint";
    let rows = audit(&scratch.pool, "tenant_1").await;
    assert_eq!(
        changed,
        !rows.is_empty(),
        "the change committed without its row, or the reverse: {rows:?}"
    );

    let again = approved().await.expect("run again");
    assert!(again.failed.is_empty(), "{:?}", again.failed);
    assert_eq!(user_id_type(&scratch.pool).await, "bigint");
    let rows = audit(&scratch.pool, "tenant_1").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, "applied");
    pool.close().await;
    scratch.drop_db().await;
}

async fn user_id_type(pool: &PgPool) -> String {
    sqlx::query_scalar(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
         WHERE attrelid = 'tenant_1.events'::regclass AND attname = 'user_id' AND NOT attisdropped",
    )
    .fetch_one(pool)
    .await
    .expect("column type")
}

/// Two tenants approved for the same online type change, one at a time: while tenant_a's
/// backfill runs, tenant_b's column is changed by hand to `numeric(12,3)` and given
/// fractions. tenant_b's change, planned on `integer`, must be refused as stale and its
/// fractions kept; it used to cast the column to `bigint` anyway, rounding them away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_change_waiting_its_turn_is_stale_when_its_column_changed_meanwhile() {
    use contract_sqlx::remediation::ApplyOptions;
    use std::time::Duration;

    let scratch = PgScratch::create("contract_online_turn").await;
    for tenant in ["tenant_a", "tenant_b"] {
        int4_events(&scratch.pool, tenant).await;
    }
    let dir = pg_tenant_directory(&scratch.pool).await;
    let contracts = ContractSet::<Postgres>::new().with::<Event>();
    let options = ApplyOptions::default()
        .with_online_threshold(Some(1000))
        .with_online_batches(100, Duration::from_millis(40))
        .with_parallelism(1);
    let dry = remediate(&dir, &contracts, Remediation::DryRun)
        .options(options.clone())
        .run()
        .await
        .expect("dry run");
    assert_eq!(dry.plans.len(), 2, "{:?}", dry.plans);
    let shape = dry.plans[0].shape.clone();
    assert_eq!(shape, dry.plans[1].shape);
    let run = {
        let (dir, contracts, options) = (dir.clone(), contracts.clone(), options.clone());
        tokio::spawn(async move {
            remediate(&dir, &contracts, Remediation::ApprovedShape(shape))
                .options(options)
                .run()
                .await
        })
    };
    if backfill_started(&scratch.pool, "%\"tenant_a\".\"events\".%")
        .await
        .is_none()
    {
        let run = run.await.expect("join").map(|r| format!("{:?}", r.failed));
        panic!("tenant_a's backfill never started: {run:?}");
    }
    let type_of = |tenant: &'static str| {
        let pool = scratch.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
                 WHERE attrelid = to_regclass($1) AND attname = 'user_id' AND NOT attisdropped",
            )
            .bind(format!("{tenant}.events"))
            .fetch_one(&pool)
            .await
            .expect("column type")
        }
    };
    assert_eq!(
        type_of("tenant_b").await,
        "integer",
        "tenant_b waits its turn"
    );
    exec(
        &scratch.pool,
        "ALTER TABLE tenant_b.events ALTER COLUMN user_id TYPE numeric(12,3); \
         UPDATE tenant_b.events SET user_id = user_id + 0.499 WHERE id <= 10",
    )
    .await;

    let run = run.await.expect("join").expect("run");
    assert_eq!(type_of("tenant_a").await, "bigint");
    assert_eq!(type_of("tenant_b").await, "numeric(12,3)");
    let fractions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenant_b.events WHERE user_id <> trunc(user_id)")
            .fetch_one(&scratch.pool)
            .await
            .expect("fractions");
    assert_eq!(fractions, 10, "tenant_b's fractions are kept");
    assert!(run.failed.is_empty(), "{:?}", run.failed);
    assert_eq!(
        crate::pg_tenant_lock::outcome(&run, "tenant_b"),
        Some(contract_sqlx::report::TenantOutcome::Stale)
    );
    scratch.drop_db().await;
}

/// A table copy during which the old table's column is changed by hand to
/// `numeric(12,3)` and given fractions (nothing in the copy stops that `ALTER`): the swap
/// must not happen, the copy is dropped, and the fractions are kept. The copy used to
/// cast the changed column to the new type and swap, rounding them away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_copy_whose_column_changed_type_meanwhile_is_dropped_not_swapped() {
    use contract_sqlx::remediation::{OnlineProcedure, OnlineTypeChange, change_type_online};
    use std::time::Duration;

    let scratch = PgScratch::create("contract_online_copy_type").await;
    int4_events(&scratch.pool, "tenant_1").await;
    let change = OnlineTypeChange::new("tenant_1", "events", "user_id", "int8")
        .batches(100, Duration::from_millis(40))
        .procedure(OnlineProcedure::TableCopy);
    let copying = {
        let (pool, change) = (scratch.pool.clone(), change.clone());
        tokio::spawn(async move { change_type_online(&pool, &change).await })
    };
    backfill_started(&scratch.pool, "%")
        .await
        .expect("the copy never started");
    exec(
        &scratch.pool,
        "ALTER TABLE tenant_1.events ALTER COLUMN user_id TYPE numeric(12,3); \
         UPDATE tenant_1.events SET user_id = user_id + 0.499 WHERE id <= 10",
    )
    .await;

    let error = copying
        .await
        .expect("join")
        .expect_err("the swap must not happen")
        .to_string();
    assert!(
        error.contains("changed from integer to numeric(12,3)"),
        "{error}"
    );
    assert_eq!(user_id_type(&scratch.pool).await, "numeric(12,3)");
    let fractions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenant_1.events WHERE user_id <> trunc(user_id)")
            .fetch_one(&scratch.pool)
            .await
            .expect("fractions");
    assert_eq!(fractions, 10, "the fractions are kept");
    let leftovers: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = 'tenant_1'::regnamespace \
                 AND relname LIKE 'events_contract%') \
              + (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'tenant_1.events'::regclass \
                 AND NOT tgisinternal) \
              + (SELECT count(*) FROM public.contract_online_progress)",
    )
    .fetch_one(&scratch.pool)
    .await
    .expect("leftovers");
    assert_eq!(leftovers, 0, "the copy is dropped");
    scratch.drop_db().await;
}

/// `tenant.events` with an `int4` `user_id` and 3,000 rows, analyzed: above the online
/// threshold the tests set (1,000 rows).
async fn int4_events(pool: &PgPool, tenant: &str) {
    exec(
        pool,
        format!(
            "CREATE SCHEMA {tenant}; \
             CREATE TABLE {tenant}.events (id int8 PRIMARY KEY, user_id int4 NOT NULL); \
             INSERT INTO {tenant}.events SELECT g, g FROM generate_series(1, 3000) g; \
             ANALYZE {tenant}.events"
        ),
    )
    .await;
}

/// A scratch database with `tenant_big` ([`int4_events`], its online change planned with
/// batches of 100 rows `pause` apart) and a compliant `tenant_a`; the options and the plan.
async fn big_and_compliant(
    prefix: &str,
    pause: std::time::Duration,
) -> (
    PgScratch,
    contract_sqlx::remediation::ApplyOptions,
    contract_sqlx::plan::TenantPlan,
) {
    let scratch = PgScratch::create(prefix).await;
    int4_events(&scratch.pool, "tenant_big").await;
    exec(
        &scratch.pool,
        "CREATE SCHEMA tenant_a; CREATE TABLE tenant_a.events (id int8 PRIMARY KEY, user_id int8 NOT NULL)",
    )
    .await;
    let options = contract_sqlx::remediation::ApplyOptions::default()
        .with_online_threshold(Some(1000))
        .with_online_batches(100, pause);
    let dry = remediate(
        &pg_tenant_directory(&scratch.pool).await,
        &ContractSet::<Postgres>::new().with::<Event>(),
        Remediation::DryRun,
    )
    .options(options.clone())
    .run()
    .await
    .expect("dry run");
    let plan = dry.plans[0].clone();
    assert_eq!(plan.tenant, "tenant_big");
    (scratch, options, plan)
}

/// While the guard applies one tenant's online change (a backfill of a few seconds), a
/// tenant found drifted in the same pass, with no task of its own, is paused at once: it
/// stayed open until the pass ended, its consumers claiming batches against a schema
/// they cannot read for the whole backfill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_found_drifted_is_paused_while_another_tenant_s_backfill_runs() {
    use contract_sqlx::Guard;
    use std::time::Duration;

    // 30 batches of 100 rows, 100 ms apart: a backfill of about 3 s.
    let (scratch, options, plan) =
        big_and_compliant("contract_online_pause_others", Duration::from_millis(100)).await;
    assert!(plan.steps[0].online.is_some(), "an online step: {plan}");
    let guard = Guard::<Postgres>::builder()
        .contract::<Event>()
        .tenants(Tenants::schemas_like("tenant_%"))
        .remediation(Remediation::DryRun)
        .apply_options(options)
        .revalidate_every(Duration::from_secs(600))
        .start(&scratch.pool)
        .await
        .expect("guard start");
    assert!(!guard.gate("tenant_big").is_open());
    assert!(guard.gate("tenant_a").is_open());

    // tenant_a drifts in a way nothing fixes; the next pass applies tenant_big's change.
    exec(
        &scratch.pool,
        "ALTER TABLE tenant_a.events ALTER COLUMN user_id TYPE text",
    )
    .await;
    guard.mark_dirty("tenant_a");
    guard.set_policy(Remediation::Approved(plan.hash.clone()));
    let pass = {
        let guard = guard.clone();
        tokio::spawn(async move { guard.revalidate().await })
    };
    backfill_started(&scratch.pool, "%")
        .await
        .expect("tenant_big's backfill never started");
    let during = guard.gate("tenant_a").is_open();
    let pass = pass.await.expect("join").expect("pass");
    assert!(
        !during,
        "tenant_a's gate was open during tenant_big's backfill"
    );
    assert!(!guard.gate("tenant_a").is_open());
    assert_eq!(pass.remediated, ["tenant_big"]);
    assert!(guard.gate("tenant_big").is_open());
    drop(guard);
    scratch.drop_db().await;
}

/// The background task is busy applying tenant_big's online change (a backfill of a few
/// seconds) when tenant_a drifts and is marked dirty (as the DDL listener does): its gate
/// closes at once, not when the backfill is over. Passes run one at a time, so the pass
/// that would look at tenant_a waited for the whole backfill with tenant_a's gate open.
/// After the busy pass, the next one keeps it paused; once tenant_a is fixed it reopens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_marked_while_a_backfill_runs_closes_the_gate_before_the_backfill_ends() {
    use contract_sqlx::Guard;
    use std::time::{Duration, Instant};

    // 30 batches of 100 rows, 150 ms apart: a backfill of about 4.5 s.
    let (scratch, options, plan) =
        big_and_compliant("contract_online_prompt", Duration::from_millis(150)).await;
    let guard = Guard::<Postgres>::builder()
        .contract::<Event>()
        .tenants(Tenants::schemas_like("tenant_%"))
        .remediation(Remediation::DryRun)
        .apply_options(options)
        .revalidate_every(Duration::from_secs(600))
        .start(&scratch.pool)
        .await
        .expect("guard start");
    let passes = guard.spawn();
    guard.set_policy(Remediation::Approved(plan.hash.clone()));
    guard.mark_dirty("tenant_big");
    backfill_started(&scratch.pool, "%")
        .await
        .expect("tenant_big's backfill never started");
    assert!(guard.gate("tenant_a").is_open());

    exec(
        &scratch.pool,
        "ALTER TABLE tenant_a.events ALTER COLUMN user_id TYPE text",
    )
    .await;
    guard.mark_dirty("tenant_a");
    let marked = Instant::now();
    while guard.gate("tenant_a").is_open() && marked.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let closed_after = marked.elapsed();
    let backfilling: i64 =
        sqlx::query_scalar("SELECT count(*) FROM public.contract_online_progress")
            .fetch_one(&scratch.pool)
            .await
            .expect("progress");
    assert!(!guard.gate("tenant_a").is_open(), "tenant_a never closed");
    assert_eq!(
        backfilling, 1,
        "tenant_a closed only after tenant_big's backfill ({closed_after:?})"
    );
    assert!(!guard.gate("tenant_big").is_open(), "still remediating");

    // The busy pass ends, the next one checks tenant_a itself: still paused.
    let swapped = Instant::now();
    while !guard.gate("tenant_big").is_open() && swapped.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        guard.gate("tenant_big").is_open(),
        "tenant_big's change never ended"
    );
    let big_type: String = sqlx::query_scalar(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
         WHERE attrelid = 'tenant_big.events'::regclass AND attname = 'user_id' AND NOT attisdropped",
    )
    .fetch_one(&scratch.pool)
    .await
    .expect("tenant_big's type");
    assert_eq!(big_type, "bigint");
    tokio::time::sleep(Duration::from_millis(500)).await;
    match guard.gate("tenant_a") {
        contract_sqlx::Gate::Open(_) => panic!("tenant_a reopened after the busy pass"),
        contract_sqlx::Gate::Paused(why) => {
            assert!(why.reason.contains("user_id"), "{}", why.reason)
        }
    }

    // Fixed, it reopens: the prompt check's pause does not stick.
    exec(
        &scratch.pool,
        "ALTER TABLE tenant_a.events ALTER COLUMN user_id TYPE int8 USING user_id::int8",
    )
    .await;
    guard.mark_dirty("tenant_a");
    let fixed = Instant::now();
    while !guard.gate("tenant_a").is_open() && fixed.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        guard.gate("tenant_a").is_open(),
        "tenant_a stayed closed once fixed"
    );
    passes.abort();
    drop(guard);
    scratch.drop_db().await;
}

/// One approved plan with two online steps (events, then accounts, or the other way): while
/// the first one's copy runs, the second one's column is changed by hand to
/// `numeric(12,3)` and given fractions. The second step must not run (stale), its fractions
/// kept; it was checked only when the job began, before the first step's backfill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_online_step_of_a_plan_is_stale_when_its_column_changed_during_the_first() {
    use contract_sqlx::remediation::ApplyOptions;
    use std::time::Duration;

    let scratch = PgScratch::create("contract_online_second").await;
    int4_events(&scratch.pool, "tenant_1").await;
    exec(
        &scratch.pool,
        "CREATE TABLE tenant_1.accounts (id int8 PRIMARY KEY, user_id int4 NOT NULL); \
         INSERT INTO tenant_1.accounts SELECT g, g FROM generate_series(1, 3000) g; \
         ANALYZE tenant_1.accounts",
    )
    .await;
    let dir = pg_tenant_directory(&scratch.pool).await;
    let contracts = ContractSet::<Postgres>::new()
        .with::<Event>()
        .with::<Account>();
    let options = ApplyOptions::default()
        .with_online_threshold(Some(1000))
        .with_online_batches(100, Duration::from_millis(40));
    let dry = remediate(&dir, &contracts, Remediation::DryRun)
        .options(options.clone())
        .run()
        .await
        .expect("dry run");
    let plan = dry.plans[0].clone();
    assert_eq!(
        plan.steps.iter().filter(|s| s.online.is_some()).count(),
        2,
        "{plan}"
    );
    let run = {
        let (dir, contracts, options) = (dir.clone(), contracts.clone(), options.clone());
        tokio::spawn(async move {
            remediate(&dir, &contracts, Remediation::Approved(plan.hash.clone()))
                .options(options)
                .run()
                .await
        })
    };
    let first = backfill_started(&scratch.pool, "%")
        .await
        .expect("the first step's backfill never started");
    let second = if first.contains("events") {
        "accounts"
    } else {
        "events"
    };
    exec(
        &scratch.pool,
        format!(
            "ALTER TABLE tenant_1.{second} ALTER COLUMN user_id TYPE numeric(12,3); \
             UPDATE tenant_1.{second} SET user_id = user_id + 0.499 WHERE id <= 10"
        ),
    )
    .await;

    let run = run.await.expect("join").expect("run");
    let fractions: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM tenant_1.{second} WHERE user_id <> trunc(user_id)"
    )))
    .fetch_one(&scratch.pool)
    .await
    .expect("fractions");
    assert_eq!(fractions, 10, "the second table's fractions are kept");
    assert_eq!(
        crate::pg_tenant_lock::outcome(&run, "tenant_1"),
        Some(contract_sqlx::report::TenantOutcome::Stale)
    );
    scratch.drop_db().await;
}

/// The change key of a backfill or copy whose checkpoint (`change LIKE pattern`) counts
/// rows done, waited for up to 5 s.
pub(crate) async fn backfill_started(pool: &PgPool, pattern: &str) -> Option<String> {
    for _ in 0..500 {
        let started: Option<String> = sqlx::query_scalar(
            "SELECT change FROM public.contract_online_progress \
             WHERE rows_done > 0 AND change LIKE $1 LIMIT 1",
        )
        .bind(pattern)
        .fetch_optional(pool)
        .await
        .ok()
        .flatten();
        if started.is_some() {
            return started;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    None
}
