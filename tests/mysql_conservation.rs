//! Conservation under drift and crashes on MySQL/MariaDB: the shape of `pg_conservation`
//! with a database per tenant. 20 tenants × 1,000 messages (2% poison) consumed by the
//! `conservation_consumer mysql` process, which is SIGKILLed mid-way and restarted, while
//! a contracted column is dropped on 3 tenants (the guard closes those gates only, SafeOnly
//! re-adds the column, the gates reopen). Text queues carry a lone surrogate escape among
//! the poison (the quarantine's `JSON` column refuses it); four tenants keep their
//! payloads in a `JSON` column; after the kill the producer reuses the ids of the poison
//! quarantined so far for new poison. At the end every message is either processed or in
//! its tenant's quarantine, exactly once, with its own bytes and the right reason.

use crate::support;

#[path = "support/conservation.rs"]
mod conservation;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use conservation::{
    BATCH, BOUND, Column, Consumer, DDL_TENANTS, JSON_TENANTS, PER_TENANT, Processed, Stored,
    TENANTS, TOTAL, check_tenant, message, reused, wait_for,
};
use sqlx::{AssertSqlSafe, Connection, MySqlPool};
use support::{MySqlDatabases, exec};
use tokio::time::{Instant, sleep};

/// The scratch databases of one run: a control database and one per tenant.
struct Fleet {
    prefix: String,
    _cleanup: MySqlDatabases,
}

impl Fleet {
    fn new() -> Self {
        let prefix = support::unique_name("cq_cons");
        let mut names: Vec<String> = (1..=TENANTS).map(|t| format!("{prefix}_t{t:02}")).collect();
        names.push(format!("{prefix}_control"));
        Self {
            prefix,
            _cleanup: MySqlDatabases(names),
        }
    }

    fn tenant(&self, t: usize) -> String {
        format!("{}_t{t:02}", self.prefix)
    }

    fn control(&self) -> String {
        format!("{}_control", self.prefix)
    }

    fn ddl_names(&self) -> BTreeSet<String> {
        DDL_TENANTS.iter().map(|t| self.tenant(*t)).collect()
    }
}

fn column(t: usize) -> Column {
    if JSON_TENANTS.contains(&t) {
        Column::StrictJson
    } else {
        Column::Text
    }
}

async fn seed(pool: &MySqlPool, fleet: &Fleet) {
    let control = fleet.control();
    exec(
        pool,
        format!(
            "CREATE DATABASE `{control}`;
             CREATE TABLE `{control}`.pause_log (tenant VARCHAR(255) NOT NULL, reason TEXT NOT NULL,
                seen_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6));
             CREATE TABLE `{control}`.consumer_errors (tenant VARCHAR(255) NOT NULL, code VARCHAR(16),
                message TEXT NOT NULL, seen_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))"
        ),
    )
    .await;
    for t in 1..=TENANTS {
        let db = fleet.tenant(t);
        let ty = match column(t) {
            Column::Text => "LONGTEXT",
            _ => "JSON",
        };
        exec(
            pool,
            format!(
                "CREATE DATABASE `{db}`;
                 CREATE TABLE `{db}`.queue (id BIGINT NOT NULL PRIMARY KEY, payload {ty} NOT NULL,
                    enqueued_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
                    attempts INT NOT NULL DEFAULT 0) ENGINE = InnoDB;
                 CREATE TABLE `{db}`.processed (source_id BIGINT NOT NULL PRIMARY KEY,
                    user_id BIGINT NOT NULL, kind VARCHAR(32) NOT NULL, note TEXT DEFAULT '',
                    processed_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE = InnoDB"
            ),
        )
        .await;
        let ids: Vec<i64> = (1..=PER_TENANT).collect();
        for chunk in ids.chunks(100) {
            let rows = vec!["(?, ?)"; chunk.len()].join(", ");
            let sql = format!("INSERT INTO `{db}`.queue (id, payload) VALUES {rows}");
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for i in chunk {
                query = query.bind(i).bind(message(t, *i, column(t)).0);
            }
            query.execute(pool).await.expect("enqueue");
        }
    }
}

/// The tenant databases that hold a quarantine table (the consumer creates them).
async fn with_quarantine(pool: &MySqlPool, fleet: &Fleet) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT CAST(TABLE_SCHEMA AS CHAR) FROM information_schema.TABLES
         WHERE TABLE_NAME = 'contract_quarantine' AND TABLE_SCHEMA LIKE CONCAT(?, '\\_t%')",
    )
    .bind(&fleet.prefix)
    .fetch_all(pool)
    .await
    .expect("catalog")
}

/// Messages done so far: processed or quarantined, over every tenant.
async fn done(pool: &MySqlPool, fleet: &Fleet) -> i64 {
    let mut counts: Vec<String> = (1..=TENANTS)
        .map(|t| format!("(SELECT COUNT(*) FROM `{}`.processed)", fleet.tenant(t)))
        .collect();
    for db in with_quarantine(pool, fleet).await {
        counts.push(format!("(SELECT COUNT(*) FROM `{db}`.contract_quarantine)"));
    }
    let sql = format!("SELECT CAST({} AS SIGNED)", counts.join(" + "));
    sqlx::query_scalar(AssertSqlSafe(sql.clone()))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// For every poison quarantined so far, a new poison under the same id. Returns tenant →
/// reused ids.
async fn enqueue_reused(pool: &MySqlPool, fleet: &Fleet) -> BTreeMap<String, Vec<i64>> {
    let mut reused_ids = BTreeMap::new();
    for db in with_quarantine(pool, fleet).await {
        let sql = format!("SELECT source_id FROM `{db}`.contract_quarantine ORDER BY source_id");
        let ids: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_all(pool)
            .await
            .expect("quarantined so far");
        for id in &ids {
            let insert = format!("INSERT INTO `{db}`.queue (id, payload) VALUES (?, ?)");
            sqlx::query(AssertSqlSafe(insert))
                .bind(id)
                .bind(reused(*id).0)
                .execute(pool)
                .await
                .expect("enqueue under a reused id");
        }
        reused_ids.insert(db, ids);
    }
    reused_ids
}

/// Batches rolled back by the DDL race (unknown column `42S22` on a DDL'd tenant) are
/// expected; any other rolled-back batch is reported.
async fn unexpected_errors(pool: &MySqlPool, fleet: &Fleet) -> Vec<String> {
    let ddl: Vec<String> = fleet.ddl_names().into_iter().collect();
    let sql = format!(
        "SELECT CONCAT(tenant, ' (', COALESCE(code, '-'), '): ', message)
         FROM `{}`.consumer_errors
         WHERE NOT (code <=> '42S22' AND tenant IN (?, ?, ?)) LIMIT 5",
        fleet.control()
    );
    sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(&ddl[0])
        .bind(&ddl[1])
        .bind(&ddl[2])
        .fetch_all(pool)
        .await
        .expect("consumer_errors")
}

async fn queue_counts(pool: &MySqlPool, fleet: &Fleet) -> Vec<i64> {
    let mut counts = Vec::new();
    for t in DDL_TENANTS {
        let sql = format!("SELECT COUNT(*) FROM `{}`.queue", fleet.tenant(t));
        counts.push(
            sqlx::query_scalar(AssertSqlSafe(sql))
                .fetch_one(pool)
                .await
                .expect("count"),
        );
    }
    counts
}

fn start_consumer(fleet: &Fleet, run: &str) -> Consumer {
    let tenants: Vec<String> = (1..=TENANTS).map(|t| fleet.tenant(t)).collect();
    let args = [
        "mysql".to_owned(),
        support::mysql_url(),
        tenants.join(","),
        BATCH.into(),
        "2".into(),
        fleet.control(),
    ];
    Consumer::start(env!("CARGO_BIN_EXE_conservation_consumer"), &args, run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_every_message_is_processed_or_quarantined_exactly_once_through_drift_and_kill() {
    let started = Instant::now();
    let deadline = started + BOUND;
    let pool = support::mysql_pool().await;
    let fleet = Fleet::new();
    seed(&pool, &fleet).await;
    let pool = &pool;
    let fleet = &fleet;
    let unexpected = || unexpected_errors(pool, fleet);

    // 1. Consume, then SIGKILL the consumer mid-way: its open batch rolls back.
    let mut first = start_consumer(fleet, "mysql_first");
    let fifth = || async { done(pool, fleet).await >= TOTAL / 5 };
    wait_for(deadline, "20% done", &mut first, fifth, unexpected).await;
    first.assert_running("the kill");
    first.child.kill().expect("SIGKILL");
    first.child.wait().expect("reap");
    let at_kill = done(pool, fleet).await;
    assert!(at_kill < TOTAL, "the kill must come mid-way ({at_kill})");
    // The producer reuses the ids of the poison quarantined so far for new poison.
    let reused_ids = enqueue_reused(pool, fleet).await;
    assert!(
        reused_ids.values().map(Vec::len).sum::<usize>() > 0,
        "some poison was quarantined before the kill"
    );

    // 2. Restart; while it consumes, drop `processed.note` on 3 tenants. Another replica
    //    "remediating" them (holding the per-tenant user lock the guard takes) keeps the
    //    repair waiting, so the pause lasts.
    let mut second = start_consumer(fleet, "mysql_second");
    let two_fifths = || async { done(pool, fleet).await >= TOTAL * 2 / 5 };
    wait_for(deadline, "40% done", &mut second, two_fifths, unexpected).await;
    let mut replica = sqlx::MySqlConnection::connect(&support::mysql_url())
        .await
        .expect("connect");
    for db in fleet.ddl_names() {
        let locked: i64 = sqlx::query_scalar("SELECT GET_LOCK(?, 10)")
            .bind(format!("contract:tenant:{db}"))
            .fetch_one(&mut replica)
            .await
            .expect("user lock");
        assert_eq!(locked, 1);
    }
    for db in fleet.ddl_names() {
        exec(
            pool,
            format!("ALTER TABLE `{db}`.processed DROP COLUMN note"),
        )
        .await;
    }
    let dropped_at = done(pool, fleet).await;
    let logged = || async {
        let sql = format!(
            "SELECT COUNT(DISTINCT tenant) FROM `{}`.pause_log",
            fleet.control()
        );
        let paused: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(pool)
            .await
            .expect("pause_log");
        paused >= 3
    };
    let soon = deadline.min(Instant::now() + Duration::from_secs(30));
    wait_for(
        soon,
        "the 3 gates to close",
        &mut second,
        logged,
        unexpected,
    )
    .await;
    // Paused tenants' messages are not touched.
    sleep(Duration::from_millis(200)).await;
    let held = queue_counts(pool, fleet).await;
    assert!(
        held.iter().all(|n| *n > 0),
        "paused with messages: {held:?}"
    );
    sleep(Duration::from_millis(300)).await;
    assert_eq!(queue_counts(pool, fleet).await, held);
    second.assert_running("the repair");
    replica.close().await.expect("release the user locks");

    // 3. Run to completion.
    let status = second.wait_for_exit(deadline, unexpected).await;
    assert!(status.success(), "consumer: {status}\n{}", second.output());
    let elapsed = started.elapsed();

    // Every message exactly once, with its own bytes, in its tenant's quarantine or
    // processed table.
    for t in 1..=TENANTS {
        let db = fleet.tenant(t);
        let processed: Vec<Processed> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT source_id, user_id, CAST(kind AS CHAR), CAST(note AS CHAR) FROM `{db}`.processed
             ORDER BY source_id"
        )))
        .fetch_all(pool)
        .await
        .expect("processed");
        let quarantined: Vec<Stored> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT source_id, payload_raw, reason, field_path, attempts
             FROM `{db}`.contract_quarantine WHERE tenant = ? AND queue = 'queue'
             ORDER BY source_id, id"
        )))
        .bind(&db)
        .fetch_all(pool)
        .await
        .expect("quarantine");
        let reused_here = reused_ids.get(&db).map_or(&[][..], Vec::as_slice);
        check_tenant(&db, t, column(t), reused_here, &processed, &quarantined);
        let sql = format!("SELECT COUNT(*) FROM `{db}`.queue");
        let left: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(pool)
            .await
            .expect("queue");
        assert_eq!(left, 0, "{db}: queue not empty");
    }
    // Only the DDL'd tenants were ever paused, and the guard repaired exactly those.
    let control = fleet.control();
    let paused: BTreeSet<String> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT DISTINCT tenant FROM `{control}`.pause_log"
    )))
    .fetch_all(pool)
    .await
    .expect("pause_log")
    .into_iter()
    .collect();
    assert_eq!(paused, fleet.ddl_names(), "only the drifted tenants pause");
    let mut repaired = BTreeSet::new();
    for t in 1..=TENANTS {
        let db = fleet.tenant(t);
        let audited: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.TABLES
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'contract_audit'",
        )
        .bind(&db)
        .fetch_one(pool)
        .await
        .expect("catalog");
        if audited > 0 {
            let sql =
                format!("SELECT COUNT(*) FROM `{db}`.contract_audit WHERE status = 'applied'");
            let applied: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
                .fetch_one(pool)
                .await
                .expect("audit");
            if applied > 0 {
                repaired.insert(db);
            }
        }
    }
    assert_eq!(
        repaired,
        fleet.ddl_names(),
        "SafeOnly re-added the column there"
    );
    let pauses_left: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM `{control}`.contract_pauses"
    )))
    .fetch_one(pool)
    .await
    .expect("pauses");
    assert_eq!(pauses_left, 0);
    let errors: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT CONCAT(tenant, ' ', COALESCE(code, '-')) FROM `{control}`.consumer_errors"
    )))
    .fetch_all(pool)
    .await
    .expect("errors");
    assert!(unexpected_errors(pool, fleet).await.is_empty());
    let reused_total: usize = reused_ids.values().map(Vec::len).sum();
    println!(
        "{TOTAL} messages + {reused_total} under reused ids in {elapsed:?}; killed at {at_kill}, DDL at {dropped_at}; rolled-back batches: {errors:?}"
    );
}
