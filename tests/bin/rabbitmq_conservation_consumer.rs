//! The consumer run (and killed) by `rabbitmq_conservation`: the guarded RabbitMQ consumer
//! of `contract_sqlx::broker::rabbitmq`, one per tenant queue, writing each tenant's
//! `processed` table (primary key: the message id) in a transaction, dead-lettering
//! poison to the topology's exchange. Runs until killed.
//!
//! `rabbitmq_conservation_consumer <database url> <amqp url> <queue prefix> <tenant,...>
//! <execution log file>`

use std::sync::Arc;
use std::time::Duration;

use contract_sqlx::broker::rabbitmq::{self, Consumer, DeadLetters, RabbitBacklog, Topology};
use contract_sqlx::broker::{Accepted, Handler, HandlerError};
use contract_sqlx::payload::PayloadContract;
use contract_sqlx::plan::Remediation;
use contract_sqlx::{Contract, Guard, SchemaEpoch, Tenants, model::Dialect};
use futures_util::future::BoxFuture;
use serde::Deserialize;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Postgres};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Deserialize)]
struct Message {
    user_id: i64,
    kind: Kind,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Click,
    View,
    Purchase,
}

impl Kind {
    fn as_str(&self) -> &'static str {
        match self {
            Kind::Click => "click",
            Kind::View => "view",
            Kind::Purchase => "purchase",
        }
    }
}

/// The tenant's `processed` table; `note` is what the test drops and the guard re-adds.
#[derive(sqlx::FromRow, Contract)]
#[contract(table = "processed")]
#[allow(dead_code)]
struct Processed {
    #[contract(primary_key)]
    message_id: String,
    user_id: i64,
    kind: String,
    #[contract(default = "''")]
    note: Option<String>,
}

/// One set-based insert per batch, skipping message ids written before, committed before
/// the consumer acknowledges.
struct Writer {
    pool: PgPool,
}

impl Handler<Message> for Writer {
    fn handle<'a>(
        &'a self,
        tenant: &'a str,
        batch: &'a [Accepted<Message>],
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let schema = Dialect::Postgres.quote(tenant)?;
            let ids: Vec<&str> = batch.iter().map(|m| m.message_id.as_str()).collect();
            let users: Vec<i64> = batch.iter().map(|m| m.value.user_id).collect();
            let kinds: Vec<&str> = batch.iter().map(|m| m.value.kind.as_str()).collect();
            let mut tx = self.pool.begin().await?;
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {schema}.processed (message_id, user_id, kind, note)
                 SELECT *, 'ok' FROM unnest($1::text[], $2::int8[], $3::text[])
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

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, amqp, prefix, tenants, log] = args.as_slice() else {
        return Err("usage: rabbitmq_conservation_consumer <url> <amqp url> <prefix> <tenant,...> <execution log>".into());
    };
    let tenants: Vec<String> = tenants.split(',').map(str::to_owned).collect();
    let epoch = SchemaEpoch::new();
    let pool = epoch
        .install(PgPoolOptions::new().max_connections(8))
        .connect(url)
        .await?;
    let connection = Arc::new(rabbitmq::connect(amqp).await?);
    let topology = Topology::new(prefix.clone());
    let guard = Guard::<Postgres>::builder()
        .contract::<Processed>()
        .tenants(Tenants::list(tenants.clone()))
        .remediation(Remediation::SafeOnly)
        .revalidate_every(Duration::from_millis(200))
        .backlog(RabbitBacklog::new(
            Arc::clone(&connection),
            topology.clone(),
        ))
        .execution_log_file(log)
        .epoch(epoch)
        .start(&pool)
        .await?;
    let _revalidation = guard.spawn();
    let _ddl = guard.listen_for_ddl().await?;
    let sink = Arc::new(DeadLetters::new(&connection, topology.clone()).await?);
    let consumer = Arc::new(
        Consumer::new(
            Arc::new(guard),
            topology,
            PayloadContract::named("conservation-message").with_version("1"),
            Arc::new(Writer { pool }),
            sink,
        )
        .with_prefetch(100),
    );
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for tenant in tenants {
        let (consumer, connection, stopped) = (
            Arc::clone(&consumer),
            Arc::clone(&connection),
            stopped.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                if let Err(error) = consumer.run(&connection, &tenant, stopped.clone()).await {
                    eprintln!("{tenant}: {error}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }));
    }
    // Runs until killed.
    let _tasks = tasks;
    std::future::pending::<()>().await;
    Ok(())
}
