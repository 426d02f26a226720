//! A multi-tenant NATS JetStream consumer under schema and payload contracts.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1/postgres NATS_URL=nats://127.0.0.1:4222 \
//!     cargo run --example nats_consumer -- --demo
//! ```
//!
//! Each tenant is a PostgreSQL schema with an `events` table the handler writes, and a
//! subject `<prefix>.<tenant>` of one JetStream work stream, read by the tenant's own
//! durable pull consumer (`contract_sqlx::broker::nats`). Before each pull the consumer
//! asks the guard's gate (memory only): a paused tenant is not pulled, so its messages stay
//! in the stream, undelivered. Each batch is checked with the handler's serde type (each
//! message parsed once); poison is published to the tenant's dead-letter subject with
//! readable `x-contract-*` headers, under a publish acknowledgement; the handler writes the
//! rest in one transaction keyed by the message id; only then are the messages acked.
//! Killing the process at any point loses nothing: what was not acked comes back.
//!
//! Without `--demo` it consumes the `tenant_%` schemas from the subjects `events.<tenant>`
//! until stopped; when there are none, it says so and creates nothing. With `--demo` it
//! creates 4 scratch tenants and their streams (tenant 3 drifted in a way the guard
//! repairs, tenant 4 in a way it must not: it waits for approval), consumes until the open
//! tenants have nothing left, prints counts (and fails unless they are what its messages
//! make them), and removes everything it created.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use contract_examples::redact_url;
use contract_sqlx::broker::nats::async_nats::HeaderMap;
use contract_sqlx::broker::nats::async_nats::jetstream::Context;
use contract_sqlx::broker::nats::{self, Consumer, DeadLetters, NatsBacklog, Topology};
use contract_sqlx::broker::{Accepted, Handler, HandlerError};
use contract_sqlx::control::ControlPlane;
use contract_sqlx::payload::PayloadContract;
use contract_sqlx::plan::Remediation;
use contract_sqlx::remediation::{ApplyOptions, AuditConfig};
use contract_sqlx::{Contract, Gate, Guard, model::Dialect};
use contract_sqlx::{SchemaEpoch, TenantDirectory, Tenants};
use serde::Deserialize;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Postgres};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A message as the handler wants it; a payload serde rejects is poison.
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
    id: String, // the message id: a message redelivered after a crash is not stored twice
    user_id: i64,
    kind: String,
    #[contract(default = "'{}'")] // how the guard re-adds the column when it is missing
    metadata: Option<sqlx::types::Json<serde_json::Value>>,
}

/// The handler: one insert per batch into the tenant's `events`, skipping ids stored
/// before, committed before the consumer acks.
struct Writer {
    pool: PgPool,
}

impl Handler<Message> for Writer {
    fn handle<'a>(
        &'a self,
        tenant: &'a str,
        batch: &'a [Accepted<Message>],
    ) -> Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>> {
        Box::pin(async move {
            let schema = Dialect::Postgres.quote(tenant)?; // never paste a raw name
            let ids: Vec<&str> = batch.iter().map(|m| m.message_id.as_str()).collect();
            let users: Vec<i64> = batch.iter().map(|m| m.value.user_id).collect();
            let kinds: Vec<&str> = batch.iter().map(|m| m.value.kind.as_str()).collect();
            let mut tx = self.pool.begin().await?;
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {schema}.events (id, user_id, kind, metadata)
                 SELECT *, '{{}}' FROM unnest($1::text[], $2::int8[], $3::text[])
                 ON CONFLICT (id) DO NOTHING"
            )))
            .bind(&ids)
            .bind(&users)
            .bind(&kinds)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }
}

/// The scratch tenants, schemas and streams of `--demo`.
struct Demo {
    prefix: String,
    ops: String,
    topology: Topology,
}

async fn run() -> Result<(), BoxError> {
    let demo = std::env::args().any(|a| a == "--demo");
    let url = std::env::var("DATABASE_URL").map_err(|_| {
        "set DATABASE_URL to a PostgreSQL database, e.g. DATABASE_URL=postgres://postgres@127.0.0.1/postgres"
    })?;
    let nats_url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
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
    let jetstream = tokio::time::timeout(Duration::from_secs(5), nats::connect(&nats_url))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
        .map_err(|e| {
            format!(
                "{e}; set NATS_URL to a NATS server with JetStream (`nats-server -js`), e.g. NATS_URL=nats://127.0.0.1:4222"
            )
        })?;
    // After the guard changes a schema, pooled connections hold stale prepared statements
    // (`cached plan must not change result type`): the epoch hook recycles them.
    let epoch = SchemaEpoch::new();
    let pool = epoch
        .install(PgPoolOptions::new().max_connections(4))
        .connect(&url)
        .await?;
    if !demo {
        // Look before creating anything: the guard would create its own tables first.
        let tenants = Tenants::schemas_like("tenant_%");
        let found = TenantDirectory::<Postgres>::new()
            .discover(&pool, &tenants)
            .await
            .map_err(|e| format!("{e}; nothing was created (try --demo)"))?;
        let names: Vec<String> = found.tenants().iter().map(|t| t.to_string()).collect();
        let topology = Topology::new("events")?;
        topology.declare(&jetstream, &names).await?;
        let ops = "public".to_owned();
        let tenants = Tenants::list(names);
        return consume(&pool, epoch, &jetstream, &topology, tenants, &ops, false).await;
    }
    let prefix = format!("demo_nats_{}", std::process::id());
    let demo = Demo {
        topology: Topology::new(prefix.clone())?,
        ops: format!("{prefix}_ops"),
        prefix,
    };
    let consumed = match create_demo(&pool, &jetstream, &demo).await {
        Ok(tenants) => {
            let topology = &demo.topology;
            consume(&pool, epoch, &jetstream, topology, tenants, &demo.ops, true).await
        }
        Err(e) => Err(e),
    };
    // Everything the demo created goes, whatever happened.
    let schemas = (1..=4)
        .map(|i| format!("{}_{i}, ", demo.prefix))
        .collect::<String>();
    let drop = format!("DROP SCHEMA IF EXISTS {schemas}{} CASCADE", demo.ops);
    let dropped = sqlx::raw_sql(AssertSqlSafe(drop)).execute(&pool).await;
    demo.topology.delete(&jetstream).await?;
    consumed?;
    dropped?;
    Ok(())
}

/// Starts the guard and one consumer per tenant; with `until_idle`, stops once every open
/// tenant has nothing left in the stream and prints what each tenant got.
async fn consume(
    pool: &PgPool,
    epoch: SchemaEpoch,
    jetstream: &Context,
    topology: &Topology,
    tenants: Tenants,
    ops: &str,
    until_idle: bool,
) -> Result<(), BoxError> {
    // The guard's own tables (pauses, audit) live in `ops`.
    let apply = ApplyOptions::default().with_audit(AuditConfig::default().with_schema(ops));
    let backlog = NatsBacklog::new(jetstream, topology.clone());
    let guard = Arc::new(
        Guard::<Postgres>::builder()
            .contract::<Event>()
            .tenants(tenants)
            .remediation(Remediation::SafeOnly) // additive fixes only; rewrites wait for approval
            .apply_options(apply)
            .control_plane(ControlPlane::default().with_schema(ops))
            .backlog(backlog.clone()) // per-tenant depth: consumer info, no message touched
            .epoch(epoch)
            .start(pool) // checks every tenant, remediates what it may, pauses the rest
            .await?,
    );
    println!("start-up check: {}", guard.report().summary());
    if let Some(log) = guard.execution_log() {
        println!("remediation: {}", log.outcome);
    }
    let _revalidation = guard.spawn(); // re-checks the tenants every 5 s
    let _ddl = guard.listen_for_ddl().await?; // and promptly, once `install_ddl_trigger` ran
    let sink = Arc::new(DeadLetters::new(jetstream, topology.clone()));
    let contract = PayloadContract::named("event-message").with_version("1");
    let writer = Arc::new(Writer { pool: pool.clone() });
    let gate = Arc::clone(&guard);
    let consumer = Arc::new(Consumer::new(
        gate,
        topology.clone(),
        contract,
        writer,
        sink,
    ));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let names = guard.tenants();
    let mut tasks = Vec::new();
    for tenant in names.clone() {
        let (consumer, jetstream, stopped) =
            (Arc::clone(&consumer), jetstream.clone(), stopped.clone());
        tasks.push(tokio::spawn(async move {
            while !*stopped.borrow() {
                if let Err(e) = consumer.run(&jetstream, &tenant, stopped.clone()).await {
                    eprintln!("{tenant}: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }));
    }
    if !until_idle {
        std::future::pending::<()>().await;
    }
    // Until every open tenant's consumer has nothing pending or unacknowledged.
    let bound = Duration::from_secs(60);
    let deadline = tokio::time::Instant::now() + bound;
    let drained = loop {
        let states = backlog.states(&names).await?;
        let idle = names.iter().all(|t| {
            matches!(guard.gate(t), Gate::Paused(_))
                || states
                    .get(t)
                    .is_some_and(|s| s.pending + s.ack_pending == 0)
        });
        if idle || tokio::time::Instant::now() > deadline {
            break idle;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = stop.send(true);
    for task in tasks {
        task.await?;
    }
    // What must have happened: each open tenant's valid messages written and its poison
    // dead-lettered; a paused tenant's messages all still in the stream, undelivered.
    let poison = (1..=DEMO_MESSAGES).filter(|i| payload(*i).1).count() as u64;
    let valid = u64::from(DEMO_MESSAGES) - poison;
    let mut unexpected = Vec::new();
    if !drained {
        unexpected.push(format!("the open tenants did not drain in {bound:?}"));
    }
    let states = backlog.states(&names).await?;
    for t in &names {
        let s = Dialect::Postgres.quote(t)?;
        let handled: i64 =
            sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {s}.events")))
                .fetch_one(pool)
                .await?;
        let waiting = states.get(t).map_or(0, |s| s.pending + s.ack_pending);
        let (letters, _) = nats::dead_letters(jetstream, topology, t).await?;
        let state = match guard.gate(t) {
            Gate::Open(_) => String::new(),
            Gate::Paused(why) => format!(" (paused: {})", why.reason),
        };
        println!(
            "{t}: {handled} handled, {waiting} waiting in the stream, {} dead-lettered{state}",
            letters.len()
        );
        if let Some(letter) = letters.first() {
            println!("  first dead letter: {letter}");
        }
        let got = (handled.unsigned_abs(), waiting, letters.len() as u64);
        let expected = match guard.gate(t).is_open() {
            true => (valid, 0, poison),
            false => (0, valid + poison, 0),
        };
        if got != expected {
            unexpected.push(format!(
                "{t}: expected {} handled, {} waiting, {} dead-lettered",
                expected.0, expected.1, expected.2
            ));
        }
    }
    match unexpected.is_empty() {
        true => Ok(()),
        false => Err(unexpected.join("; ").into()),
    }
}

/// Messages per demo tenant.
const DEMO_MESSAGES: u32 = 250;

/// The demo's message `i`, and whether it is poison: 1 in 25 has a string `user_id`, 1 in
/// 60 is not JSON.
fn payload(i: u32) -> (String, bool) {
    match i {
        i if i % 60 == 0 => ("not json".to_owned(), true),
        i if i % 25 == 0 => (format!(r#"{{"user_id": "u{i}", "kind": "click"}}"#), true),
        i => (format!(r#"{{"user_id": {i}, "kind": "click"}}"#), false),
    }
}

/// `--demo`: 4 tenants with 250 messages each, 1 in 25 poison (a string `user_id`), 1 in
/// 60 not JSON. Tenant 3 lacks `events.metadata` (the guard re-adds it); tenant 4's
/// `user_id` is `int4` (widening rewrites the table: the guard pauses it for approval).
async fn create_demo(pool: &PgPool, jetstream: &Context, demo: &Demo) -> Result<Tenants, BoxError> {
    let prefix = &demo.prefix;
    let mut sql = format!("CREATE SCHEMA {};", demo.ops);
    for s in (1..=4).map(|i| format!("{prefix}_{i}")) {
        sql.push_str(&format!(
            "CREATE SCHEMA {s};
             CREATE TABLE {s}.events (id text PRIMARY KEY, user_id bigint NOT NULL,
                kind text NOT NULL, metadata jsonb);"
        ));
    }
    sql.push_str(&format!(
        "ALTER TABLE {prefix}_3.events DROP COLUMN metadata;
         ALTER TABLE {prefix}_4.events ALTER COLUMN user_id TYPE int4;"
    ));
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(pool).await?;
    let names: Vec<String> = (1..=4).map(|i| format!("{prefix}_{i}")).collect();
    demo.topology.declare(jetstream, &names).await?;
    for tenant in &names {
        let mut acks = Vec::new();
        for i in 1..=DEMO_MESSAGES {
            let (payload, _) = payload(i);
            // `Nats-Msg-Id`: the stream drops a producer's retry; the handler keys on it.
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("{tenant}-{i}").as_str());
            let subject = demo.topology.subject(tenant);
            let payload = payload.into_bytes().into();
            acks.push(
                jetstream
                    .publish_with_headers(subject, headers, payload)
                    .await?,
            );
        }
        for ack in acks {
            ack.await?;
        }
    }
    Ok(Tenants::list(names))
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("nats_consumer: {e}");
        std::process::exit(1);
    }
}
