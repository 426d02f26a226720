//! A multi-tenant RabbitMQ consumer under schema and payload contracts.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1/postgres cargo run --example rabbitmq_consumer -- --demo
//! ```
//!
//! `AMQP_URL` names the broker (default `amqp://guest:guest@127.0.0.1:5672/%2f`). Each
//! tenant is a PostgreSQL schema with an `events` table the handler writes, and has a queue
//! of its own in RabbitMQ (`events.<tenant>`, with `events.<tenant>.dead-letter` bound to
//! the exchange `events.dead-letter`): a paused tenant's consumer is cancelled and its
//! messages wait in its queue, untouched, while the other tenants keep flowing. For each
//! batch of up to 100 deliveries, `broker::rabbitmq::Consumer` asks the guard's gate,
//! checks every payload with the handler's serde type, publishes the poison to the
//! dead-letter exchange with readable headers under publisher confirms, hands the rest to
//! the handler (one idempotent insert keyed by the message id, committed), and only then
//! acknowledges the batch. Killing the process at any point loses nothing.
//!
//! Without `--demo` it consumes the queues `events.<tenant>` of the `tenant_%` schemas until
//! stopped. It looks first and creates nothing in the broker: tenants without their queues
//! are named and skipped, and when none has them (or the dead-letter exchange is missing)
//! it says so and stops before the guard creates its own tables. With `--demo` it creates 4
//! scratch tenants (tenant 3 drifted in a way the guard repairs, tenant 4 in a way it must
//! not), their queues and 250 messages each (14 of them poison), consumes until the open
//! tenants' queues are empty, prints counts (and fails unless they are what the messages
//! make them) and a dead letter, and deletes the schemas, queues and exchange again, also
//! when a step fails.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use contract_examples::redact_url;
use contract_sqlx::broker::rabbitmq::lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueDeclareOptions,
};
use contract_sqlx::broker::rabbitmq::lapin::types::FieldTable;
use contract_sqlx::broker::rabbitmq::lapin::{self, BasicProperties, ExchangeKind};
use contract_sqlx::broker::rabbitmq::{self, Consumer, DeadLetters, RabbitBacklog, Topology};
use contract_sqlx::broker::{Accepted, Handler, HandlerError};
use contract_sqlx::control::ControlPlane;
use contract_sqlx::payload::PayloadContract;
use contract_sqlx::plan::Remediation;
use contract_sqlx::remediation::{ApplyOptions, AuditConfig};
use contract_sqlx::{Contract, Guard, SchemaEpoch, TenantDirectory, Tenants, model::Dialect};
use serde::Deserialize;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Postgres};
use tokio::sync::watch;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The broker used when `AMQP_URL` is not set.
const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Messages per demo tenant.
const DEMO_MESSAGES: i64 = 250;
/// How long the demo waits for the open tenants' queues to drain.
const DEMO_BOUND: Duration = Duration::from_secs(60);

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
    message_id: String, // a message redelivered after a crash cannot be stored twice
    user_id: i64,
    kind: String,
    #[contract(default = "'{}'")] // how the guard re-adds the column when it is missing
    metadata: Option<sqlx::types::Json<serde_json::Value>>,
}

/// The handler: one set-based insert per batch into the tenant's `events`, skipping the
/// message ids written before, committed before the consumer acknowledges the batch.
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
                "INSERT INTO {schema}.events (message_id, user_id, kind, metadata)
                 SELECT *, '{{}}' FROM unnest($1::text[], $2::int8[], $3::text[])
                 ON CONFLICT (message_id) DO NOTHING"
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

/// Whether a queue or an exchange exists, asked with a passive declare (which never
/// creates one) on a channel of its own (a missing one closes the channel).
async fn exists(connection: &lapin::Connection, kind: &str, name: &str) -> Result<bool, BoxError> {
    let channel = connection.create_channel().await?;
    let found = match kind {
        "queue" => {
            let passive = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            channel
                .queue_declare(name, passive, FieldTable::default())
                .await
                .map(|_| ())
        }
        _ => {
            let passive = ExchangeDeclareOptions {
                passive: true,
                ..ExchangeDeclareOptions::default()
            };
            channel
                .exchange_declare(name, ExchangeKind::Direct, passive, FieldTable::default())
                .await
        }
    };
    match found {
        Ok(()) => {
            let _ = channel.close(200, "checked").await;
            Ok(true)
        }
        // 404 NOT_FOUND is a channel (soft) error; anything else is the broker's trouble.
        Err(e) if e.is_amqp_soft_error() => Ok(false),
        Err(e) => Err(format!("checking {kind} {name}: {e}").into()),
    }
}

/// The ready messages of a queue (passive declare).
async fn depth(connection: &lapin::Connection, queue: &str) -> Result<u32, BoxError> {
    let channel = connection.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel
        .queue_declare(queue, passive, FieldTable::default())
        .await
        .map_err(|e| format!("counting queue {queue}: {e}"))?;
    let _ = channel.close(200, "counted").await;
    Ok(declared.message_count())
}

/// Runs one guarded consumer per tenant until `stop` turns `true`; a consumer whose
/// channel fails is run again after a pause (its unacknowledged batch went back).
fn spawn_consumers(
    consumer: &Arc<Consumer<Message, Writer>>,
    connection: &Arc<lapin::Connection>,
    tenants: &[String],
    stop: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    tenants
        .iter()
        .map(|tenant| {
            let (consumer, connection) = (Arc::clone(consumer), Arc::clone(connection));
            let (tenant, stop) = (tenant.clone(), stop.clone());
            tokio::spawn(async move {
                while !*stop.borrow() {
                    match consumer.run(&connection, &tenant, stop.clone()).await {
                        Ok(()) => return,
                        Err(e) => {
                            eprintln!("{tenant}: consumer stopped: {e}; starting it again");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
            })
        })
        .collect()
}

/// Starts the guard over `tenants`, with its own tables in `ops` and the queues' depth as
/// its backlog, and prints what its start-up check did.
async fn start_guard(
    pool: &PgPool,
    epoch: SchemaEpoch,
    tenants: Tenants,
    ops: &str,
    connection: &Arc<lapin::Connection>,
    topology: &Topology,
) -> Result<Guard<Postgres>, BoxError> {
    let apply = ApplyOptions::default().with_audit(AuditConfig::default().with_schema(ops));
    let guard = Guard::<Postgres>::builder()
        .contract::<Event>()
        .tenants(tenants)
        .remediation(Remediation::SafeOnly) // additive fixes only; rewrites wait for approval
        .apply_options(apply)
        .control_plane(ControlPlane::default().with_schema(ops))
        .backlog(RabbitBacklog::new(Arc::clone(connection), topology.clone()))
        .epoch(epoch)
        .start(pool) // checks every tenant, remediates what it may, pauses the rest
        .await?;
    println!("start-up check: {}", guard.report().summary());
    if let Some(log) = guard.execution_log() {
        println!("remediation: {}", log.outcome);
        for tenant in &log.tenants {
            println!(
                "{}: {}: {}",
                tenant.tenant,
                tenant.outcome,
                tenant.statements.join("; ")
            );
        }
    }
    for pause in guard.pauses() {
        println!(
            "{}: paused by {}: {}",
            pause.tenant, pause.paused_by, pause.reason
        );
    }
    Ok(guard)
}

/// The consumer of every tenant in `topology`, dead-lettering into its exchange over
/// `publishing`, a connection of its own: under a memory or disk alarm the broker stops
/// reading publishing connections, and nothing (acknowledgements included) could be
/// written on one the consumers share.
async fn consumer(
    guard: Guard<Postgres>,
    pool: &PgPool,
    publishing: &lapin::Connection,
    topology: &Topology,
) -> Result<Arc<Consumer<Message, Writer>>, BoxError> {
    let sink = Arc::new(DeadLetters::new(publishing, topology.clone()).await?);
    Ok(Arc::new(
        Consumer::new(
            Arc::new(guard),
            topology.clone(),
            PayloadContract::named("event-message").with_version("1"),
            Arc::new(Writer { pool: pool.clone() }),
            sink,
        )
        .with_prefetch(100),
    ))
}

/// Without `--demo`: the `tenant_%` schemas whose queues exist, until stopped.
async fn consume(
    pool: &PgPool,
    epoch: SchemaEpoch,
    connection: Arc<lapin::Connection>,
    publishing: &lapin::Connection,
) -> Result<(), BoxError> {
    // Look before creating anything: the guard would create its own tables first.
    let tenants = Tenants::schemas_like("tenant_%");
    let directory = TenantDirectory::<Postgres>::new()
        .discover(pool, &tenants)
        .await
        .map_err(|e| format!("{e}; nothing was created (try --demo)"))?;
    let topology = Topology::new("events");
    let exchange = topology.dead_letter_exchange();
    if !exists(&connection, "exchange", &exchange).await? {
        return Err(format!(
            "the dead-letter exchange `{exchange}` does not exist; declare the queues with \
             `Topology::new(\"events\").declare(…)`; nothing was created (try --demo)"
        )
        .into());
    }
    let mut ready = Vec::new();
    for tenant in directory.tenants() {
        let tenant = tenant.to_string();
        let (queue, dead) = (topology.queue(&tenant), topology.dead_letter_queue(&tenant));
        match (
            exists(&connection, "queue", &queue).await?,
            exists(&connection, "queue", &dead).await?,
        ) {
            (true, true) => ready.push(tenant),
            (false, _) => println!("{tenant}: no queue `{queue}`; skipped"),
            (true, false) => println!("{tenant}: no dead-letter queue `{dead}`; skipped"),
        }
    }
    if ready.is_empty() {
        return Err("no tenant has its queues; nothing was created (try --demo)".into());
    }
    let guard = start_guard(
        pool,
        epoch,
        Tenants::list(ready.clone()),
        "public",
        &connection,
        &topology,
    )
    .await?;
    let _revalidation = guard.spawn(); // re-checks the tenants every 5 s
    let _ddl = guard.listen_for_ddl().await?; // and promptly, once `install_ddl_trigger` ran
    let consumer = consumer(guard, pool, publishing, &topology).await?;
    println!(
        "consuming {} tenant queues `{}` until stopped",
        ready.len(),
        topology.queue("*")
    );
    let (_stop, stopped) = watch::channel(false);
    for task in spawn_consumers(&consumer, &connection, &ready, &stopped) {
        task.await?;
    }
    Ok(())
}

/// The demo's scratch objects: schemas `demo_<pid>_1..4` (the tenants) and `demo_<pid>_ops`
/// (the guard's tables), and the topology `events_<pid>` (its own queues and exchange, so
/// that deleting them touches nothing of a real `events` topology on the same broker).
struct Scratch {
    prefix: String,
    tenants: Vec<String>,
    topology: Topology,
}

impl Scratch {
    /// Drops the schemas and deletes the queues and the exchange; reports what failed.
    async fn clean_up(
        &self,
        pool: &PgPool,
        connection: &lapin::Connection,
    ) -> Result<(), BoxError> {
        let schemas: String = self.tenants.iter().map(|t| format!("{t}, ")).collect();
        let drop = format!("DROP SCHEMA IF EXISTS {schemas}{}_ops CASCADE", self.prefix);
        let dropped = sqlx::raw_sql(AssertSqlSafe(drop)).execute(pool).await;
        let deleted = self.topology.delete(connection, &self.tenants).await;
        match (dropped, deleted) {
            (Ok(_), Ok(())) => {
                println!(
                    "cleaned up: schemas {}_1..4 and {0}_ops, queues `{}` and their dead-letter \
                     queues, exchange `{}`",
                    self.prefix,
                    self.topology.queue("*"),
                    self.topology.dead_letter_exchange()
                );
                Ok(())
            }
            (Err(e), _) => Err(format!("dropping the demo schemas {}_*: {e}", self.prefix).into()),
            (_, Err(e)) => Err(format!("deleting the demo queues: {e}").into()),
        }
    }
}

/// `--demo`: creates the scratch tenants and queues, consumes, prints, cleans up (also
/// after a failed step).
async fn demo(
    pool: &PgPool,
    epoch: SchemaEpoch,
    connection: Arc<lapin::Connection>,
    publishing: &lapin::Connection,
) -> Result<(), BoxError> {
    let pid = std::process::id();
    let prefix = format!("demo_{pid}");
    let scratch = Scratch {
        tenants: (1..=4).map(|i| format!("{prefix}_{i}")).collect(),
        topology: Topology::new(format!("events_{pid}")),
        prefix,
    };
    let outcome = demo_steps(pool, epoch, &connection, publishing, &scratch).await;
    let cleaned = scratch.clean_up(pool, &connection).await;
    let _ = connection.close(200, "demo done").await;
    outcome.and(cleaned)
}

async fn demo_steps(
    pool: &PgPool,
    epoch: SchemaEpoch,
    connection: &Arc<lapin::Connection>,
    publishing: &lapin::Connection,
    scratch: &Scratch,
) -> Result<(), BoxError> {
    let (prefix, tenants, topology) = (&scratch.prefix, &scratch.tenants, &scratch.topology);
    create_schemas(pool, prefix, tenants).await?;
    topology.declare(connection, tenants).await?;
    for tenant in tenants {
        publish(connection, &topology.queue(tenant)).await?;
    }
    println!(
        "demo: {} tenants, {DEMO_MESSAGES} messages each in queues `{}` ({} of them poison)",
        tenants.len(),
        topology.queue("*"),
        (1..=DEMO_MESSAGES).filter(|i| payload(*i).1).count()
    );
    let guard = start_guard(
        pool,
        epoch,
        Tenants::list(tenants.clone()),
        &format!("{prefix}_ops"),
        connection,
        topology,
    )
    .await?;
    let open: Vec<String> = tenants
        .iter()
        .filter(|t| guard.gate(t).is_open())
        .cloned()
        .collect();
    let consumer = consumer(guard, pool, publishing, topology).await?;
    let (stop, stopped) = watch::channel(false);
    let tasks = spawn_consumers(&consumer, connection, tenants, &stopped);
    // Every open tenant's messages handled or dead-lettered, nothing unacknowledged.
    let drained = wait_until_drained(pool, connection, topology, &open).await;
    let _ = stop.send(true);
    for task in tasks {
        task.await?;
    }
    drained?;
    // What must have happened: each open tenant's valid messages written and its poison
    // dead-lettered; the paused tenant's messages all still in its queue.
    let poison = (1..=DEMO_MESSAGES).filter(|i| payload(*i).1).count() as u64;
    let valid = DEMO_MESSAGES.unsigned_abs() - poison;
    let mut unexpected = Vec::new();
    for tenant in tenants {
        let (handled, waiting, dead) = counts(pool, connection, topology, tenant).await?;
        println!(
            "{tenant}: {handled} handled, {waiting} waiting in its queue, {dead} dead-lettered"
        );
        let (handled, waiting, dead) =
            (handled.unsigned_abs(), u64::from(waiting), u64::from(dead));
        let expected = match open.contains(tenant) {
            true => (valid, 0, poison),
            false => (0, valid + poison, 0),
        };
        if (handled, waiting, dead) != expected {
            unexpected.push(format!(
                "{tenant}: expected {} handled, {} waiting, {} dead-lettered",
                expected.0, expected.1, expected.2
            ));
        }
    }
    let (letters, _) = rabbitmq::dead_letters(connection, topology, &tenants[0]).await?;
    let mut reasons = BTreeMap::new();
    for letter in &letters {
        *reasons.entry(letter.reason.as_str()).or_insert(0) += 1;
    }
    let reasons: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    println!("{} dead letters: {}", tenants[0], reasons.join(", "));
    if !unexpected.is_empty() {
        return Err(unexpected.join("; ").into());
    }
    if let Some(letter) = letters.iter().find(|l| l.field_path.is_some()) {
        println!("  {letter}");
        println!(
            "  headers: reason {}, field path {}, contract {}, original routing key {}",
            letter.reason,
            letter.field_path.as_deref().unwrap_or("-"),
            letter.contract,
            letter.original_routing_key
        );
    }
    Ok(())
}

/// Handled rows, messages waiting in the queue, dead letters of one tenant.
async fn counts(
    pool: &PgPool,
    connection: &lapin::Connection,
    topology: &Topology,
    tenant: &str,
) -> Result<(i64, u32, u32), BoxError> {
    let schema = Dialect::Postgres.quote(tenant)?;
    let handled: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM {schema}.events"
    )))
    .fetch_one(pool)
    .await?;
    let waiting = depth(connection, &topology.queue(tenant)).await?;
    let dead = depth(connection, &topology.dead_letter_queue(tenant)).await?;
    Ok((handled, waiting, dead))
}

/// Waits until each of `open`'s messages is handled or dead-lettered.
async fn wait_until_drained(
    pool: &PgPool,
    connection: &lapin::Connection,
    topology: &Topology,
    open: &[String],
) -> Result<(), BoxError> {
    let deadline = tokio::time::Instant::now() + DEMO_BOUND;
    loop {
        let mut done = true;
        for tenant in open {
            let (handled, _, dead) = counts(pool, connection, topology, tenant).await?;
            done &= handled + i64::from(dead) == DEMO_MESSAGES;
        }
        if done {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("the open tenants' queues did not drain in {DEMO_BOUND:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Tenant schemas with an `events` table; tenant 3 lacks `events.metadata` (the guard
/// re-adds it); tenant 4's `user_id` is `int4` (widening rewrites the table: the guard
/// pauses it for approval).
async fn create_schemas(pool: &PgPool, prefix: &str, tenants: &[String]) -> Result<(), BoxError> {
    let mut sql = format!("CREATE SCHEMA {prefix}_ops;");
    for s in tenants {
        sql.push_str(&format!(
            "CREATE SCHEMA {s};
             CREATE TABLE {s}.events (message_id text PRIMARY KEY, user_id bigint NOT NULL,
                kind text NOT NULL, metadata jsonb);"
        ));
    }
    sql.push_str(&format!(
        "ALTER TABLE {prefix}_3.events DROP COLUMN metadata;
         ALTER TABLE {prefix}_4.events ALTER COLUMN user_id TYPE int4;"
    ));
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(pool).await?;
    Ok(())
}

/// The demo's message `i`, and whether it is poison: 1 in 25 has a string `user_id`, 1 in
/// 60 is not JSON.
fn payload(i: i64) -> (String, bool) {
    if i % 60 == 0 {
        ("not json".to_owned(), true)
    } else if i % 25 == 0 {
        (format!(r#"{{"user_id": "u{i}", "kind": "click"}}"#), true)
    } else {
        (format!(r#"{{"user_id": {i}, "kind": "click"}}"#), false)
    }
}

/// Publishes the demo's messages to `queue` (persistent, confirmed), with ids `m1`, `m2`, ….
async fn publish(connection: &lapin::Connection, queue: &str) -> Result<(), BoxError> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    for i in 1..=DEMO_MESSAGES {
        let (payload, _) = payload(i);
        let properties = BasicProperties::default()
            .with_message_id(format!("m{i}").into())
            .with_delivery_mode(2);
        channel
            .basic_publish(
                "",
                queue,
                BasicPublishOptions::default(),
                payload.as_bytes(),
                properties,
            )
            .await?;
    }
    channel.wait_for_confirms().await?;
    let _ = channel.close(200, "published").await;
    Ok(())
}

async fn run() -> Result<(), BoxError> {
    let demo_mode = std::env::args().any(|a| a == "--demo");
    let url = std::env::var("DATABASE_URL").map_err(|_| {
        "set DATABASE_URL to a PostgreSQL database, e.g. DATABASE_URL=postgres://postgres@127.0.0.1/postgres"
    })?;
    let amqp = std::env::var("AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.to_owned());
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
    let connection = tokio::time::timeout(Duration::from_secs(5), rabbitmq::connect(&amqp))
        .await
        .map_err(|_| format!("no answer from {} in 5 s", redact_url(&amqp)))?
        .map_err(|e| format!("{e}; set AMQP_URL to a reachable RabbitMQ"))?;
    let connection = Arc::new(connection);
    let publishing = rabbitmq::connect(&amqp).await?;
    // After the guard changes a schema, pooled connections hold stale prepared statements
    // (`cached plan must not change result type`): the epoch hook recycles them.
    let epoch = SchemaEpoch::new();
    let pool = epoch
        .install(PgPoolOptions::new().max_connections(4))
        .connect(&url)
        .await?;
    let outcome = if demo_mode {
        demo(&pool, epoch, connection, &publishing).await
    } else {
        consume(&pool, epoch, connection, &publishing).await
    };
    let _ = publishing.close(200, "done").await;
    outcome
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("rabbitmq_consumer: {e}");
        std::process::exit(1);
    }
}
