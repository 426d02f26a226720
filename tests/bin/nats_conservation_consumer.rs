//! The consumer run (and killed) by `nats_conservation`: the guarded JetStream consumer of
//! `contract_sqlx::broker::nats`, one per tenant subject, writing each tenant's
//! `processed` table (primary key: the message id) in a transaction, dead-lettering
//! poison to the topology's dead-letter stream. Runs until killed.
//!
//! `conservation_consumer nats <database url> <nats url> <stream prefix> <tenant,...>
//! <execution log file>`

use crate::broker_writer;

use std::sync::Arc;
use std::time::Duration;

use broker_writer::{BoxError, contract, guard};
use contract_sqlx::broker::nats::{self, Consumer, DeadLetters, NatsBacklog, Topology};

/// Runs the consumer; `args[0]` is the program, then this consumer's arguments.
pub async fn main(args: Vec<String>) -> Result<(), BoxError> {
    let [_, url, nats_url, prefix, tenants, log] = args.as_slice() else {
        return Err("usage: conservation_consumer nats <url> <nats url> <prefix> <tenant,...> <execution log>".into());
    };
    let tenants: Vec<String> = tenants.split(',').map(str::to_owned).collect();
    let jetstream = nats::connect(nats_url).await?;
    // The test declared the consumers (with its `ack_wait`); the names are all we need.
    let topology = Topology::new(prefix.clone())?;
    let backlog = NatsBacklog::new(&jetstream, topology.clone());
    let (gate, writer, _tasks) = guard(url, &tenants, backlog, log).await?;
    let sink = Arc::new(DeadLetters::new(&jetstream, topology.clone()));
    // Contract limit below NATS' 1 MiB message limit, so that `too_large` poison fits.
    let contract = contract().with_max_bytes(256 * 1024);
    let consumer = Arc::new(Consumer::new(gate, topology, contract, writer, sink).with_batch(100));
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for tenant in tenants {
        let (consumer, jetstream, stopped) =
            (Arc::clone(&consumer), jetstream.clone(), stopped.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                if let Err(error) = consumer.run(&jetstream, &tenant, stopped.clone()).await {
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
