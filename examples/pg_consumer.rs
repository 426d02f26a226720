//! A multi-tenant PostgreSQL queue consumer under schema and payload contracts.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1/postgres cargo run --example pg_consumer -- --demo
//! ```
//!
//! Each tenant is a schema with a `queue` table (JSON messages as text) and an `events`
//! table the handler writes. One batch is one transaction: the guard's gate (memory only),
//! a claim with `FOR UPDATE SKIP LOCKED`, a payload check with the handler's own serde
//! type (each message parsed once), poison moved to quarantine, the handler, then ack and
//! commit — or roll back when the tenant was paused meanwhile, which releases the claimed
//! messages without counting an attempt. Killing the process at any point loses nothing.
//!
//! Without `--demo` it consumes the `tenant_%` schemas until stopped; when there are none,
//! it says so and creates nothing (not even the guard's own tables). With `--demo` it
//! creates 4 scratch tenants (tenant 3 drifted in a way the guard repairs, tenant 4 in a
//! way it must not), consumes until the open queues are empty, prints counts, cleans up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use contract_examples::redact_url;
use contract_sqlx::control::ControlPlane;
use contract_sqlx::payload::PayloadContract;
use contract_sqlx::plan::Remediation;
use contract_sqlx::quarantine::{PayloadType, Quarantine, QueueQuarantine, QueueTable};
use contract_sqlx::remediation::{ApplyOptions, AuditConfig};
use contract_sqlx::{Contract, Gate, Guard, guard::PauseInfo, model::Dialect};
use contract_sqlx::{SchemaEpoch, TenantDirectory, TenantName, Tenants};
use serde::Deserialize;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Postgres};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A queued message as the handler wants it; a payload serde rejects is poison.
#[derive(Debug, Deserialize)]
struct Message {
    user_id: i64,
    kind: String,
}

/// A row of the tenant's `events` table: the schema contract the guard checks everywhere.
#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "events")]
#[allow(dead_code)]
struct Event {
    #[contract(primary_key)]
    id: i64, // the message id: a message redelivered after a crash cannot be stored twice
    user_id: i64,
    kind: String,
    #[contract(default = "'{}'")] // how the guard re-adds the column when it is missing
    metadata: Option<sqlx::types::Json<serde_json::Value>>,
}

/// What one batch did.
enum Batch {
    Paused(Arc<PauseInfo>),
    Empty,
    /// The tenant was paused while the batch ran: rolled back, messages released.
    Released,
    Done,
}

struct Consumer {
    pool: PgPool,
    guard: Guard<Postgres>,
    contract: PayloadContract<Message>,
    /// Each tenant's queue and where its poison goes.
    sites: HashMap<TenantName, QueueQuarantine>,
    batch_size: i64,
}

impl Consumer {
    /// Claims, checks, handles and acknowledges one batch of one tenant.
    async fn batch(&self, tenant: &TenantName) -> Result<Batch, BoxError> {
        // 1. The gate answers from memory; a paused tenant's messages are not touched. The
        // queue's gate: an operator pause of this queue alone (`contract pause <tenant>
        // --queue queue`) stops it too, which the tenant's gate (`gate(tenant)`) ignores.
        let site = self.sites.get(tenant).ok_or("tenant without a queue")?;
        let permit = match self.guard.gate_queue(tenant.as_str(), site.queue_name()) {
            Gate::Open(permit) => permit,
            Gate::Paused(why) => return Ok(Batch::Paused(why)),
        };
        let schema = Dialect::Postgres.quote(tenant.as_str())?; // never paste a raw name
        let mut tx = self.pool.begin().await?;
        // 2. Claim. The LIMIT stays inside the CTE: a fence around the locking select.
        let claimed: Vec<(i64, String)> = sqlx::query_as(AssertSqlSafe(format!(
            "WITH c AS (SELECT id FROM {schema}.queue ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
             SELECT q.id, q.payload FROM {schema}.queue q JOIN c USING (id) ORDER BY q.id"
        )))
        .bind(self.batch_size)
        .fetch_all(&mut *tx)
        .await?;
        if claimed.is_empty() {
            return Ok(Batch::Empty); // dropping `tx` rolls it back
        }
        // 3. Check every payload once; the parsed value is what the handler gets.
        let (mut accepted, mut rejected) = (Vec::new(), Vec::new());
        for (id, raw) in &claimed {
            match self.contract.check_str(raw) {
                Ok(message) => accepted.push((*id, message)),
                Err(why) => rejected.push((*id, raw.as_bytes(), why)),
            }
        }
        // 4. Poison leaves the queue for quarantine in this transaction (one statement).
        let poison: Vec<_> = rejected
            .iter()
            .map(|(i, raw, why)| (*i, *raw, why))
            .collect();
        site.quarantine(&mut *tx, &self.contract, &poison).await?;
        // 5. The handler, in the same transaction: its writes commit with the ack.
        for (id, message) in &accepted {
            handle(&mut tx, &schema, *id, message).await?;
        }
        // 6. Paused meanwhile (drift found, operator pause)? Release instead of acking.
        if !permit.is_current() {
            tx.rollback().await?;
            return Ok(Batch::Released);
        }
        let ids: Vec<i64> = accepted.iter().map(|(id, _)| *id).collect();
        let ack = format!("DELETE FROM {schema}.queue WHERE id = ANY($1)");
        sqlx::query(AssertSqlSafe(ack))
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Batch::Done)
    }

    /// Round-robin over the tenants; returns after a round with nothing to do when
    /// `until_idle`, otherwise polls forever.
    async fn run(&self, until_idle: bool) -> Result<(), BoxError> {
        let tenants: Vec<TenantName> = (self.guard.tenants().into_iter())
            .map(TenantName::new)
            .collect::<Result<_, _>>()?;
        let mut paused: HashMap<&str, String> = HashMap::new(); // log each reason once
        loop {
            let mut busy = false;
            for tenant in &tenants {
                match self.batch(tenant).await {
                    Ok(Batch::Paused(why)) => {
                        let reason = Some(why.reason.clone());
                        if paused.insert(tenant.as_str(), why.reason.clone()) != reason {
                            println!("{tenant}: paused by {}: {}", why.paused_by, why.reason);
                        }
                    }
                    Ok(outcome) => {
                        if paused.remove(tenant.as_str()).is_some() {
                            println!("{tenant}: resumed");
                        }
                        busy |= matches!(outcome, Batch::Done | Batch::Released);
                    }
                    // E.g. DDL raced the batch before the guard noticed: nothing was acked.
                    Err(e) => eprintln!("{tenant}: batch rolled back: {e}"),
                }
            }
            if !busy && until_idle {
                return Ok(());
            } else if !busy {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// The handler: one insert into the tenant's `events`.
async fn handle(db: &mut PgConnection, schema: &str, id: i64, m: &Message) -> Result<(), BoxError> {
    let sql = format!(
        "INSERT INTO {schema}.events (id, user_id, kind, metadata) VALUES ($1, $2, $3, '{{}}')"
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(id)
        .bind(m.user_id)
        .bind(&m.kind)
        .execute(db)
        .await?;
    Ok(())
}

async fn run() -> Result<(), BoxError> {
    let demo = std::env::args().any(|a| a == "--demo");
    let url = std::env::var("DATABASE_URL").map_err(|_| {
        "set DATABASE_URL to a PostgreSQL database, e.g. DATABASE_URL=postgres://postgres@127.0.0.1/postgres"
    })?;
    // A first connection reports a clear error (the pool would only say it timed out).
    let unreachable = |e: &dyn std::fmt::Display| {
        format!(
            "cannot connect to {} ({e}); set DATABASE_URL to a reachable server",
            redact_url(&url)
        )
    };
    tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&url))
        .await
        .map_err(|e| unreachable(&e))?
        .map_err(|e| unreachable(&e))?
        .close()
        .await?;
    // After the guard changes a schema, pooled connections hold stale prepared statements
    // (`cached plan must not change result type`): the epoch hook recycles them.
    let epoch = SchemaEpoch::new();
    let pool = epoch
        .install(PgPoolOptions::new().max_connections(4))
        .connect(&url)
        .await?;
    let prefix = format!("demo_{}", std::process::id());
    let (tenants, ops) = match demo {
        true => (create_demo(&pool, &prefix).await?, format!("{prefix}_ops")),
        false => {
            // Look before creating anything: the guard would create its own tables first.
            let tenants = Tenants::schemas_like("tenant_%");
            TenantDirectory::<Postgres>::new()
                .discover(&pool, &tenants)
                .await
                .map_err(|e| format!("{e}; nothing was created (try --demo)"))?;
            (tenants, "public".to_owned())
        }
    };
    // The guard's own tables (pauses, audit, quarantine) live in `public` by default.
    let apply = ApplyOptions::default().with_audit(AuditConfig::default().with_schema(ops.clone()));
    let pauses = ControlPlane::default().with_schema(ops.clone());
    let quarantine = Quarantine::default().with_schema(ops.clone());
    let guard = Guard::<Postgres>::builder()
        .contract::<Event>()
        .tenants(tenants)
        .remediation(Remediation::SafeOnly) // additive fixes only; rewrites wait for approval
        .apply_options(apply)
        .control_plane(pauses)
        .epoch(epoch)
        .start(&pool) // checks every tenant, remediates what it may, pauses the rest
        .await?;
    println!("start-up check: {}", guard.report().summary());
    if let Some(log) = guard.execution_log() {
        println!("remediation: {}", log.outcome);
    }
    let _revalidation = guard.spawn(); // re-checks the tenants every 5 s
    let _ddl = guard.listen_for_ddl().await?; // and promptly, once `install_ddl_trigger` ran
    // One site per tenant queue; on PostgreSQL they share one quarantine table.
    let mut sites = HashMap::new();
    for tenant in guard.tenants() {
        let tenant = TenantName::new(tenant)?;
        let queue = QueueTable::new("queue").with_payload("payload", PayloadType::Text);
        let site = QueueQuarantine::new(tenant.clone(), queue).with_quarantine(quarantine.clone());
        site.ensure_table(&pool).await?; // creates (or upgrades) it once; then a no-op
        sites.insert(tenant, site);
    }
    let consumer = Consumer {
        pool: pool.clone(),
        guard,
        contract: PayloadContract::named("event-message").with_version("1"),
        sites,
        batch_size: 100,
    };
    consumer.run(demo).await?;
    if demo {
        for t in consumer.guard.tenants() {
            let s = Dialect::Postgres.quote(&t)?;
            let (handled, waiting, quarantined): (i64, i64, i64) =
                sqlx::query_as(AssertSqlSafe(format!(
                    "SELECT (SELECT count(*) FROM {s}.events), (SELECT count(*) FROM {s}.queue),
                        (SELECT count(*) FROM {ops}.contract_quarantine WHERE tenant = $1)"
                )))
                .bind(&t)
                .fetch_one(&pool)
                .await?;
            println!("{t}: {handled} handled, {waiting} waiting, {quarantined} quarantined");
        }
        let schemas = (1..=4)
            .map(|i| format!("{prefix}_{i}, "))
            .collect::<String>();
        let drop = format!("DROP SCHEMA {schemas}{ops} CASCADE");
        sqlx::raw_sql(AssertSqlSafe(drop)).execute(&pool).await?;
    }
    Ok(())
}

/// `--demo`: 4 tenants with 250 messages each, 1 in 25 poison (a string `user_id`),
/// 1 in 60 not JSON. Tenant 3 lacks `events.metadata` (the guard re-adds it); tenant 4's
/// `user_id` is `int4` (widening rewrites the table: the guard pauses it for approval).
async fn create_demo(pool: &PgPool, prefix: &str) -> Result<Tenants, BoxError> {
    let mut sql = format!("CREATE SCHEMA {prefix}_ops;");
    for s in (1..=4).map(|i| format!("{prefix}_{i}")) {
        sql.push_str(&format!(
            "CREATE SCHEMA {s};
             CREATE TABLE {s}.queue (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                payload text NOT NULL, enqueued_at timestamptz NOT NULL DEFAULT now(),
                attempts int NOT NULL DEFAULT 0);
             CREATE TABLE {s}.events (id bigint PRIMARY KEY, user_id bigint NOT NULL,
                kind text NOT NULL, metadata jsonb);
             INSERT INTO {s}.queue (payload) SELECT CASE
                WHEN i % 60 = 0 THEN 'not json'
                WHEN i % 25 = 0 THEN format('{{\"user_id\": \"u%s\", \"kind\": \"click\"}}', i)
                ELSE format('{{\"user_id\": %s, \"kind\": \"click\"}}', i) END
             FROM generate_series(1, 250) AS i;"
        ));
    }
    sql.push_str(&format!(
        "ALTER TABLE {prefix}_3.events DROP COLUMN metadata;
         ALTER TABLE {prefix}_4.events ALTER COLUMN user_id TYPE int4;"
    ));
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(pool).await?;
    Ok(Tenants::list((1..=4).map(|i| format!("{prefix}_{i}"))))
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("pg_consumer: {e}");
        std::process::exit(1);
    }
}
