//! NATS JetStream (`async-nats`, on tokio): one durable pull consumer per tenant subject,
//! which the gate stops pulling and resumes; poison dead-lettered under JetStream publish
//! acknowledgements.
//!
//! **Layout.** One work stream per application, `<prefix>`, holding the subjects
//! `<prefix>.<tenant>` (producers publish there, ideally with a `Nats-Msg-Id`), with
//! work-queue retention: a message leaves the stream when it is acknowledged, so what is
//! in the stream is exactly what is not handled yet. Each tenant has a durable pull
//! consumer named after it, filtered to its subject. Dead letters go to a second stream,
//! `<prefix>_dead_letter`, subjects `<prefix>.dead-letter.<tenant>` (limits retention:
//! kept until replayed or removed).
//!
//! **Why a consumer per tenant subject, not a stream per tenant or one shared consumer.**
//! A shared consumer would deliver a paused tenant's messages anyway, to be nacked (a
//! redelivery loop that burns the delivery count) or held (blocking its ack window for
//! every tenant). A filtered durable consumer per tenant is paused by not pulling: the
//! server delivers nothing, counts nothing, and its `num_pending` is the tenant's backlog.
//! A stream per tenant would work too but costs a storage (and, clustered, a Raft group)
//! per tenant; consumers are cheap and the streams stay two.
//!
//! **Delivery guarantees.** Messages are acknowledged one by one (explicit policy) only
//! after the handler's transaction committed and the batch's poison was stored under a
//! publish acknowledgement; the last ack of a batch waits for the server's confirmation.
//! `max_deliver` is unlimited, so a message whose consumer dies is redelivered after
//! `ack_wait` ([`Topology::with_ack_wait`]) however often that happens, never dropped by
//! the server; poison is taken out by the consumer, readably, not by a delivery limit.
//! A batch pulled just as the tenant's gate closed is given back once (a nak, one
//! delivery counted); a paused tenant's consumer then pulls nothing.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # #[derive(serde::Deserialize)] struct Job { id: i64 }
//! # async fn demo(guard: contract_sqlx::Guard<sqlx::Postgres>, handler: Arc<impl contract_sqlx::broker::Handler<Job>>) -> Result<(), Box<dyn std::error::Error>> {
//! use contract_sqlx::broker::nats::{self, Consumer, DeadLetters, Topology};
//! use contract_sqlx::payload::PayloadContract;
//!
//! let jetstream = nats::connect("nats://127.0.0.1:4222").await?;
//! let topology = Topology::new("jobs")?;
//! topology.declare(&jetstream, &["tenant_1".to_owned()]).await?;
//! let sink = Arc::new(DeadLetters::new(&jetstream, topology.clone()));
//! let consumer = Arc::new(Consumer::new(Arc::new(guard), topology, PayloadContract::<Job>::named("job"), handler, sink));
//! let (_stop, stopped) = tokio::sync::watch::channel(false);
//! consumer.run(&jetstream, "tenant_1", stopped).await?; // until `_stop` sends `true`
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::{AckKind, Context, Message};
use futures_util::StreamExt as _;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::{
    Accepted, BrokerError, Handler, MESSAGE_ID, ORIGINAL_ROUTING_KEY, TenantGate, digest_id, redact,
};
use crate::Gate;
use crate::payload::PayloadContract;
use crate::quarantine::{QuarantineRecord, QuarantineSink};

mod dead_letters;
mod depth;

/// The `async-nats` client this module is built on (to publish, or to declare more).
pub use async_nats;
pub use dead_letters::{DeadLetters, dead_letters, replay};
pub use depth::{ConsumerState, NatsBacklog};

/// How often a paused tenant's gate is asked again.
const PAUSED_POLL: Duration = Duration::from_millis(50);
/// How long a pull request waits for messages before the gate is asked again.
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// The delay before a failed batch's messages are delivered again.
const BACKOFF: Duration = Duration::from_millis(200);
/// The default `ack_wait`: how long a delivered, unacknowledged message waits before the
/// server delivers it again.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
/// The header JetStream de-duplicates publishes on.
const NATS_MSG_ID: &str = "Nats-Msg-Id";

/// Connects to NATS on the current tokio runtime and returns its JetStream context.
///
/// # Errors
///
/// [`BrokerError::Broker`] when the server cannot be reached.
pub async fn connect(url: &str) -> Result<Context, BrokerError> {
    let client = async_nats::connect(url).await.map_err(|e| {
        BrokerError::broker("NATS", format!("connecting to {}", redact(url)), None)(e.into())
    })?;
    Ok(async_nats::jetstream::new(client))
}

fn nats(
    action: impl Into<String>,
    tenant: Option<&str>,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> BrokerError {
    BrokerError::broker("NATS", action, tenant)
}

/// Refuses a name that cannot be a subject token, a stream or a consumer name.
fn check_name(name: &str, what: &'static str) -> Result<(), BrokerError> {
    let why = if name.is_empty() {
        Some("it is empty")
    } else if name
        .chars()
        .any(|c| matches!(c, '.' | '*' | '>' | '/' | '\\') || c.is_whitespace() || c.is_control())
    {
        Some("NATS names and subject tokens cannot hold `.`, `*`, `>`, slashes or white space")
    } else {
        None
    };
    match why {
        Some(why) => Err(BrokerError::Name {
            name: name.to_owned(),
            what,
            why,
        }),
        None => Ok(()),
    }
}

/// The names of one application's streams, subjects and consumers (see the module
/// documentation), and the consumers' `ack_wait`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
    ack_wait: Duration,
}

impl Topology {
    /// The streams named after `prefix`, with an `ack_wait` of [`DEFAULT_ACK_WAIT`].
    ///
    /// # Errors
    ///
    /// [`BrokerError::Name`] when `prefix` cannot name a stream.
    pub fn new(prefix: impl Into<String>) -> Result<Self, BrokerError> {
        let prefix = prefix.into();
        check_name(&prefix, "a JetStream stream prefix")?;
        Ok(Self {
            prefix,
            ack_wait: DEFAULT_ACK_WAIT,
        })
    }

    /// Sets how long a delivered message may stay unacknowledged before the server
    /// delivers it again (longer than a batch takes to handle; a killed consumer's
    /// messages come back after it). Applies to consumers [`Topology::declare`] creates.
    #[must_use]
    pub fn with_ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// The work stream.
    #[must_use]
    pub fn stream(&self) -> String {
        self.prefix.clone()
    }

    /// The tenant's subject (producers publish there).
    #[must_use]
    pub fn subject(&self, tenant: &str) -> String {
        format!("{}.{tenant}", self.prefix)
    }

    /// The tenant's durable consumer: the tenant's name.
    #[must_use]
    pub fn consumer(&self, tenant: &str) -> String {
        tenant.to_owned()
    }

    /// The dead-letter stream.
    #[must_use]
    pub fn dead_letter_stream(&self) -> String {
        format!("{}_dead_letter", self.prefix)
    }

    /// The tenant's dead-letter subject.
    #[must_use]
    pub fn dead_letter_subject(&self, tenant: &str) -> String {
        format!("{}.dead-letter.{tenant}", self.prefix)
    }

    /// Creates the two streams (file storage) and each tenant's durable pull consumer,
    /// leaving those that exist as they are (idempotent; an existing consumer keeps its
    /// `ack_wait`).
    ///
    /// # Errors
    ///
    /// [`BrokerError::Name`] for a tenant that cannot be a subject token;
    /// [`BrokerError::Broker`] naming what the server refused.
    pub async fn declare(
        &self,
        jetstream: &Context,
        tenants: &[String],
    ) -> Result<(), BrokerError> {
        for tenant in tenants {
            check_name(tenant, "a tenant subject token")?;
        }
        let work = stream::Config {
            name: self.stream(),
            subjects: vec![format!("{}.*", self.prefix)],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            ..stream::Config::default()
        };
        let dead = stream::Config {
            name: self.dead_letter_stream(),
            subjects: vec![self.dead_letter_subject("*")],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            ..stream::Config::default()
        };
        for config in [work, dead] {
            let name = config.name.clone();
            jetstream
                .get_or_create_stream(config)
                .await
                .map_err(|e| nats(format!("creating stream {name}"), None)(e.into()))?;
        }
        let stream = self.work_stream(jetstream, None).await?;
        for tenant in tenants {
            let name = self.consumer(tenant);
            let config = pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: self.subject(tenant),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait: self.ack_wait,
                max_deliver: -1,
                ..pull::Config::default()
            };
            stream
                .get_or_create_consumer::<pull::Config>(&name, config)
                .await
                .map_err(|e| nats(format!("creating consumer {name}"), Some(tenant))(e.into()))?;
        }
        Ok(())
    }

    /// Deletes both streams and with them every consumer (clean-up of tests and demos);
    /// a stream already gone is not an error.
    ///
    /// # Errors
    ///
    /// [`BrokerError::Broker`] when a delete is refused.
    pub async fn delete(&self, jetstream: &Context) -> Result<(), BrokerError> {
        for name in [self.stream(), self.dead_letter_stream()] {
            if let Err(error) = jetstream.delete_stream(&name).await {
                use async_nats::jetstream::context::DeleteStreamErrorKind;
                let gone = matches!(error.kind(), DeleteStreamErrorKind::JetStream(e)
                    if e.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND);
                if !gone {
                    return Err(nats(format!("deleting stream {name}"), None)(error.into()));
                }
            }
        }
        Ok(())
    }

    async fn work_stream(
        &self,
        jetstream: &Context,
        tenant: Option<&str>,
    ) -> Result<stream::Stream, BrokerError> {
        let name = self.stream();
        jetstream
            .get_stream(&name)
            .await
            .map_err(|e| nats(format!("reading stream {name}"), tenant)(e.into()))
    }

    async fn pull_consumer(
        &self,
        jetstream: &Context,
        tenant: &str,
    ) -> Result<PullConsumer, BrokerError> {
        let name = self.consumer(tenant);
        self.work_stream(jetstream, Some(tenant))
            .await?
            .get_consumer(&name)
            .await
            .map_err(|e| nats(format!("reading consumer {name}"), Some(tenant))(e))
    }
}

/// The guarded consumer of every tenant subject of a [`Topology`]: run one
/// [`Consumer::run`] per tenant.
pub struct Consumer<T, H> {
    gate: Arc<dyn TenantGate>,
    topology: Topology,
    contract: PayloadContract<T>,
    handler: Arc<H>,
    sink: Arc<dyn QuarantineSink>,
    batch: usize,
}

impl<T, H> Consumer<T, H>
where
    T: DeserializeOwned + Send + Sync + 'static,
    H: Handler<T>,
{
    /// A consumer asking `gate`, checking with `contract`, writing through `handler`,
    /// dead-lettering into `sink`; batches of up to 100 messages.
    pub fn new(
        gate: Arc<dyn TenantGate>,
        topology: Topology,
        contract: PayloadContract<T>,
        handler: Arc<H>,
        sink: Arc<dyn QuarantineSink>,
    ) -> Self {
        Self {
            gate,
            topology,
            contract,
            handler,
            sink,
            batch: 100,
        }
    }

    /// Sets the largest batch one pull asks for (also the most messages of a tenant
    /// delivered and not yet acknowledged).
    #[must_use]
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Consumes `tenant`'s subject until `stop` turns `true`: while its gate is open (the
    /// tenant's, and no operator pause of this subject alone, [`TenantGate::gate_queue`]),
    /// batches are pulled, checked, handled, dead-lettered and acknowledged; while it is
    /// paused, nothing is pulled (its messages wait in the stream, their delivery count
    /// untouched).
    ///
    /// # Errors
    ///
    /// [`BrokerError::Broker`] when the consumer cannot be read or a pull or an
    /// acknowledgement fails (what was not acknowledged is delivered again after
    /// `ack_wait`); run it again.
    pub async fn run(
        &self,
        jetstream: &Context,
        tenant: &str,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), BrokerError> {
        let consumer = self.topology.pull_consumer(jetstream, tenant).await?;
        let subject = self.topology.subject(tenant);
        let mut paused = false;
        while !*stop.borrow() {
            let permit = match self.gate.gate_queue(tenant, &subject) {
                Gate::Open(permit) => permit,
                Gate::Paused(why) => {
                    if !paused {
                        tracing::info!(tenant, subject, reason = %why.reason, "tenant paused: not pulling");
                        paused = true;
                    }
                    if let Ok(Err(_)) = tokio::time::timeout(PAUSED_POLL, stop.changed()).await {
                        tokio::time::sleep(PAUSED_POLL).await; // nobody can stop it any more
                    }
                    continue;
                }
            };
            paused = false;
            let batch = pull_batch(&consumer, self.batch, tenant).await?;
            if batch.is_empty() {
                continue;
            }
            if !permit.is_current() {
                // Paused while the batch arrived: it goes back untouched, once.
                settle(batch.iter(), AckKind::Nak(None), tenant).await?;
                continue;
            }
            let (outcome, unsettled) = self.process(tenant, &subject, &batch).await;
            let unsettled = unsettled.iter().map(|&i| &batch[i]);
            match outcome {
                Ok(()) => settle(unsettled, AckKind::Ack, tenant).await?,
                Err(error) => {
                    tracing::warn!(tenant, subject, %error, "batch not acknowledged; it will be delivered again");
                    settle(unsettled, AckKind::Nak(Some(BACKOFF)), tenant).await?;
                    tokio::time::sleep(BACKOFF).await;
                }
            }
        }
        Ok(())
    }

    /// Checks a batch, dead-letters the poison (acknowledged by the dead-letter stream) and
    /// acknowledges it, then hands the rest to the handler; the outcome, and the positions in
    /// `batch` of the messages left for the caller to settle (all of them until the poison
    /// is settled, then the accepted ones). The poison is settled before the handler runs:
    /// a handler that fails gets back only the accepted messages, so a retry does not
    /// dead-letter the poison again (past the dead-letter stream's duplicate window, every
    /// retry stored another copy).
    async fn process(
        &self,
        tenant: &str,
        subject: &str,
        batch: &[Message],
    ) -> (
        Result<(), Box<dyn std::error::Error + Send + Sync>>,
        Vec<usize>,
    ) {
        let mut accepted = Vec::with_capacity(batch.len());
        let mut accepted_at = Vec::with_capacity(batch.len());
        let mut poison = Vec::new();
        let mut poison_at = Vec::new();
        for (at, message) in batch.iter().enumerate() {
            let position = position(message);
            let id = message_id(message, &self.topology.stream(), position.as_deref());
            match self.contract.check(&message.payload) {
                Ok(value) => {
                    accepted_at.push(at);
                    accepted.push(Accepted {
                        message_id: id,
                        value,
                    });
                }
                Err(rejection) => {
                    poison_at.push(at);
                    let mut record = QuarantineRecord::new(
                        tenant,
                        subject,
                        id,
                        &self.contract,
                        &rejection,
                        &message.payload,
                    );
                    for (name, value) in texts(message.headers.as_ref()) {
                        record = record.with_header(name, value);
                    }
                    record = record.with_header(ORIGINAL_ROUTING_KEY, message.subject.as_str());
                    // The dead-letter stream drops a second copy of this delivery (a
                    // consumer killed between the publish and the ack, a failed batch)
                    // within its duplicate window; a replayed message has a new sequence.
                    if let Some(position) = &position {
                        let stream = self.topology.stream();
                        let key = format!("dead-letter:{stream}:{position}");
                        record = record.with_header(NATS_MSG_ID, key);
                    }
                    poison.push(record);
                }
            }
        }
        if !poison.is_empty() {
            let all = (0..batch.len()).collect();
            if let Err(error) = self.sink.put(&poison).await {
                return (Err(error.into()), all);
            }
            let settled = settle(poison_at.iter().map(|&i| &batch[i]), AckKind::Ack, tenant);
            if let Err(error) = settled.await {
                return (Err(error.into()), all);
            }
        }
        if !accepted.is_empty() {
            if let Err(error) = self.handler.handle(tenant, &accepted).await {
                return (Err(error), accepted_at);
            }
            crate::guard::metrics::record_messages(subject, "accepted", accepted.len() as u64);
        }
        (Ok(()), accepted_at)
    }
}

/// Every header of a message with its first value, as text, except JetStream's own
/// (`Nats-Msg-Id`, `Nats-Expected-*`, …), which would steer a re-publish.
fn texts(headers: Option<&HeaderMap>) -> Vec<(String, String)> {
    headers
        .map(|h| {
            h.iter()
                .filter(|(name, _)| {
                    let name: &str = name.as_ref();
                    !name.to_ascii_lowercase().starts_with("nats-")
                })
                .filter_map(|(name, values)| {
                    values
                        .first()
                        .map(|v| (name.to_string(), v.as_str().to_owned()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A header's first value.
fn header(headers: Option<&HeaderMap>, name: &str) -> Option<String> {
    headers
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_owned())
        .filter(|v| !v.is_empty())
}

/// Where a message is in its stream: `<stream sequence>@<publish time in nanoseconds>`,
/// both from the `$JS.ACK` reply subject, the same on every redelivery. The sequence alone
/// starts again at 1 in a stream deleted and created again: new messages then carried the
/// ids of messages already written (an idempotent handler skipped them), and their dead
/// letters the dedup key of earlier ones (the dead-letter stream dropped them within its
/// duplicate window). The time is the subject's own token, not async-nats' parsed date,
/// whose type (and text) depends on the build's features.
fn position(message: &Message) -> Option<String> {
    position_in(message.reply.as_ref()?.as_str())
}

/// [`position`] from a `$JS.ACK` reply subject: its stream-sequence and publish-time tokens,
/// the 4th and 6th after the prefix in the original 7-token form, the 6th and 8th in the form
/// with the domain and account hash (ADR-15).
fn position_in(reply: &str) -> Option<String> {
    let tokens: Vec<&str> = reply.strip_prefix("$JS.ACK.")?.split('.').collect();
    let (sequence, published) = match tokens.len() {
        7 => (tokens[3], tokens[5]),
        n if n >= 9 => (tokens[5], tokens[7]),
        _ => return None,
    };
    let number = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    (number(sequence) && number(published)).then(|| format!("{sequence}@{published}"))
}

/// The message id: the [`MESSAGE_ID`] header (a replayed dead letter keeps its id there),
/// else `Nats-Msg-Id`, else `<stream>:<position>` ([`position`]), else (no readable
/// position) a digest of the stream and the bytes.
fn message_id(message: &Message, stream: &str, position: Option<&str>) -> String {
    let headers = message.headers.as_ref();
    header(headers, MESSAGE_ID)
        .or_else(|| header(headers, NATS_MSG_ID))
        .unwrap_or_else(|| match position {
            Some(position) => format!("{stream}:{position}"),
            None => digest_id(stream, &message.payload),
        })
}

/// One pull of up to `max` messages, waiting up to [`IDLE_WAIT`] for them; the pull is
/// over (nothing more will arrive for it) when this returns.
async fn pull_batch(
    consumer: &PullConsumer,
    max: usize,
    tenant: &str,
) -> Result<Vec<Message>, BrokerError> {
    let mut messages = consumer
        .batch()
        .max_messages(max)
        .expires(IDLE_WAIT)
        .messages()
        .await
        .map_err(|e| nats("pulling a batch", Some(tenant))(e.into()))?;
    let mut batch = Vec::with_capacity(max);
    while let Some(message) = messages.next().await {
        match message {
            Ok(message) => batch.push(message),
            // Nothing arrived (the consumer was deleted, the server refused the pull):
            // an error, so that the caller backs off instead of pulling in a loop.
            Err(error) if batch.is_empty() => {
                return Err(nats("pulling a batch", Some(tenant))(error));
            }
            Err(error) => {
                // Settle what arrived; the rest of the pull is over.
                tracing::warn!(tenant, %error, "pull ended early");
                break;
            }
        }
    }
    Ok(batch)
}

/// Acknowledges (or naks) every message of a batch. The last ack waits for the server's
/// confirmation, which the acks sent before it on the same connection precede. The earlier
/// ones are not confirmed themselves: one lost to a reconnect in between brings its message
/// back after `ack_wait`, which the handler's idempotence absorbs, as it does a lost nak.
async fn settle<'a>(
    batch: impl IntoIterator<Item = &'a Message>,
    kind: AckKind,
    tenant: &str,
) -> Result<(), BrokerError> {
    let batch: Vec<&Message> = batch.into_iter().collect();
    let Some((last, rest)) = batch.split_last() else {
        return Ok(());
    };
    for message in rest {
        message
            .ack_with(kind)
            .await
            .map_err(|e| nats("acknowledging a message", Some(tenant))(e))?;
    }
    let last = match kind {
        AckKind::Ack => last.double_ack().await,
        kind => last.ack_with(kind).await,
    };
    last.map_err(|e| nats("acknowledging a batch", Some(tenant))(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_subject_tokens_are_refused() {
        assert!(Topology::new("jobs").is_ok());
        for bad in ["", "a.b", "a*", "a>", "a b", "a/b"] {
            let error = Topology::new(bad).err().map(|e| e.to_string());
            assert!(
                error.is_some_and(|e| e.contains("cannot be used as")),
                "{bad}"
            );
        }
        let topology = Topology::new("jobs").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(topology.subject("t1"), "jobs.t1");
        assert_eq!(topology.dead_letter_subject("t1"), "jobs.dead-letter.t1");
        assert_eq!(topology.dead_letter_stream(), "jobs_dead_letter");
    }

    #[test]
    fn the_position_is_read_from_both_forms_of_the_ack_subject() {
        // stream, consumer, delivered, stream seq, consumer seq, time, pending
        assert_eq!(
            position_in("$JS.ACK.jobs.t1.1.42.7.1764684000123456789.0").as_deref(),
            Some("42@1764684000123456789")
        );
        // domain, account hash, then the same, then a random token
        assert_eq!(
            position_in("$JS.ACK._.ACCHASH.jobs.t1.1.42.7.1764684000123456789.0.r4nd").as_deref(),
            Some("42@1764684000123456789")
        );
        assert_eq!(position_in("$JS.ACK.jobs.t1.1.42"), None);
        assert_eq!(
            position_in("$JS.ACK.jobs.t1.1.x.7.1764684000123456789.0"),
            None
        );
        assert_eq!(position_in("_INBOX.abc"), None);
    }
}
