//! Online remediation on PostgreSQL: multi-transaction steps (`NOT VALID`, `VALIDATE`,
//! `SET NOT NULL`) cut between transactions resume on the next pass from the audit row.

use crate::support;

use contract_sqlx::plan::Remediation;
use contract_sqlx::remediation::ReconcileOutcome;
use contract_sqlx::{Contract, TenantDirectory, Tenants, check::ContractSet, remediate};
use sqlx::{PgPool, Postgres};
use support::faults::pg_pool_through;
use support::proxy::{Cut, Proxy, target_of};
use support::{PgScratch, exec, pg_url};

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "events")]
#[allow(dead_code)]
struct Event {
    #[contract(primary_key)]
    id: i64,
    user_id: i64,
}

async fn directory(pool: &PgPool) -> TenantDirectory<Postgres> {
    TenantDirectory::new()
        .discover(pool, &Tenants::schemas_like("tenant_%"))
        .await
        .expect("discover")
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

/// The approved plan for `tenant` is cut right before its `VALIDATE` is sent: the first
/// transaction is committed (a valid schema), the run reports where it stopped, and the
/// next pass resumes from the pending audit row and completes.
async fn cut_before_validate<C: Contract + contract_sqlx::check::TypeChecks<Postgres>>(
    prefix: &str,
    setup: &str,
    check: impl AsyncFn(&PgPool, bool),
) {
    let scratch = PgScratch::create(prefix).await;
    exec(&scratch.pool, setup).await;
    let proxy = Proxy::start(target_of(&pg_url())).await;
    let pool = pg_pool_through(&proxy, &scratch.url);
    let dir = directory(&pool).await;
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
    check(&scratch.pool, false).await;

    let next = remediate(&dir, &contracts, Remediation::Approved(plan.hash.clone()))
        .run()
        .await
        .expect("next run");
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
    let rows = audit(&scratch.pool, "tenant_1").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, "applied");
    check(&scratch.pool, true).await;
    pool.close().await;
    scratch.drop_db().await;
}

#[tokio::test]
async fn set_not_null_cut_between_not_valid_and_validate_resumes_next_pass() {
    cut_before_validate::<Event>(
        "contract_online_nn",
        "CREATE SCHEMA tenant_1; CREATE TABLE tenant_1.events (id int8 PRIMARY KEY, user_id int8); \
         INSERT INTO tenant_1.events SELECT g, g FROM generate_series(1, 1000) g",
        async |pool, done| {
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
        },
    )
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

/// A backfill killed (its future dropped) after some batches resumes from the stored
/// checkpoint on the next call and ends with every row equal and the new type.
#[tokio::test]
async fn online_type_change_killed_mid_backfill_resumes_from_the_checkpoint() {
    use contract_sqlx::remediation::{OnlineTypeChange, change_type_online};
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
        .batches(500, Duration::from_millis(20));
    let killed = {
        let (pool, change) = (scratch.pool.clone(), change.clone());
        tokio::spawn(async move { change_type_online(&pool, &change).await })
    };
    let done_rows = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT coalesce(max(rows_done), 0) FROM public.contract_online_progress",
        )
        .fetch_one(&scratch.pool)
        .await
        .unwrap_or(0)
    };
    let mut reached = 0;
    for _ in 0..400 {
        reached = done_rows().await;
        if reached >= 2000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    killed.abort();
    assert!(
        killed.await.is_err_and(|e| e.is_cancelled()),
        "killed mid-backfill"
    );
    assert!(reached >= 2000, "the backfill never got going: {reached}");
    let at_kill = done_rows().await;
    assert!(at_kill < 20000, "killed before the end: {at_kill}");
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
    let tenants = directory(&scratch.pool).await;
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
        } else {
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
