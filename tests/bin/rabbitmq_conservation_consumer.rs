//! The consumer run (and killed) by `rabbitmq_conservation`: the guarded RabbitMQ consumer
//! of `contract_sqlx::broker::rabbitmq`, one per tenant queue, writing each tenant's
//! `processed` table (primary key: the message id) in a transaction, dead-lettering
//! poison to the topology's exchange. Runs until killed.
//!
//! `conservation_consumer rabbitmq <database url> <amqp url> <queue prefix> <tenant,...>
//! <execution log file>`

use crate::broker_writer;

use std::sync::Arc;
use std::time::Duration;

use broker_writer::{BoxError, contract, guard};
use contract_sqlx::broker::rabbitmq::{self, Consumer, DeadLetters, RabbitBacklog, Topology};

/// Runs the consumer; `args[0]` is the program, then this consumer's arguments.
pub async fn main(args: Vec<String>) -> Result<(), BoxError> {
    let [_, url, amqp, prefix, tenants, log] = args.as_slice() else {
        return Err("usage: conservation_consumer rabbitmq <url> <amqp url> <prefix> <tenant,...> <execution log>".into());
    };
    let tenants: Vec<String> = tenants.split(',').map(str::to_owned).collect();
    let connection = Arc::new(rabbitmq::connect(amqp).await?);
    let topology = Topology::new(prefix.clone());
    let backlog = RabbitBacklog::new(Arc::clone(&connection), topology.clone());
    let (gate, writer, _tasks) = guard(url, &tenants, backlog, log).await?;
    let sink = Arc::new(DeadLetters::new(&connection, topology.clone()).await?);
    let consumer =
        Arc::new(Consumer::new(gate, topology, contract(), writer, sink).with_prefetch(100));
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
