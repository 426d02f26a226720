//! Broker benchmark: messages per second through the guarded RabbitMQ consumer
//! (`broker::rabbitmq::Consumer`: the gate before each batch, the payload contract on each
//! message, the dead-letter sink, ack after the handler committed) against a bare `lapin`
//! consumer running the same handler, measured in one run.
//!
//! ```text
//! cargo bench -p contract-sqlx --bench broker -- --messages 20000 --rounds 5 --prefetch 100
//! ```
//!
//! Needs PostgreSQL at `CONTRACT_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and RabbitMQ at `CONTRACT_TEST_AMQP_URL`
//! (default `amqp://guest:guest@127.0.0.1:5672/%2f`). It creates a scratch database with one
//! tenant schema (`events`, primary key the message id) and a uniquely named tenant queue,
//! and removes both again, also when a step fails.
//!
//! Each round publishes `--messages` valid messages to the tenant's queue (persistent,
//! confirmed; untimed), then times one consumer from its start until the handler has
//! committed every message: the same handler (one `INSERT … SELECT FROM unnest(…) ON
//! CONFLICT (message_id) DO NOTHING` per batch, in a transaction) and the same batching
//! (wait for a first delivery, take what is buffered up to the prefetch, ack the batch with
//! `multiple` once the handler returned) for both. The bare consumer parses with
//! `serde_json::from_slice` and takes the `message_id` property; the guarded one asks the
//! guard's gate (the revalidation task is not running) and checks with a
//! `PayloadContract`. The table is truncated between runs; the order of the two consumers
//! alternates by round; one warm-up round is not counted. Besides the wall-clock rates it
//! prints the median of each round's own ratio (its two runs are back to back, so a noisy
//! spell of the machine lands on both) and this process's CPU time per message for each
//! consumer (the client side of the comparison, which the servers' work does not blur).
//! The last stdout line is one JSON object: `{"bench":"broker","messages":…,"prefetch":…,
//! "rounds":…,"guarded_per_s":…,"bare_per_s":…,"guarded_vs_bare":…,
//! "guarded_vs_bare_paired":…}` (the rates of the median runs and their ratio, target
//! ≥ 0.95; then the median of the rounds' own ratios).

mod pgfleet;

use std::sync::Arc;
use std::time::{Duration, Instant};

use contract_sqlx::broker::rabbitmq::lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use contract_sqlx::broker::rabbitmq::lapin::types::FieldTable;
use contract_sqlx::broker::rabbitmq::lapin::{self, BasicProperties};
use contract_sqlx::broker::rabbitmq::{self, Consumer, DeadLetters, Topology};
use contract_sqlx::broker::{Accepted, Handler, HandlerError};
use contract_sqlx::payload::PayloadContract;
use contract_sqlx::plan::Remediation;
use contract_sqlx::{Contract, Guard, Tenants};
use futures_util::future::BoxFuture;
use futures_util::{FutureExt as _, StreamExt as _};
use pgfleet::{Result, Timing, ms};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgPool, Postgres};
use tokio::sync::watch;

const AMQP_VAR: &str = "CONTRACT_TEST_AMQP_URL";
const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const TENANT: &str = "tenant_1";
/// How long one consumer may take for one round before the bench fails.
const ROUND_BOUND: Duration = Duration::from_secs(120);

fn main() {
    let mut args = [("--messages", 20_000), ("--rounds", 5), ("--prefetch", 100)];
    if let Err(e) = pgfleet::parse_args(
        "broker [--messages N] [--rounds R] [--prefetch P]",
        &mut args,
    ) {
        eprintln!("broker bench: {e}");
        std::process::exit(2);
    }
    let [(_, messages), (_, rounds), (_, prefetch)] = args;
    let Ok(prefetch) = u16::try_from(prefetch) else {
        eprintln!("broker bench: --prefetch must be at most {}", u16::MAX);
        std::process::exit(2);
    };
    pgfleet::run_main(
        "broker",
        pgfleet::with_scratch_db("contract_bench_broker", move |scratch| {
            run(scratch, messages, rounds, prefetch)
        }),
    );
}

/// A message as the handler wants it.
#[derive(serde::Deserialize)]
struct Message {
    user_id: i64,
    kind: String,
}

/// The tenant's table: the guard's schema contract.
#[allow(dead_code)]
#[derive(sqlx::FromRow, Contract)]
#[contract(table = "events")]
struct Event {
    #[contract(primary_key)]
    message_id: String,
    user_id: i64,
    kind: String,
}

/// The handler both consumers run, counting what it committed.
struct Writer {
    pool: PgPool,
    committed: watch::Sender<u64>,
}

impl Writer {
    /// One idempotent set-based insert in a transaction, counted once committed.
    async fn write(
        &self,
        tenant: &str,
        ids: &[&str],
        users: &[i64],
        kinds: &[&str],
    ) -> Result<(), HandlerError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {tenant}.events (message_id, user_id, kind)
             SELECT * FROM unnest($1::text[], $2::int8[], $3::text[])
             ON CONFLICT (message_id) DO NOTHING"
        )))
        .bind(ids)
        .bind(users)
        .bind(kinds)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.committed.send_modify(|n| *n += ids.len() as u64);
        Ok(())
    }
}

impl Handler<Message> for Writer {
    fn handle<'a>(
        &'a self,
        tenant: &'a str,
        batch: &'a [Accepted<Message>],
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let ids: Vec<&str> = batch.iter().map(|m| m.message_id.as_str()).collect();
            let users: Vec<i64> = batch.iter().map(|m| m.value.user_id).collect();
            let kinds: Vec<&str> = batch.iter().map(|m| m.value.kind.as_str()).collect();
            self.write(tenant, &ids, &users, &kinds).await
        })
    }
}

/// Which consumer a run times.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Guarded,
    Bare,
}

async fn run(
    scratch: PgConnectOptions,
    messages: usize,
    rounds: usize,
    prefetch: u16,
) -> Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(scratch)
        .await?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE SCHEMA {TENANT};
         CREATE TABLE {TENANT}.events (message_id text PRIMARY KEY, user_id bigint NOT NULL,
            kind text NOT NULL)"
    )))
    .execute(&pool)
    .await?;
    let amqp = std::env::var(AMQP_VAR).unwrap_or_else(|_| DEFAULT_AMQP_URL.to_owned());
    let connection = Arc::new(
        rabbitmq::connect(&amqp)
            .await
            .map_err(|e| format!("{e}; start RabbitMQ or set {AMQP_VAR} to a reachable server"))?,
    );
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let topology = Topology::new(format!(
        "contract_bench_broker_{}_{nanos}",
        std::process::id()
    ));
    let tenants = vec![TENANT.to_owned()];
    topology.declare(&connection, &tenants).await?;
    let outcome = measure(&pool, &connection, &topology, messages, rounds, prefetch).await;
    let deleted = topology.delete(&connection, &tenants).await;
    let _ = connection.close(200, "bench done").await;
    pool.close().await;
    match deleted {
        Ok(()) => eprintln!("queues `{}` deleted", topology.queue("*")),
        Err(e) => eprintln!(
            "WARNING: could not delete the queues `{}`: {e}; delete them by hand",
            topology.queue("*")
        ),
    }
    outcome
}

async fn measure(
    pool: &PgPool,
    connection: &Arc<lapin::Connection>,
    topology: &Topology,
    messages: usize,
    rounds: usize,
    prefetch: u16,
) -> Result<()> {
    let guard = Guard::<Postgres>::builder()
        .contract::<Event>()
        .tenants(Tenants::list([TENANT]))
        .remediation(Remediation::Off)
        .start(pool)
        .await?;
    if !guard.gate(TENANT).is_open() {
        return Err(format!("the bench tenant is paused:\n{}", guard.report()).into());
    }
    let (committed, _) = watch::channel(0);
    let writer = Arc::new(Writer {
        pool: pool.clone(),
        committed,
    });
    let sink = Arc::new(DeadLetters::new(connection, topology.clone()).await?);
    let consumer = Arc::new(
        Consumer::new(
            Arc::new(guard),
            topology.clone(),
            PayloadContract::<Message>::named("bench-message"),
            Arc::clone(&writer),
            sink,
        )
        .with_prefetch(prefetch),
    );
    let payloads: Vec<(String, String)> = (1..=messages)
        .map(|i| {
            (
                format!("m{i}"),
                format!(r#"{{"user_id": {i}, "kind": "click", "note": "a message of the broker bench"}}"#),
            )
        })
        .collect();
    let queue = topology.queue(TENANT);
    let (mut guarded, mut bare) = (Vec::new(), Vec::new());
    // This process's CPU time per run (the consumer's client side), and each round's
    // guarded/bare rate ratio (the two runs of a round are back to back).
    let (mut guarded_cpu, mut bare_cpu, mut paired) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..=rounds {
        let order = if round % 2 == 0 {
            [Variant::Guarded, Variant::Bare]
        } else {
            [Variant::Bare, Variant::Guarded]
        };
        for variant in order {
            sqlx::raw_sql(AssertSqlSafe(format!("TRUNCATE {TENANT}.events")))
                .execute(pool)
                .await?;
            writer.committed.send_replace(0);
            publish(connection, &queue, &payloads).await?;
            let (stop, stopped) = watch::channel(false);
            let mut done = writer.committed.subscribe();
            let (started, cpu_before) = (Instant::now(), process_cpu());
            let task = match variant {
                Variant::Guarded => {
                    let (consumer, connection) = (Arc::clone(&consumer), Arc::clone(connection));
                    tokio::spawn(async move {
                        consumer
                            .run(&connection, TENANT, stopped)
                            .await
                            .map_err(|e| e.to_string())
                    })
                }
                Variant::Bare => {
                    let (writer, connection, queue) =
                        (Arc::clone(&writer), Arc::clone(connection), queue.clone());
                    tokio::spawn(async move {
                        bare_consumer(&connection, &queue, prefetch, &writer, stopped)
                            .await
                            .map_err(|e| e.to_string())
                    })
                }
            };
            let all = matches!(
                tokio::time::timeout(ROUND_BOUND, done.wait_for(|n| *n >= messages as u64)).await,
                Ok(Ok(_))
            );
            let elapsed = started.elapsed();
            let cpu = process_cpu()
                .zip(cpu_before)
                .map(|(after, before)| after.saturating_sub(before));
            let _ = stop.send(true);
            let stopped = task.await?;
            let name = match variant {
                Variant::Guarded => "guarded",
                Variant::Bare => "bare",
            };
            if !all {
                return Err(format!(
                    "the {name} consumer committed {} of {messages} messages in {ROUND_BOUND:?} ({})",
                    *writer.committed.borrow(),
                    stopped.err().unwrap_or_default()
                )
                .into());
            }
            stopped.map_err(|e| format!("the {name} consumer failed: {e}"))?;
            let rows: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT count(*) FROM {TENANT}.events"
            )))
            .fetch_one(pool)
            .await?;
            let left = depth(connection, &queue).await?;
            if rows != i64::try_from(messages)? || left != 0 {
                return Err(format!(
                    "the {name} consumer wrote {rows} rows of {messages}, {left} left in the queue"
                )
                .into());
            }
            eprintln!(
                "round {round}{}: {name} {:.1} ms",
                if round == 0 { " (warm-up)" } else { "" },
                ms(elapsed)
            );
            if round > 0 {
                let (wall, cpus) = match variant {
                    Variant::Guarded => (&mut guarded, &mut guarded_cpu),
                    Variant::Bare => (&mut bare, &mut bare_cpu),
                };
                wall.push(elapsed);
                cpus.extend(cpu);
            }
        }
        if round > 0 {
            let last = |v: &[Duration]| v.last().map_or(0.0, Duration::as_secs_f64);
            paired.push(last(&bare) / last(&guarded));
        }
    }
    let (guarded, bare) = (Timing::of(&guarded), Timing::of(&bare));
    #[allow(clippy::cast_precision_loss)]
    let rate = |d: Duration| messages as f64 / d.as_secs_f64();
    println!();
    println!(
        "{messages} messages per run through one tenant queue, prefetch/batch {prefetch}, \
         1 warm-up + {rounds} rounds"
    );
    println!(
        "{:<48} {:>10} {:>10} {:>10}  runs",
        "consumer", "min ms", "median ms", "max ms"
    );
    guarded.print("guarded: broker::rabbitmq::Consumer", rounds);
    bare.print("bare: lapin consumer, same handler", rounds);
    let (guarded_per_s, bare_per_s) = (rate(guarded.median), rate(bare.median));
    let ratio = guarded_per_s / bare_per_s;
    paired.sort_by(f64::total_cmp);
    let paired_median = paired[paired.len() / 2];
    #[allow(clippy::cast_precision_loss)]
    let per_message = |cpu: &[Duration]| {
        (cpu.len() == rounds).then(|| Timing::of(cpu).median.as_secs_f64() * 1e6 / messages as f64)
    };
    if let (Some(g), Some(b)) = (per_message(&guarded_cpu), per_message(&bare_cpu)) {
        println!(
            "client CPU per message (this process, median run): guarded {g:.1} us, bare {b:.1} us"
        );
    }
    println!();
    println!(
        "guarded {guarded_per_s:.0} messages/s, bare {bare_per_s:.0} messages/s (medians): \
         guarded/bare {ratio:.3} (extremes {:.3}..{:.3}; median of the rounds' own ratios \
         {paired_median:.3}); target >= 0.95",
        rate(guarded.max) / rate(bare.min),
        rate(guarded.min) / rate(bare.max),
    );
    println!(
        "{{\"bench\":\"broker\",\"messages\":{messages},\"prefetch\":{prefetch},\"rounds\":{rounds},\
         \"guarded_per_s\":{guarded_per_s:.0},\"bare_per_s\":{bare_per_s:.0},\
         \"guarded_vs_bare\":{ratio:.3},\"guarded_vs_bare_paired\":{paired_median:.3}}}"
    );
    Ok(())
}

/// The baseline: a `lapin` consumer with the same prefetch and batching, parsing with
/// serde_json and running the same handler, acking each batch once it committed.
async fn bare_consumer(
    connection: &lapin::Connection,
    queue: &str,
    prefetch: u16,
    writer: &Writer,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let tag = format!("bare.{}", uuid::Uuid::now_v7());
    let mut consumer = channel
        .basic_consume(
            queue,
            &tag,
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let max = usize::from(prefetch);
    let mut batch = Vec::with_capacity(max);
    while !*stop.borrow() {
        batch.clear();
        match tokio::time::timeout(Duration::from_millis(100), consumer.next()).await {
            Err(_) => continue,
            Ok(None) => break,
            Ok(Some(delivery)) => batch.push(delivery?),
        }
        while batch.len() < max {
            match consumer.next().now_or_never() {
                Some(Some(delivery)) => batch.push(delivery?),
                _ => break,
            }
        }
        let mut values = Vec::with_capacity(batch.len());
        for delivery in &batch {
            let message: Message = serde_json::from_slice(&delivery.data)?;
            let id = delivery
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.as_str().to_owned())
                .ok_or("a message without id")?;
            values.push((id, message));
        }
        let ids: Vec<&str> = values.iter().map(|(id, _)| id.as_str()).collect();
        let users: Vec<i64> = values.iter().map(|(_, m)| m.user_id).collect();
        let kinds: Vec<&str> = values.iter().map(|(_, m)| m.kind.as_str()).collect();
        writer.write(TENANT, &ids, &users, &kinds).await?;
        if let Some(last) = batch.last() {
            channel
                .basic_ack(last.delivery_tag, BasicAckOptions { multiple: true })
                .await?;
        }
    }
    channel
        .basic_cancel(&tag, BasicCancelOptions::default())
        .await?;
    let _ = channel.close(200, "stopped").await;
    Ok(())
}

/// Publishes `messages` (id, payload) to `queue` through the default exchange, persistent,
/// and waits for every confirm.
async fn publish(
    connection: &lapin::Connection,
    queue: &str,
    messages: &[(String, String)],
) -> Result<()> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    for (id, payload) in messages {
        let properties = BasicProperties::default()
            .with_message_id(id.as_str().into())
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

/// This process's CPU time (user + system, all threads), from `/proc/self/stat` (Linux;
/// 10 ms ticks).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// The ready messages of `queue` (passive declare).
async fn depth(connection: &lapin::Connection, queue: &str) -> Result<u32> {
    let channel = connection.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel
        .queue_declare(queue, passive, FieldTable::default())
        .await?;
    let _ = channel.close(200, "counted").await;
    Ok(declared.message_count())
}
