//! Conservation in front of RabbitMQ: the scenario of `support/broker_conservation.rs`
//! (20 tenant queues × 1,000 messages, 2% poison, the consumer SIGKILLed and restarted, a
//! column dropped on 3 tenants whose consumers are cancelled while their messages wait in
//! their queues, untouched) through the `conservation_consumer rabbitmq` process. A
//! second test shows a dead letter published twice (a consumer killed between the
//! confirm and the ack) is counted and replayed once.

use crate::conservation;

use crate::broker;

use crate::broker_conservation;

use std::collections::BTreeMap;
use std::sync::Arc;

use broker::{RabbitScratch, publish, rabbit};
use broker_conservation::{Broker, Held, every_message_exactly_once, tenant};
use conservation::TENANTS;
use contract_sqlx::broker::DeadLetter;
use contract_sqlx::broker::rabbitmq::{self, DeadLetters, RabbitBacklog, Topology, lapin};
use contract_sqlx::payload::PayloadContract;
use contract_sqlx::quarantine::{QuarantineRecord, QuarantineSink};

struct Rabbit {
    connection: Arc<lapin::Connection>,
    topology: Topology,
    backlog: RabbitBacklog,
}

impl Broker for Rabbit {
    fn consumer(&self) -> &'static str {
        "rabbitmq"
    }

    fn url(&self) -> String {
        broker::amqp_url()
    }

    fn prefix(&self) -> String {
        self.topology.queue("").trim_end_matches('.').to_owned()
    }

    fn message_id(&self, _tenant: &str, i: i64) -> String {
        format!("m{i}")
    }

    async fn publish(&self, tenant: &str, messages: &[(String, String)]) {
        publish(&self.connection, &self.topology.queue(tenant), messages).await;
    }

    /// The ready messages of each queue (a cancelled consumer holds none unacknowledged).
    async fn held(&self, tenants: &[String]) -> BTreeMap<String, Held> {
        let depths = self.backlog.depths(tenants).await.expect("depths");
        depths
            .into_iter()
            .map(|(t, waiting)| {
                let held = Held {
                    waiting,
                    untouched: String::new(),
                };
                (t, held)
            })
            .collect()
    }

    async fn left(&self, tenants: &[String]) -> BTreeMap<String, u64> {
        let depths = self.backlog.depths(tenants).await.expect("depths");
        depths.into_iter().collect()
    }

    async fn dead_letters(&self, tenant: &str) -> (Vec<DeadLetter>, u64) {
        rabbitmq::dead_letters(&self.connection, &self.topology, tenant)
            .await
            .expect("dead letters")
    }

    fn source(&self, tenant: &str) -> String {
        self.topology.queue(tenant)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_is_handled_or_dead_lettered_exactly_once_through_drift_and_kill() {
    let connection = rabbit().await;
    let names: Vec<String> = (1..=TENANTS).map(tenant).collect();
    let scratch = RabbitScratch::declare(&connection, "contract_rabbit", names).await;
    let topology = scratch.topology.clone();
    let rabbit = Rabbit {
        backlog: RabbitBacklog::new(Arc::clone(&connection), topology.clone()),
        connection,
        topology,
    };
    every_message_exactly_once(&rabbit, "contract_rabbit").await;
    drop(scratch);
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Strict {
    user_id: i64,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Lenient {
    user_id: serde_json::Value,
}

/// The crash window between a dead-letter publish's confirm and the ack: the message is
/// dead-lettered a second time. Readers count one message per id, and a replay (once the
/// contract accepts it) re-publishes it once and removes both copies, only after the
/// re-publish is confirmed; a message still rejected stays.
#[tokio::test]
async fn a_dead_letter_published_twice_is_counted_and_replayed_once() {
    let connection = rabbit().await;
    let scratch =
        RabbitScratch::declare(&connection, "contract_dlq", vec!["tenant_a".into()]).await;
    let topology = scratch.topology.clone();
    let sink = DeadLetters::new(&connection, topology.clone())
        .await
        .expect("sink");
    let strict = PayloadContract::<Strict>::named("strict");
    let record = |id: &str, raw: &[u8]| {
        let rejection = strict.check(raw).err().expect("poison");
        QuarantineRecord::new(
            "tenant_a",
            topology.queue("tenant_a"),
            id,
            &strict,
            &rejection,
            raw,
        )
    };
    let retryable = record("m1", br#"{"user_id": "7"}"#);
    let broken = record("m2", b"{not json");
    assert_eq!(
        sink.put(std::slice::from_ref(&retryable))
            .await
            .expect("first copy"),
        1
    );
    // The consumer died before its ack: the redelivered message is dead-lettered again.
    sink.put(&[retryable.clone(), broken])
        .await
        .expect("second copy");
    let (letters, duplicates) = rabbitmq::dead_letters(&connection, &topology, "tenant_a")
        .await
        .expect("read");
    assert_eq!((letters.len(), duplicates), (2, 1));
    assert_eq!(letters[0].reason, "contract_mismatch");
    assert_eq!(letters[0].field_path.as_deref(), Some("user_id"));
    // Replay with a contract that accepts the first one now.
    let lenient = PayloadContract::<Lenient>::named("lenient");
    let report = rabbitmq::replay(&connection, &topology, "tenant_a", &lenient)
        .await
        .expect("replay");
    assert_eq!(
        (
            report.replayed,
            report.duplicates_removed,
            report.still_rejected.len()
        ),
        (1, 1, 1)
    );
    let backlog = RabbitBacklog::new(Arc::clone(&connection), topology.clone());
    let depth = backlog
        .depths(&["tenant_a".to_owned()])
        .await
        .expect("depth");
    assert_eq!(depth.get("tenant_a"), Some(&1), "re-published once");
    let (left, duplicates) = rabbitmq::dead_letters(&connection, &topology, "tenant_a")
        .await
        .expect("read");
    assert_eq!((left.len(), duplicates), (1, 0));
    assert_eq!(
        (left[0].message_id.as_str(), left[0].reason.as_str()),
        ("m2", "invalid_json")
    );
    drop(scratch);
}
