//! JetStream dead letters: the [`QuarantineSink`] that publishes them under publish
//! acknowledgements, reading them back (one per message id) and replaying them.

use std::collections::{BTreeMap, HashSet};

use async_nats::HeaderMap;
use async_nats::jetstream::Context;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::RawMessageErrorKind;
use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;

use super::{NATS_MSG_ID, Topology, header, nats, texts};
use crate::broker::{
    BrokerError, BrokerReplay, DeadLetter, MESSAGE_ID, REASON, TENANT, dead_letter_headers, is_ours,
};
use crate::payload::PayloadContract;
use crate::quarantine::{QuarantineRecord, QuarantineSink, SinkError};

/// Publishes rejected messages to the tenant's dead-letter subject
/// ([`Topology::dead_letter_subject`]) with the headers of [`crate::broker`], and returns
/// once the dead-letter stream acknowledged every one. A record carrying a `Nats-Msg-Id`
/// header (the consumer sets one per delivery) published twice within the stream's
/// duplicate window is stored once.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    jetstream: Context,
    topology: Topology,
}

impl DeadLetters {
    /// A sink publishing through `jetstream`.
    #[must_use]
    pub fn new(jetstream: &Context, topology: Topology) -> Self {
        Self {
            jetstream: jetstream.clone(),
            topology,
        }
    }
}

/// A header value on one line (a NATS header cannot hold a line break).
fn one_line(value: &str) -> String {
    value.replace(['\r', '\n'], " ")
}

/// The bytes a header line takes in a NATS message (`name: value\r\n`), and the fixed
/// part of a header block (`NATS/1.0\r\n` … `\r\n`).
const HEADER_LINE_OVERHEAD: usize = 4;
const HEADER_BLOCK_OVERHEAD: usize = 12;

/// The headers of a dead-lettered record, each on one line, within `room` bytes: a
/// message's payload and headers together may not exceed the server's `max_payload` (the
/// client refuses the publish, and the tenant's batch would come back for ever). When they
/// do not fit, the message's own headers are left out; then all but the ones a dead letter
/// cannot do without (its reason, tenant and id, and the `Nats-Msg-Id` that keeps a second
/// copy out of the dead-letter stream); `None` when even those do not fit.
fn headers(record: &QuarantineRecord, room: usize) -> Option<HeaderMap> {
    let size = |lines: &[(&str, std::borrow::Cow<'_, str>)]| -> usize {
        HEADER_BLOCK_OVERHEAD
            + lines
                .iter()
                .map(|(n, v)| n.len() + v.len() + HEADER_LINE_OVERHEAD)
                .sum::<usize>()
    };
    let essential = [NATS_MSG_ID, REASON, TENANT, MESSAGE_ID];
    let all = dead_letter_headers(record);
    let levels: [&dyn Fn(&str) -> bool; 3] = [&|_| true, &|name| is_ours(name), &|name| {
        essential.contains(&name)
    }];
    let lines = levels.iter().find_map(|keep| {
        let lines: Vec<_> = all.iter().filter(|(name, _)| keep(name)).cloned().collect();
        (size(&lines) <= room).then_some(lines)
    })?;
    let mut map = HeaderMap::new();
    for (name, value) in lines {
        map.insert(name, one_line(&value).as_str());
    }
    Some(map)
}

impl QuarantineSink for DeadLetters {
    fn put<'a>(&'a self, records: &'a [QuarantineRecord]) -> BoxFuture<'a, Result<u64, SinkError>> {
        Box::pin(async move {
            let fail =
                |e: Box<dyn std::error::Error + Send + Sync>| SinkError::write(self, records, e);
            let mut acks = Vec::with_capacity(records.len());
            let max_payload = self.jetstream.client().max_payload();
            for record in records {
                let subject = self.topology.dead_letter_subject(&record.tenant);
                let room = max_payload.saturating_sub(record.raw.len());
                let Some(headers) = headers(record, room) else {
                    return Err(fail(
                        format!(
                            "message {} of {} bytes leaves no room under the server's max_payload \
                             ({max_payload} bytes) for its dead-letter headers: raise the server's \
                             max_payload",
                            record.message_id,
                            record.raw.len()
                        )
                        .into(),
                    ));
                };
                let ack = self
                    .jetstream
                    .publish_with_headers(subject, headers, record.raw.clone().into())
                    .await
                    .map_err(|e| fail(e.into()))?;
                acks.push(ack);
            }
            let mut stored = 0;
            for ack in acks {
                if !ack.await.map_err(|e| fail(e.into()))?.duplicate {
                    stored += 1;
                }
            }
            for record in records {
                crate::guard::metrics::record_messages(&record.source, "quarantined", 1);
            }
            Ok(stored)
        })
    }

    fn describe(&self) -> String {
        format!("JetStream stream `{}`", self.topology.dead_letter_stream())
    }
}

/// Reads a stored message's dead-letter headers.
fn dead_letter(message: &StreamMessage) -> DeadLetter {
    DeadLetter::from_headers(
        |name| header(Some(&message.headers), name),
        message.payload.to_vec(),
    )
}

/// Every stored message of `tenant`'s dead-letter subject, oldest first.
async fn read_all(
    jetstream: &Context,
    topology: &Topology,
    tenant: &str,
) -> Result<Vec<StreamMessage>, BrokerError> {
    let name = topology.dead_letter_stream();
    let stream = jetstream
        .get_stream_no_info(&name)
        .await
        .map_err(|e| nats(format!("reading stream {name}"), Some(tenant))(e.into()))?;
    let subject = topology.dead_letter_subject(tenant);
    let mut messages = Vec::new();
    let mut from = 1;
    loop {
        let got = stream
            .raw_message_builder()
            .sequence(from)
            .next_by_subject(subject.clone())
            .send()
            .await;
        match got {
            Ok(message) => {
                from = message.sequence + 1;
                messages.push(message);
            }
            Err(error) if error.kind() == RawMessageErrorKind::NoMessageFound => {
                return Ok(messages);
            }
            Err(error) => {
                return Err(nats(format!("reading {subject}"), Some(tenant))(
                    error.into(),
                ));
            }
        }
    }
}

/// Every dead letter of `tenant`, left in place. Copies sharing a [`MESSAGE_ID`](crate::broker::MESSAGE_ID) are one
/// message: the second element counts the extra copies.
///
/// # Errors
///
/// [`BrokerError::Broker`] when the dead-letter stream cannot be read.
pub async fn dead_letters(
    jetstream: &Context,
    topology: &Topology,
    tenant: &str,
) -> Result<(Vec<DeadLetter>, u64), BrokerError> {
    let mut seen = HashSet::new();
    let mut letters = Vec::new();
    let mut duplicates = 0;
    for message in read_all(jetstream, topology, tenant).await? {
        let letter = dead_letter(&message);
        if seen.insert(letter.message_id.clone()) {
            letters.push(letter);
        } else {
            duplicates += 1;
        }
    }
    Ok((letters, duplicates))
}

/// Replays `tenant`'s dead letters that `contract` now accepts: each is re-published to
/// the tenant's subject (same [`MESSAGE_ID`](crate::broker::MESSAGE_ID), so the handler's idempotence still holds)
/// and, only once the work stream acknowledged it, removed (with any extra copy of the
/// same id) from the dead-letter stream. The rest stays there, with the reason now. The
/// re-publish carries a `Nats-Msg-Id` derived from the dead letter's sequence, so a
/// replay interrupted between the two steps and run again publishes it once.
///
/// # Errors
///
/// [`BrokerError::Broker`] when a read, a publish or a delete fails: what was not
/// re-published stays in the dead-letter stream.
pub async fn replay<T: DeserializeOwned>(
    jetstream: &Context,
    topology: &Topology,
    tenant: &str,
    contract: &PayloadContract<T>,
) -> Result<BrokerReplay, BrokerError> {
    let messages = read_all(jetstream, topology, tenant).await?;
    let mut copies: BTreeMap<String, Vec<&StreamMessage>> = BTreeMap::new();
    for message in &messages {
        copies
            .entry(dead_letter(message).message_id)
            .or_default()
            .push(message);
    }
    let name = topology.dead_letter_stream();
    let stream = jetstream
        .get_stream_no_info(&name)
        .await
        .map_err(|e| nats(format!("reading stream {name}"), Some(tenant))(e.into()))?;
    let subject = topology.subject(tenant);
    let mut report = BrokerReplay::default();
    for (id, group) in copies {
        let first = group[0];
        if let Err(rejection) = contract.check(&first.payload) {
            report.still_rejected.push((id, rejection));
            continue;
        }
        let mut headers = HeaderMap::new();
        for (name, value) in texts(Some(&first.headers)) {
            headers.insert(name.as_str(), value.as_str());
        }
        headers.insert(
            NATS_MSG_ID,
            format!("replay:{name}:{}", first.sequence).as_str(),
        );
        let republish = |e: Box<dyn std::error::Error + Send + Sync>| {
            nats(format!("re-publishing to {subject}"), Some(tenant))(e)
        };
        jetstream
            .publish_with_headers(subject.clone(), headers, first.payload.clone())
            .await
            .map_err(|e| republish(e.into()))?
            .await
            .map_err(|e| republish(e.into()))?;
        for copy in &group {
            stream
                .delete_message(copy.sequence)
                .await
                .map_err(|e| nats("removing a replayed dead letter", Some(tenant))(e.into()))?;
        }
        report.replayed += 1;
        report.duplicates_removed += group.len() as u64 - 1;
    }
    Ok(report)
}
