//! The `contract` CLI end to end, as a separate process against guards running in this
//! one: exit codes, `--json` that parses, human output without debug formatting, and the
//! #12 acceptance scenario (30 tenants drifted the same way → one shape → one approval →
//! remediated once each across two replicas → 30 audit rows naming the approver).

// The shared helpers, compiled once in the `contract-tests` library.
use contract_tests::support;

#[path = "cli/mod.rs"]
mod cli;

#[path = "cli/mysql.rs"]
mod mysql;

#[path = "cli/sqlite.rs"]
mod sqlite;

use std::time::{Duration, Instant};

use cli::{assert_readable, contract, contract_async, full_hashes};
use contract_sqlx::payload::PayloadContract;
use contract_sqlx::plan::Remediation;
use contract_sqlx::quarantine::{QueueQuarantine, QueueTable};
use contract_sqlx::{Contract, Guard, TenantName, Tenants};
use serde_json::Value;
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

/// Tenant schemas with `events` of `definition` holding `rows` rows, analysed so the
/// catalog has their estimate.
async fn create_tenants(pool: &PgPool, names: &[String], definition: &str, rows: usize) {
    let mut sql = String::new();
    for t in names {
        sql.push_str(&format!(
            "CREATE SCHEMA {t}; CREATE TABLE {t}.events {definition}; \
             INSERT INTO {t}.events SELECT g, g FROM generate_series(1, {rows}) AS g; ANALYZE {t}.events;"
        ));
    }
    exec(pool, sql).await;
}

fn names(range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    range.map(|i| format!("tenant_{i:03}")).collect()
}

async fn guard(pool: &PgPool) -> Guard<Postgres> {
    Guard::<Postgres>::builder()
        .contract::<Event>()
        .tenants(Tenants::schemas_like("tenant\\_%"))
        .remediation(Remediation::SafeOnly)
        .start(pool)
        .await
        .expect("guard start")
}

fn tenant<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .find(|t| t["tenant"] == name)
        .unwrap_or_else(|| panic!("{name} in {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_status_plans_pause_approve_revoke_audit() {
    let scratch = PgScratch::create("contract_cli").await;
    let url = scratch.url.as_str();
    create_tenants(&scratch.pool, &names(1..=1), HEALTHY, 10).await;
    create_tenants(&scratch.pool, &names(2..=3), INT4, 100).await;
    let guard = guard(&scratch.pool).await;

    let status = contract_async(url, &["status", "--json"])
        .await
        .expect(0)
        .json();
    assert_eq!(
        status["tenants"].as_array().map(Vec::len),
        Some(3),
        "{status}"
    );
    assert_eq!(tenant(&status, "tenant_001")["verdict"], "compliant");
    let drifted = tenant(&status, "tenant_002");
    assert_eq!(drifted["verdict"], "drifted");
    assert_eq!(drifted["pauses"][0]["kind"], "guard");
    assert_eq!(drifted["plan_hash"].as_str().map(str::len), Some(64));
    assert_eq!(
        status["versions"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
    assert_eq!(status["versions"][0]["live_replicas"], 1);
    let gate = contract_async(url, &["status", "--fail-on", "drift"])
        .await
        .expect(1);
    assert_readable(&gate);
    assert!(
        gate.stdout.contains("paused by the guard since"),
        "{}",
        gate.stdout
    );
    assert!(
        gate.stdout.contains("contract versions in flight"),
        "{}",
        gate.stdout
    );

    let plans = contract_async(url, &["plans", "--json"])
        .await
        .expect(0)
        .json();
    let shapes = plans["shapes"].as_array().expect("shapes");
    assert_eq!(shapes.len(), 1, "{plans}");
    let shape = shapes[0]["shape"].as_str().expect("shape").to_owned();
    assert_eq!(shapes[0]["tenant_count"], 2);
    assert_eq!(shapes[0]["needs_approval"], true);
    assert_eq!(shapes[0]["estimated_rows"]["rows"], 200, "{plans}");
    assert!(
        shapes[0]["hazards"]
            .as_array()
            .expect("hazards")
            .iter()
            .any(|h| h["name"] == "table_rewrite")
    );
    assert!(
        shapes[0]["statements"][0]
            .as_str()
            .expect("sql")
            .contains("{tenant}."),
        "{plans}"
    );
    let hash_2 = shapes[0]["tenants"][0]["plan_hash"]
        .as_str()
        .expect("hash")
        .to_owned();
    let human = contract_async(url, &["plans"]).await.expect(0);
    assert_readable(&human);
    let printed = full_hashes(&human.stdout);
    assert!(
        printed.contains(&shape) && printed.contains(&hash_2),
        "full hashes to approve:\n{}",
        human.stdout
    );
    assert!(
        human
            .stdout
            .contains("about 200 rows in 2 tables (pg_class.reltuples)"),
        "{}",
        human.stdout
    );
    assert!(
        human.stdout.contains("rewrites the whole table"),
        "{}",
        human.stdout
    );

    // An operator pause reaches the running guard through the database.
    let paused = contract_async(
        url,
        &[
            "pause",
            "tenant_001",
            "--reason",
            "restore drill",
            "--by",
            "alice",
        ],
    )
    .await
    .expect(0);
    assert_readable(&paused);
    assert!(!paused.stdout.contains("warning"), "{}", paused.stdout);
    guard.revalidate().await.expect("pass");
    assert!(
        !guard.gate("tenant_001").is_open(),
        "operator pause applied"
    );
    // A name no guard reported is paused all the same, with a warning.
    let unknown = contract_async(
        url,
        &["pause", "tenant_0001", "--reason", "typo", "--by", "alice"],
    )
    .await
    .expect(0);
    assert!(
        unknown
            .stdout
            .contains("warning: no guard has reported a tenant named tenant_0001"),
        "{}",
        unknown.stdout
    );
    contract_async(url, &["resume", "tenant_0001"])
        .await
        .expect(0);
    // An empty queue name is refused: stored, it read back as a pause of the whole tenant.
    let empty = contract_async(
        url,
        &[
            "pause",
            "tenant_002",
            "--queue",
            "",
            "--reason",
            "x",
            "--by",
            "y",
        ],
    )
    .await
    .expect(2);
    assert!(empty.stderr.contains("--queue"), "{}", empty.stderr);
    let status = contract_async(url, &["status", "--json"])
        .await
        .expect(0)
        .json();
    let pause = &tenant(&status, "tenant_001")["pauses"][0];
    assert_eq!(
        (pause["kind"].as_str(), pause["by"].as_str()),
        (Some("operator"), Some("alice"))
    );
    assert_eq!(pause["reason"], "restore drill");
    contract_async(url, &["resume", "tenant_001", "--json"])
        .await
        .expect(0)
        .json();
    contract_async(url, &["resume", "tenant_001"])
        .await
        .expect(2);
    guard.revalidate().await.expect("pass");
    assert!(guard.gate("tenant_001").is_open(), "resumed");

    // One plan approved, then revoked: nothing applied.
    let one = contract_async(
        url,
        &[
            "approve",
            &hash_2,
            "--by",
            "alice",
            "--note",
            "INC-7",
            "--expires-in",
            "1h",
            "--tenant-cap",
            "1",
            "--json",
        ],
    )
    .await
    .expect(0)
    .json();
    let id = one["approval"]["id"].as_str().expect("id").to_owned();
    assert_eq!(one["covers"], serde_json::json!(["tenant_002"]));
    assert_eq!(one["approval"]["tenant_cap"], 1);
    assert!(one["approval"]["expires_at"].is_string(), "{one}");
    assert_readable(
        &contract_async(url, &["revoke", &id, "--by", "bob"])
            .await
            .expect(0),
    );
    contract_async(url, &["revoke", &id, "--by", "bob"])
        .await
        .expect(2);
    let pass = guard.revalidate().await.expect("pass");
    assert!(pass.remediated.is_empty(), "revoked: {:?}", pass.remediated);

    // The shape: both drifted tenants, then the fleet is healthy again.
    let approved = contract_async(url, &["approve", "--shape", &shape, "--by", "carol"])
        .await
        .expect(0);
    assert_readable(&approved);
    assert!(
        approved.stdout.contains("covers 2 pending plans now"),
        "{}",
        approved.stdout
    );
    let pass = guard.revalidate().await.expect("pass");
    assert_eq!(pass.remediated.len(), 2, "{pass:?}");
    guard.revalidate().await.expect("pass");
    contract_async(url, &["status", "--fail-on", "drift"])
        .await
        .expect(0);

    let audit = contract_async(url, &["audit", "--json"])
        .await
        .expect(0)
        .json();
    let entries = audit["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 2, "{audit}");
    assert!(
        entries
            .iter()
            .all(|e| e["approved_by"] == "carol" && e["status"] == "applied"),
        "{audit}"
    );
    let one = contract_async(
        url,
        &["audit", "--tenant", "tenant_003", "--limit", "1", "--json"],
    )
    .await
    .expect(0)
    .json();
    assert_eq!(one["entries"].as_array().map(Vec::len), Some(1));
    assert_eq!(one["entries"][0]["tenant"], "tenant_003");
    let human = contract_async(url, &["audit"]).await.expect(0);
    assert_readable(&human);
    assert!(
        human.stdout.contains("approved by carol"),
        "{}",
        human.stdout
    );

    drop(guard);
    scratch.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_quarantine_list_show_replay() {
    let scratch = PgScratch::create("contract_cli_q").await;
    let url = scratch.url.as_str();
    contract_async(url, &["quarantine", "list", "--json"])
        .await
        .expect(0);
    let quarantined = quarantined_in(
        &scratch.pool,
        "tenant_001",
        "jsonb",
        br#"{"user_id": "u7"}"#,
    )
    .await;

    let list = contract_async(url, &["quarantine", "list", "--json"])
        .await
        .expect(0)
        .json();
    assert_eq!(list["waiting"], 1, "{list}");
    assert_eq!(list["messages"][0]["id"].as_i64(), Some(quarantined));
    let id = quarantined.to_string();
    assert_eq!(list["messages"][0]["source_id"], 7);
    let shown = contract_async(url, &["quarantine", "show", &id])
        .await
        .expect(0);
    assert_readable(&shown);
    assert!(
        shown.stdout.contains(r#"{"user_id": "u7"}"#),
        "{}",
        shown.stdout
    );
    // A queue table that is not there is named as such, not taken for a missing control
    // plane (helper-67: every missing table was "no control plane").
    let nosuch = contract_async(
        url,
        &["quarantine", "replay", &id, "--queue-table", "nosuch"],
    )
    .await
    .expect(2);
    assert!(
        nosuch.stderr.contains("nosuch") && !nosuch.stderr.contains("no control plane"),
        "{}",
        nosuch.stderr
    );
    let replayed = contract_async(url, &["quarantine", "replay", &id, "--json"])
        .await
        .expect(0)
        .json();
    assert_eq!(
        (
            replayed["replayed"].as_bool(),
            replayed["checked"].as_bool()
        ),
        (Some(true), Some(false))
    );
    let back: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_001.inbox WHERE id = 7")
        .fetch_one(&scratch.pool)
        .await
        .expect("count");
    assert_eq!(back, 1, "the message is back in its queue");
    contract_async(url, &["quarantine", "replay", &id])
        .await
        .expect(2);
    let list = contract_async(url, &["quarantine", "list", "--json"])
        .await
        .expect(0)
        .json();
    assert_eq!(list["waiting"], 0, "{list}");
    let all = contract_async(url, &["quarantine", "list", "--all"])
        .await
        .expect(0);
    assert_readable(&all);
    assert!(all.stdout.contains("replayed"), "{}", all.stdout);
    scratch.drop_db().await;
}

/// Schema `tenant` with a queue `inbox` whose payload column is of type `payload_type`,
/// its message 7 (`raw`) quarantined as poison; the quarantine row's id.
async fn quarantined_in(pool: &PgPool, tenant: &str, payload_type: &str, raw: &[u8]) -> i64 {
    exec(
        pool,
        format!(
            "CREATE SCHEMA IF NOT EXISTS {tenant}; CREATE TABLE {tenant}.inbox (id int8 PRIMARY KEY, \
             payload {payload_type} NOT NULL, enqueued_at timestamptz NOT NULL DEFAULT now(), \
             attempts int4 NOT NULL DEFAULT 0)"
        ),
    )
    .await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {tenant}.inbox (id, payload) VALUES (7, CAST($1::text AS {payload_type}))"
    )))
    .bind(std::str::from_utf8(raw).expect("text"))
    .execute(pool)
    .await
    .expect("enqueue");
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Job {
        user_id: i64,
    }
    let contract = PayloadContract::<Job>::named("job");
    let site = QueueQuarantine::new(
        TenantName::new(tenant).expect("name"),
        QueueTable::new("inbox"),
    );
    site.ensure_table(pool).await.expect("quarantine table");
    let rejection = contract.check(raw).expect_err("poison");
    let mut tx = pool.begin().await.expect("tx");
    site.quarantine(&mut *tx, &contract, &[(7, raw, &rejection)])
        .await
        .expect("quarantine");
    tx.commit().await.expect("commit");
    sqlx::query_scalar("SELECT id FROM public.contract_quarantine WHERE tenant = $1")
        .bind(tenant)
        .fetch_one(pool)
        .await
        .expect("quarantined row")
}

/// A queue whose payload column is a domain over `jsonb` takes the message back through
/// the `jsonb` cast: the CLI reads the domain's base type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_quarantine_replay_into_a_domain_over_jsonb() {
    replay_into_domain(
        "contract_cli_q_domain",
        "CREATE DOMAIN tenant_001.document AS jsonb CHECK (jsonb_typeof(VALUE) = 'object')",
    )
    .await;
}

/// A domain over a domain over `jsonb`: the CLI follows the chain to its base type (it
/// followed one level and refused the column).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_quarantine_replay_into_a_domain_over_a_domain_over_jsonb() {
    replay_into_domain(
        "contract_cli_q_domain2",
        "CREATE DOMAIN tenant_001.object AS jsonb CHECK (jsonb_typeof(VALUE) = 'object'); \
         CREATE DOMAIN tenant_001.document AS tenant_001.object CHECK (VALUE ? 'user_id')",
    )
    .await;
}

/// Quarantines a message of a queue whose payload column is `tenant_001.document`, created
/// by `domain`, and replays it with the CLI, which must find the cast itself.
async fn replay_into_domain(name: &str, domain: &str) {
    let scratch = PgScratch::create(name).await;
    exec(&scratch.pool, format!("CREATE SCHEMA tenant_001; {domain}")).await;
    let raw: &[u8] = br#"{"user_id": "u7"}"#;
    let id = quarantined_in(&scratch.pool, "tenant_001", "tenant_001.document", raw).await;
    contract_async(&scratch.url, &["quarantine", "replay", &id.to_string()])
        .await
        .expect(0);
    let back: String =
        sqlx::query_scalar("SELECT payload::text FROM tenant_001.inbox WHERE id = 7")
            .fetch_one(&scratch.pool)
            .await
            .expect("the message is back");
    assert_eq!(back, r#"{"user_id": "u7"}"#);
    scratch.drop_db().await;
}

/// Another replay of the same message commits while the CLI's replay is between reading
/// the row (waiting) and putting the message back, and a consumer handles the message and
/// deletes it from the queue. The CLI must not put it back a second time: its insert
/// found no conflict (the id was gone again), so the message was handled twice. The test
/// holds the row and the queue table locked so that the CLI waits, does the other replay
/// and the consumer's work meanwhile, then lets it go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_quarantine_replay_racing_another_replay_puts_the_message_back_once() {
    let scratch = PgScratch::create("contract_cli_q_race").await;
    let url = scratch.url.clone();
    let id = quarantined_in(
        &scratch.pool,
        "tenant_001",
        "jsonb",
        br#"{"user_id": "u7"}"#,
    )
    .await;

    let mut other = scratch.pool.begin().await.expect("tx");
    exec(
        &mut *other,
        format!(
            "SELECT 1 FROM public.contract_quarantine WHERE id = {id} FOR UPDATE; \
             LOCK TABLE tenant_001.inbox IN SHARE ROW EXCLUSIVE MODE"
        ),
    )
    .await;
    let cli = tokio::spawn(async move {
        contract_async(&url, &["quarantine", "replay", &id.to_string()]).await
    });
    let mut waiting = false;
    for _ in 0..300 {
        waiting = sqlx::query_scalar(
            "SELECT count(*) > 0 FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND datname = current_database()",
        )
        .fetch_one(&scratch.pool)
        .await
        .expect("activity");
        if waiting || cli.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(waiting, "the CLI's replay never waited for the other one");
    // Meanwhile: another replay puts the message back and marks the row, and a consumer
    // handles the message and deletes it.
    exec(
        &mut *other,
        &format!(
            "INSERT INTO tenant_001.inbox (id, payload) VALUES (7, '{{\"user_id\": 7}}'); \
             UPDATE public.contract_quarantine SET replayed_at = now(), replay_count = replay_count + 1 WHERE id = {id}; \
             DELETE FROM tenant_001.inbox WHERE id = 7"
        ),
    )
    .await;
    other.commit().await.expect("commit");
    let run = cli.await.expect("the CLI's task");
    let (in_queue, replays): (i64, i32) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM tenant_001.inbox), \
                (SELECT replay_count FROM public.contract_quarantine)",
    )
    .fetch_one(&scratch.pool)
    .await
    .expect("counts");
    assert_eq!(
        (in_queue, replays),
        (0, 1),
        "the message was put back a second time: {}{}",
        run.stdout,
        run.stderr
    );
    let run = run.expect(2);
    assert!(
        run.stderr.contains("replayed") && run.stderr.contains("meanwhile"),
        "{}",
        run.stderr
    );
    scratch.drop_db().await;
}

/// A queue whose payload column is `text` gets its message back byte for byte when no
/// `--payload-type` is given: the CLI reads the column's type. It used to cast through its
/// default, `jsonb`, which reorders keys, drops duplicates and respaces the payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_quarantine_replay_into_a_text_queue_keeps_the_payload_verbatim() {
    let scratch = PgScratch::create("contract_cli_q_text").await;
    let url = scratch.url.as_str();
    let raw: &[u8] = br#"{"user_id":"u7",  "a": 1, "a": 2}"#;
    let id = quarantined_in(&scratch.pool, "tenant_001", "text", raw).await;
    contract_async(url, &["quarantine", "replay", &id.to_string()])
        .await
        .expect(0);
    let back: String = sqlx::query_scalar("SELECT payload FROM tenant_001.inbox WHERE id = 7")
        .fetch_one(&scratch.pool)
        .await
        .expect("the message is back");
    assert_eq!(back, String::from_utf8_lossy(raw), "the payload as it was");
    scratch.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_exit_2_with_the_variable_and_the_fix() {
    let none = tokio::task::spawn_blocking(|| contract(None, &["status"]))
        .await
        .expect("run");
    let none = none.expect(2);
    assert!(
        none.stderr.contains("CONTRACT_DATABASE_URL"),
        "{}",
        none.stderr
    );

    // A closed port fails at once, naming the variable the URL came from.
    let started = Instant::now();
    let refused = contract_async("postgres://postgres@127.0.0.1:1/postgres", &["status"])
        .await
        .expect(2);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        refused.stderr.contains("from CONTRACT_DATABASE_URL")
            && refused.stderr.contains("127.0.0.1:1"),
        "{}",
        refused.stderr
    );
    let secret = contract_async("postgres://app:s3cret@127.0.0.1:1/postgres", &["status"])
        .await
        .expect(2);
    assert!(
        !secret.stderr.contains("s3cret"),
        "password printed: {}",
        secret.stderr
    );

    contract_async("redis://localhost", &["status"])
        .await
        .expect(2);
    let usage = contract_async("postgres://postgres@127.0.0.1:1/postgres", &["approve"])
        .await
        .expect(2);
    assert!(usage.stderr.contains("--shape"), "{}", usage.stderr);

    let scratch = PgScratch::create("contract_cli_err").await;
    let missing = contract_async(&scratch.url, &["status"]).await.expect(2);
    assert!(
        missing.stderr.contains("no control plane"),
        "{}",
        missing.stderr
    );
    let bad = contract_async(&scratch.url, &["approve", "abc123", "--by", "x"])
        .await
        .expect(2);
    assert!(bad.stderr.contains("64"), "{}", bad.stderr);
    assert_readable(&bad);
    // A pause or an approval where no guard keeps its control plane is refused, and creates
    // none (it was stored in tables made for it, which no guard read, and exited 0).
    let hash = "a".repeat(64);
    for args in [
        &["pause", "tenant_1", "--reason", "x", "--by", "y"][..],
        &["approve", hash.as_str(), "--by", "y"][..],
    ] {
        let refused = contract_async(&scratch.url, args).await.expect(2);
        assert!(
            refused.stderr.contains("no control plane"),
            "{}",
            refused.stderr
        );
    }
    let created: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('public.contract_pauses')::text")
            .fetch_one(&scratch.pool)
            .await
            .expect("lookup");
    assert_eq!(created, None, "no control plane made by the CLI");
    scratch.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_tenants_one_shape_one_approval_applied_once_across_two_replicas() {
    let scratch = PgScratch::create("contract_cli_30").await;
    let url = scratch.url.as_str();
    let tenants = names(1..=30);
    create_tenants(&scratch.pool, &tenants, INT4, 5).await;
    let (one, two) = (guard(&scratch.pool).await, guard(&scratch.pool).await);

    let plans = contract_async(url, &["plans", "--json"])
        .await
        .expect(0)
        .json();
    let shapes = plans["shapes"].as_array().expect("shapes");
    assert_eq!(shapes.len(), 1, "one shape for the same drift: {plans}");
    assert_eq!(shapes[0]["tenant_count"], 30);
    assert_eq!(shapes[0]["tenants"].as_array().map(Vec::len), Some(30));
    let shape = shapes[0]["shape"].as_str().expect("shape").to_owned();
    let approved = contract_async(
        url,
        &[
            "approve", "--shape", &shape, "--by", "alice", "--note", "INC-1", "--json",
        ],
    )
    .await
    .expect(0)
    .json();
    assert_eq!(approved["covers"].as_array().map(Vec::len), Some(30));
    let approval = approved["approval"]["id"].as_str().expect("id").to_owned();

    // Both replicas run their next pass at once: each tenant is remediated by exactly one.
    let (a, b) = tokio::join!(one.revalidate(), two.revalidate());
    let (a, b) = (a.expect("pass 1"), b.expect("pass 2"));
    let twice: Vec<&String> = a
        .remediated
        .iter()
        .filter(|t| b.remediated.contains(t))
        .collect();
    assert!(twice.is_empty(), "remediated twice: {twice:?}");
    assert_eq!(a.remediated.len() + b.remediated.len(), 30, "{a:?} {b:?}");
    // Consumption resumes: every gate of both replicas opens (at the latest one pass on).
    for replica in [&one, &two] {
        if tenants.iter().any(|t| !replica.gate(t).is_open()) {
            replica.revalidate().await.expect("pass");
        }
        let closed: Vec<&String> = tenants
            .iter()
            .filter(|t| !replica.gate(t).is_open())
            .collect();
        assert!(closed.is_empty(), "still closed: {closed:?}");
    }

    let audit = contract_async(url, &["audit", "--json"])
        .await
        .expect(0)
        .json();
    let entries = audit["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 30, "{audit}");
    assert!(
        entries
            .iter()
            .all(|e| e["approved_by"] == "alice" && e["approval_id"] == approval.as_str()),
        "{audit}"
    );
    let mut audited: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["tenant"].as_str())
        .collect();
    audited.sort_unstable();
    assert_eq!(
        audited,
        tenants.iter().map(String::as_str).collect::<Vec<_>>()
    );
    contract_async(url, &["status", "--fail-on", "drift"])
        .await
        .expect(0);
    drop((one, two));
    scratch.drop_db().await;
}
