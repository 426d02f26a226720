//! Online remediation on PostgreSQL: multi-transaction steps (`NOT VALID`, `VALIDATE`,
//! `SET NOT NULL`) cut between transactions resume on the next pass from the audit row.

#[path = "support/mod.rs"]
mod support;

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
            && error.contains("(validate)")
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
