//! A live fleet on PostgreSQL, without restarts: tenants created and dropped while a
//! consumer runs, one approval of a change shape applied across two replicas exactly once
//! per tenant, and a rename that waits while an older consumer version still runs.

use crate::support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use contract_sqlx::control::{ApprovalRequest, ControlPlane, TenantStatus};
use contract_sqlx::plan::Remediation;
use contract_sqlx::{Contract, Gate, Guard, Tenants};
use sqlx::{PgPool, Postgres};
use support::{PgScratch, exec};

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "events")]
#[allow(dead_code)]
struct Event {
    id: i64,
    user_id: i64,
}

const HEALTHY: &str = "(id int8 NOT NULL, user_id int8 NOT NULL)";
/// Drift that needs an approval (a rewrite): `user_id` is `int4`.
const INT4: &str = "(id int8 NOT NULL, user_id int4 NOT NULL)";

/// Creates tenant schemas with `events` of `definition` and a `jobs` queue of `jobs` rows.
async fn create_tenants(pool: &PgPool, names: &[String], definition: &str, jobs: usize) {
    let mut sql = String::new();
    for t in names {
        sql.push_str(&format!(
            "CREATE SCHEMA {t}; CREATE TABLE {t}.events {definition}; \
             CREATE TABLE {t}.jobs (id int8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload text NOT NULL); \
             INSERT INTO {t}.jobs (payload) SELECT 'job ' || g FROM generate_series(1, {jobs}) AS g;"
        ));
    }
    exec(pool, sql).await;
}

fn names(prefix: &str, range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}_{i:03}")).collect()
}

async fn eventually<F, Fut>(bound: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + bound;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check().await
}

/// Jobs left in a tenant's queue (`None` once the schema is gone).
async fn queue_depth(pool: &PgPool, tenant: &str) -> Option<i64> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {tenant}.jobs"
    )))
    .fetch_one(pool)
    .await
    .ok()
}

/// The control plane's stored status of every tenant, by name.
async fn stored_status(
    plane: &ControlPlane,
    pool: &PgPool,
) -> contract_sqlx::Result<BTreeMap<String, TenantStatus>> {
    let status = plane.tenants(pool).await?;
    Ok(status.into_iter().map(|s| (s.tenant.clone(), s)).collect())
}

/// A consumer in the shape of `examples/pg_consumer.rs`: for every tenant whose gate is
/// open, claim a batch and ack it, committed only while the permit is current.
fn spawn_consumer(
    pool: PgPool,
    guard: Guard<Postgres>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            for tenant in guard.tenants() {
                let Gate::Open(permit) = guard.gate(&tenant) else {
                    continue;
                };
                let Ok(mut tx) = pool.begin().await else {
                    continue;
                };
                let claimed = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM {tenant}.jobs WHERE id IN (SELECT id FROM {tenant}.jobs ORDER BY id LIMIT 50 FOR UPDATE SKIP LOCKED)"
                )))
                .execute(&mut *tx)
                .await;
                if claimed.is_ok() && permit.is_current() {
                    let _ = tx.commit().await;
                } else {
                    let _ = tx.rollback().await;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

#[tokio::test]
async fn tenants_created_and_dropped_while_consuming_are_picked_up_and_retired_without_restart() {
    let scratch = PgScratch::create("contract_live").await;
    let first = names("tenant", 1..=20);
    create_tenants(&scratch.pool, &first, HEALTHY, 0).await;
    let guard = Guard::<Postgres>::builder()
        .contract::<Event>()
        .tenants(Tenants::schemas_like("tenant\\_%"))
        .remediation(Remediation::SafeOnly)
        .revalidate_every(Duration::from_millis(300))
        .start(&scratch.pool)
        .await
        .expect("guard start");
    let passes = guard.spawn();
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = spawn_consumer(scratch.pool.clone(), guard.clone(), Arc::clone(&stop));

    // While it runs: 40 compliant and 10 drifted tenants appear, 10 existing ones go.
    let compliant = names("tenant", 101..=140);
    let drifted = names("tenant", 141..=150);
    create_tenants(&scratch.pool, &compliant, HEALTHY, 120).await;
    create_tenants(&scratch.pool, &drifted, INT4, 120).await;
    let dropped = &first[..10];
    exec(
        &scratch.pool,
        dropped
            .iter()
            .map(|t| format!("DROP SCHEMA {t} CASCADE;"))
            .collect::<String>(),
    )
    .await;

    let pool = scratch.pool.clone();
    let consumed = eventually(Duration::from_secs(60), || {
        let (pool, compliant) = (pool.clone(), compliant.clone());
        async move {
            for t in &compliant {
                if queue_depth(&pool, t).await != Some(0) {
                    return false;
                }
            }
            true
        }
    })
    .await;
    assert!(
        consumed,
        "the new compliant tenants' queues were not consumed"
    );
    stop.store(true, Ordering::SeqCst);
    consumer.await.expect("consumer");

    // The drifted tenants were created after the compliant ones: a pass may have consumed
    // the latter before the discovery that finds the former, and an unknown tenant's gate is
    // closed too. Wait until the guard holds them and the stored status has them.
    let plane = ControlPlane::default();
    let (pool, watched) = (scratch.pool.clone(), guard.clone());
    let settled = eventually(Duration::from_secs(60), || {
        let (pool, plane, watched) = (pool.clone(), plane.clone(), watched.clone());
        let (drifted, dropped) = (drifted.clone(), dropped.to_vec());
        async move {
            let Ok(status) = stored_status(&plane, &pool).await else {
                return false;
            };
            let verdict = |t: &String| status.get(t).map(|s| s.verdict.as_str());
            let held = watched.tenants();
            drifted
                .iter()
                .all(|t| held.contains(t) && verdict(t) == Some("drifted"))
                && dropped.iter().all(|t| verdict(t) == Some("retired"))
        }
    })
    .await;
    assert!(
        settled,
        "the new drifted tenants and the dropped ones never reached the guard and the stored status"
    );

    // The drifted new tenants are paused, their jobs untouched, their findings stored.
    for t in &drifted {
        assert!(!guard.gate(t).is_open(), "{t} is open");
        assert_eq!(
            queue_depth(&scratch.pool, t).await,
            Some(120),
            "{t}'s jobs were claimed"
        );
    }
    let status = stored_status(&plane, &scratch.pool)
        .await
        .expect("tenant status");
    for t in &drifted {
        let s = &status[t];
        assert_eq!(s.verdict, "drifted", "{t}");
        assert!(
            s.findings
                .iter()
                .any(|f| f.column.as_deref() == Some("user_id")),
            "{s:?}"
        );
        let plan = s.plan.as_ref().expect("a pending plan");
        assert!(plan.needs_approval(), "{plan}");
        assert!(
            s.waiting
                .as_deref()
                .is_some_and(|w| w.contains("awaits approval")),
            "{s:?}"
        );
    }
    // The dropped ones are retired: gate closed with that reason, status says so.
    for t in dropped {
        match guard.gate(t) {
            Gate::Open(_) => panic!("{t} is open"),
            Gate::Paused(why) => assert!(why.reason.starts_with("retired"), "{}", why.reason),
        }
        assert_eq!(status[t].verdict, "retired", "{t}");
    }
    for t in &first[10..] {
        assert!(guard.gate(t).is_open(), "{t}");
    }
    passes.abort();
    drop(guard);
    scratch.drop_db().await;
}

#[tokio::test]
async fn one_approval_of_a_shape_remediates_thirty_tenants_once_across_two_replicas() {
    let scratch = PgScratch::create("contract_shape").await;
    let tenants = names("tenant", 1..=30);
    create_tenants(&scratch.pool, &tenants, INT4, 0).await;
    let replica = || {
        Guard::<Postgres>::builder()
            .contract::<Event>()
            .tenants(Tenants::schemas_like("tenant\\_%"))
            .remediation(Remediation::SafeOnly)
            .start(&scratch.pool)
    };
    let (one, two) = (
        replica().await.expect("replica 1"),
        replica().await.expect("replica 2"),
    );
    let plane = ControlPlane::default();
    let status = plane.tenants(&scratch.pool).await.expect("status");
    let shapes: BTreeMap<String, usize> =
        status
            .iter()
            .filter_map(|s| s.plan.as_ref())
            .fold(BTreeMap::new(), |mut by, p| {
                *by.entry(p.shape.clone()).or_default() += 1;
                by
            });
    assert_eq!(shapes.len(), 1, "one shape for the same drift: {shapes:?}");
    let (shape, count) = shapes.into_iter().next().expect("a shape");
    assert_eq!(count, 30);
    let approval = plane
        .approve(
            &scratch.pool,
            ApprovalRequest::shape(&shape, "alice").with_note("INC-1"),
        )
        .await
        .expect("approve");

    // Both replicas run their next pass at once: each tenant is remediated by exactly one.
    let (a, b) = tokio::join!(one.revalidate(), two.revalidate());
    let (a, b) = (a.expect("pass 1"), b.expect("pass 2"));
    let mut by_both: Vec<&String> = a
        .remediated
        .iter()
        .filter(|t| b.remediated.contains(t))
        .collect();
    by_both.sort();
    assert!(by_both.is_empty(), "remediated twice: {by_both:?}");
    assert_eq!(a.remediated.len() + b.remediated.len(), 30, "{a:?} {b:?}");
    for t in &tenants {
        assert!(
            one.gate(t).is_open() || {
                one.revalidate().await.expect("pass");
                one.gate(t).is_open()
            },
            "{t}"
        );
    }
    let audit: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT tenant, approval_id, approved_by FROM public.contract_audit ORDER BY tenant",
    )
    .fetch_all(&scratch.pool)
    .await
    .expect("audit");
    assert_eq!(audit.len(), 30);
    assert!(
        audit
            .iter()
            .all(|(_, id, by)| id.as_deref() == Some(approval.id.as_str())
                && by.as_deref() == Some("alice"))
    );
    let used = plane
        .approvals(&scratch.pool)
        .await
        .expect("approvals")
        .into_iter()
        .find(|x| x.id == approval.id)
        .expect("the approval");
    assert_eq!(used.applied, 30, "counted once per tenant");
    drop((one, two));
    scratch.drop_db().await;
}

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "events")]
#[allow(dead_code)]
struct EventV2 {
    id: i64,
    #[contract(renamed_from = "user_id")]
    account_id: i64,
}

#[tokio::test]
async fn a_rename_waits_while_the_old_consumer_version_runs_and_applies_after_it_stops() {
    let scratch = PgScratch::create("contract_versions").await;
    create_tenants(&scratch.pool, &names("tenant", 1..=2), HEALTHY, 0).await;
    let old = Guard::<Postgres>::builder()
        .contract::<Event>()
        .tenants(Tenants::schemas_like("tenant\\_%"))
        .start(&scratch.pool)
        .await
        .expect("old version");
    let new = Guard::<Postgres>::builder()
        .contract::<EventV2>()
        .tenants(Tenants::schemas_like("tenant\\_%"))
        .remediation(Remediation::SafeOnly)
        .start(&scratch.pool)
        .await
        .expect("new version");
    assert_ne!(old.replica().version, new.replica().version);
    let plane = ControlPlane::default();
    let plan = plane
        .tenants(&scratch.pool)
        .await
        .expect("status")
        .into_iter()
        .find_map(|s| s.plan)
        .expect("the rename's plan");
    plane
        .approve(&scratch.pool, ApprovalRequest::shape(&plan.shape, "bob"))
        .await
        .expect("approve");

    // Approved, but the old version still reads `user_id`: the rename waits, and says why.
    let pass = new.revalidate().await.expect("pass");
    assert!(pass.remediated.is_empty(), "{pass:?}");
    let why = match new.gate("tenant_001") {
        Gate::Paused(why) => why.reason.clone(),
        Gate::Open(_) => panic!("open before the rename"),
    };
    assert!(
        why.contains(&format!(
            "breaks consumer version {}",
            old.replica().short_version()
        )) && why.contains("still running on 1 replica"),
        "{why}"
    );
    // The old replica stops: the next pass renames.
    old.deregister().await.expect("deregister");
    drop(old);
    let pass = new.revalidate().await.expect("pass");
    assert_eq!(pass.remediated.len(), 2, "{pass:?}");
    assert!(new.gate("tenant_001").is_open());
    let column: String = sqlx::query_scalar(
        "SELECT attname::text FROM pg_attribute WHERE attrelid = 'tenant_001.events'::regclass AND attnum = 2",
    )
    .fetch_one(&scratch.pool)
    .await
    .expect("column");
    assert_eq!(column, "account_id");
    drop(new);
    scratch.drop_db().await;
}

#[tokio::test]
async fn the_backlog_of_a_resumed_tenant_is_reported_cleared_with_its_rate() {
    let scratch = PgScratch::create("contract_backlog").await;
    create_tenants(&scratch.pool, &names("tenant", 1..=2), HEALTHY, 0).await;
    create_tenants(&scratch.pool, &names("tenant", 3..=3), INT4, 150).await;
    let guard = Guard::<Postgres>::builder()
        .contract::<Event>()
        .tenants(Tenants::schemas_like("tenant\\_%"))
        .backlog(contract_sqlx::quarantine::QueueBacklog::new(
            contract_sqlx::quarantine::QueueTable::new("jobs"),
        ))
        .start(&scratch.pool)
        .await
        .expect("guard");
    assert!(!guard.gate("tenant_003").is_open());
    let report = guard.report();
    let paused = report
        .tenants
        .iter()
        .find(|t| t.tenant == "tenant_003")
        .expect("report");
    assert_eq!(
        paused.backlog,
        Some(150),
        "the paused tenant's backlog is in the report"
    );
    let status = ControlPlane::default()
        .tenants(&scratch.pool)
        .await
        .expect("status");
    let stored = status
        .iter()
        .find(|s| s.tenant == "tenant_003")
        .expect("status row");
    assert_eq!(stored.backlog, Some(150));

    // Fixed by hand; the gate reopens, a consumer drains the queue.
    exec(
        &scratch.pool,
        "ALTER TABLE tenant_003.events ALTER COLUMN user_id TYPE int8",
    )
    .await;
    guard.revalidate().await.expect("pass");
    assert!(guard.gate("tenant_003").is_open());
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = spawn_consumer(scratch.pool.clone(), guard.clone(), Arc::clone(&stop));
    let pool = scratch.pool.clone();
    assert!(
        eventually(Duration::from_secs(30), || {
            let pool = pool.clone();
            async move { queue_depth(&pool, "tenant_003").await == Some(0) }
        })
        .await
    );
    stop.store(true, Ordering::SeqCst);
    consumer.await.expect("consumer");
    guard.revalidate().await.expect("pass");
    let cleared = guard.backlog_cleared().await;
    assert_eq!(cleared.len(), 1, "{cleared:?}");
    let event = &cleared[0];
    assert_eq!(
        (
            event.tenant.as_str(),
            event.backlog_at_resume,
            event.cleared
        ),
        ("tenant_003", 150, 150)
    );
    assert!(event.complete && event.messages_per_second > 0, "{event}");
    let log = guard.execution_log().expect("the pass kept a log");
    assert!(
        log.steps.iter().any(|s| matches!(&s.action, contract_sqlx::report::LogAction::BacklogCleared { tenants } if tenants[0].contains("150 of 150"))),
        "{}",
        log.to_json_pretty()
    );
    drop(guard);
    scratch.drop_db().await;
}

/// Whether `tenant.events.user_id` is `NOT NULL`.
async fn user_id_not_null(pool: &PgPool, tenant: &str) -> bool {
    sqlx::query_scalar(
        "SELECT attnotnull FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = 'user_id'",
    )
    .bind(format!("{tenant}.events"))
    .fetch_one(pool)
    .await
    .expect("column")
}

/// An approval capped at one tenant, used by a tenant whose multi-transaction plan fails
/// after its first transaction committed (its `VALIDATE` meets a `NULL`): that tenant's
/// schema changed, so the approval stays used and a second tenant drifting the same way
/// waits. The count was given back on any failure, and the second tenant was changed too:
/// two tenants under a cap of one.
#[tokio::test]
async fn an_approval_used_by_a_plan_that_failed_half_way_still_counts_against_its_cap() {
    let scratch = PgScratch::create("contract_cap_half").await;
    let nullable = "(id int8 NOT NULL, user_id int8)";
    create_tenants(&scratch.pool, &names("tenant", 1..=1), nullable, 0).await;
    create_tenants(&scratch.pool, &names("tenant", 2..=2), HEALTHY, 0).await;
    exec(
        &scratch.pool,
        "INSERT INTO tenant_001.events VALUES (1, 1), (2, NULL)",
    )
    .await;
    let guard = Guard::<Postgres>::builder()
        .contract::<Event>()
        .tenants(Tenants::schemas_like("tenant\\_%"))
        .remediation(Remediation::SafeOnly)
        .revalidate_every(Duration::from_secs(600))
        .start(&scratch.pool)
        .await
        .expect("guard");
    let plane = ControlPlane::default();
    let plan = plane
        .tenants(&scratch.pool)
        .await
        .expect("status")
        .into_iter()
        .find_map(|s| s.plan)
        .expect("tenant_001's plan");
    assert!(
        plan.steps.iter().any(|s| s.phases.len() > 1),
        "a multi-transaction plan: {plan}"
    );
    plane
        .approve(
            &scratch.pool,
            ApprovalRequest::shape(&plan.shape, "bob").tenant_cap(1),
        )
        .await
        .expect("approve");

    let pass = guard.revalidate().await.expect("the pass that applies");
    assert!(pass.remediated.is_empty(), "it stops at VALIDATE: {pass:?}");
    let checks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_constraint WHERE conrelid = 'tenant_001.events'::regclass AND contype = 'c'",
    )
    .fetch_one(&scratch.pool)
    .await
    .expect("checks");
    assert_eq!(
        checks, 1,
        "tenant_001's first transaction committed its check"
    );

    exec(
        &scratch.pool,
        "ALTER TABLE tenant_002.events ALTER COLUMN user_id DROP NOT NULL",
    )
    .await;
    guard.mark_dirty("tenant_002");
    guard.revalidate().await.expect("the next pass");
    assert!(
        !user_id_not_null(&scratch.pool, "tenant_002").await,
        "tenant_002 was changed under an approval its cap had used up"
    );
    let approvals = plane.approvals(&scratch.pool).await.expect("approvals");
    assert_eq!(approvals.len(), 1);
    assert_eq!(approvals[0].applied, 1, "{}", approvals[0]);
    drop(guard);
    scratch.drop_db().await;
}

/// An operator pause stored for a tenant before the guard lists it (a tenant being moved,
/// say): once listed, its gate stays closed. A pass opened a new compliant tenant's gate
/// before it reloaded the operator pauses, and a write that failed for another tenant
/// skipped that reload: the paused tenant's batches flowed until a later pass got through.
#[tokio::test]
async fn a_new_tenant_an_operator_paused_stays_closed_when_the_pass_cannot_write() {
    let scratch = PgScratch::create("contract_live_op").await;
    create_tenants(&scratch.pool, &names("tenant", 1..=1), HEALTHY, 0).await;
    let guard = Guard::<Postgres>::builder()
        .contract::<Event>()
        .tenants(Tenants::schemas_like("tenant\\_%"))
        .remediation(Remediation::SafeOnly)
        .start(&scratch.pool)
        .await
        .expect("guard start");
    guard
        .pause("tenant_002")
        .by("ops")
        .reason("moving its database")
        .await
        .expect("operator pause");
    // The next drifted tenant's guard pause cannot be stored: the pass fails.
    exec(
        &scratch.pool,
        "CREATE FUNCTION public.refuse_pause() RETURNS trigger LANGUAGE plpgsql AS $$ \
           BEGIN IF NEW.tenant = 'tenant_003' THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$; \
         CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON public.contract_pauses \
           FOR EACH ROW EXECUTE FUNCTION public.refuse_pause()",
    )
    .await;
    create_tenants(&scratch.pool, &names("tenant", 2..=2), HEALTHY, 0).await;
    create_tenants(&scratch.pool, &names("tenant", 3..=3), INT4, 0).await;
    let pass = guard.revalidate().await;
    assert!(pass.is_err(), "the refused write fails the pass");
    assert!(guard.tenants().iter().any(|t| t == "tenant_002"), "listed");
    let paused_by_ops = |gate: Gate| match gate {
        Gate::Open(_) => panic!("tenant_002, paused by an operator, is open"),
        Gate::Paused(why) => assert_eq!(why.reason, "moving its database", "{why:?}"),
    };
    paused_by_ops(guard.gate("tenant_002"));
    assert!(!guard.gate("tenant_003").is_open(), "tenant_003 drifted");

    exec(
        &scratch.pool,
        "DROP TRIGGER refuse ON public.contract_pauses",
    )
    .await;
    guard.revalidate().await.expect("a pass that writes");
    paused_by_ops(guard.gate("tenant_002"));
    assert!(guard.gate("tenant_001").is_open(), "tenant_001 complies");
    drop(guard);
    scratch.drop_db().await;
}
