//! Messages arriving from NATS: checked, rebuilt into envelopes, delivered.
//!
//! Anything that can publish on a room's subject could have sent a message,
//! so nothing in it is trusted: it must be no larger than a client may send
//! (`--max-message-bytes`), its payload must be JSON and it must carry the
//! headers wsgate publishes. Whatever fails is dropped, counted in
//! `messaging.client.consumed.messages{error.type}` and logged as a
//! rate-limited warning: a flood of bad messages costs a counter add each,
//! not a log line each.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::{HeaderMap, Subscriber};
use futures_util::StreamExt as _;
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;

use tokio::sync::OnceCell;

use super::jetstream::{Read, StreamHistory};
use super::nats::{LAST_SEQUENCE, MSG_ID, PUBLISHED_AT, SEQUENCE, STREAM, WSGATE_MSG_ID};
use crate::delivery::Delivery;
use crate::message::{Envelope, PublishedAt};
use crate::telemetry::propagation::StrictTraceContext;
use crate::telemetry::{BrokerMetrics, ConsumeError, WarningKind, Warnings};
use wsgate_protocol as protocol;
use wsgate_protocol::room::RoomKey;

/// What every room's listener shares.
pub(super) struct Inbound {
    pub(crate) delivery: Arc<Delivery>,
    pub(crate) metrics: BrokerMetrics,
    pub(crate) warnings: Warnings,
    /// `--max-message-bytes`: no client could have published a larger payload.
    pub(crate) max_message_bytes: usize,
    /// With history: where to read back what NATS dropped before it
    /// reached this node.
    pub(crate) stored: Option<Stored>,
}

/// The history stream, for a room's listener.
pub(crate) struct Stored {
    /// Set once the stream is found or made.
    pub(crate) stream: Arc<OnceCell<StreamHistory>>,
    /// `--nats-subject-prefix`.
    pub(crate) prefix: String,
    /// `--history-size`: the most one read back takes.
    pub(crate) max: usize,
    /// The stream's name, which its republished copies carry (`Nats-Stream`).
    pub(crate) name: String,
}

impl Inbound {
    /// Reads one room's subscription and delivers each message locally, in
    /// order, until the subscription ends or the task is aborted.
    ///
    /// With history, `gate` holds the offset this node has delivered the
    /// room through: a message at or below it was already given to every
    /// local subscriber (by a replay, or before they joined), and a
    /// subscriber catching up holds the gate while it joins.
    pub(crate) async fn listen(
        self: Arc<Self>,
        mut subscriber: Subscriber,
        room: RoomKey,
        gate: Option<Gate>,
    ) {
        while let Some(message) = subscriber.next().await {
            match &gate {
                None => self.receive(&room, message, None),
                Some(gate) => {
                    let mut through = gate.lock().await;
                    // Only the stream's own republished copies carry
                    // positions; anything else's headers move nothing.
                    let ours = self.stored.as_ref().is_some_and(|s| {
                        header_str(&message, STREAM).is_some_and(|name| name == s.name)
                    });
                    let sequence = header_u64(&message, SEQUENCE).filter(|_| ours);
                    let missed = header_u64(&message, LAST_SEQUENCE)
                        .filter(|&last| ours && last > *through)
                        .filter(|_| sequence > Some(*through));
                    if let Some(last) = missed {
                        self.backfill(&room, &mut through, last).await;
                    }
                    self.receive(&room, message, Some((&mut through, sequence)));
                    // A message dropped as too large or invalid is passed
                    // too: the next one's `Nats-Last-Sequence` must not
                    // make it a gap to read back.
                    if let Some(sequence) = sequence {
                        *through = (*through).max(sequence);
                    }
                }
            }
        }
    }

    /// The room's messages after `through` up to `last`, stored but never
    /// received here (NATS dropped them: a full subscription buffer, a
    /// reconnect), read back from the stream a chunk at a time (at most
    /// `--history-size`, what the stream keeps of a room) and delivered in
    /// order before the message that revealed the gap:
    /// `broker_gap_backfilled`. If the read did not reach `last`, or the
    /// stream trimmed some of them first, or could not be read, the rest is
    /// lost to this node's subscribers, as without history:
    /// `broker_gap_lost`.
    async fn backfill(&self, room: &RoomKey, through: &mut u64, last: u64) {
        const CHUNK: usize = 64;
        let Some(stored) = &self.stored else {
            return;
        };
        let from = *through;
        let mut read_back = 0;
        let result: Result<bool, super::BrokerError> = async {
            let stream = stored.stream.get().ok_or_else(|| {
                super::BrokerError::Unavailable("the stream is not set up yet".into())
            })?;
            while *through < last && read_back < stored.max {
                let read = Read {
                    max: CHUNK.min(stored.max - read_back),
                    max_message_bytes: self.max_message_bytes,
                };
                let (chunk, reached) = stream
                    .read_stored(&stored.prefix, room, (*through, last), read, |e| {
                        self.metrics.consumed(Some(e));
                    })
                    .await?;
                if reached == *through {
                    break;
                }
                read_back += chunk.len();
                for (offset, envelope) in chunk {
                    self.delivery.deliver(&envelope, Some(offset));
                }
                *through = reached;
            }
            // Read, then checked: trims only take messages away, so if
            // nothing after `from` was trimmed now, the reads missed nothing.
            Ok(*through == last
                && stream
                    .nothing_trimmed_after(&stored.prefix, room, from)
                    .await?)
        }
        .await;
        let kind = match result {
            Ok(true) => WarningKind::BrokerGapBackfilled,
            Ok(false) | Err(_) => WarningKind::BrokerGapLost,
        };
        let Some(suppressed) = self.warnings.admit(kind) else {
            return;
        };
        match result {
            Ok(true) => tracing::warn!(
                %room,
                messages = read_back,
                suppressed,
                "messages NATS dropped before this node received them were read back \
                 from the history stream (see --nats-subscription-buffer)"
            ),
            Ok(false) => tracing::warn!(
                %room,
                read_back,
                suppressed,
                "messages NATS dropped were no longer all in the history stream; this \
                 node's subscribers of the room missed some (see --nats-subscription-buffer)"
            ),
            Err(error) => tracing::warn!(
                %room,
                read_back,
                %error,
                suppressed,
                "messages NATS dropped could not be read back from the history stream; \
                 this node's subscribers of the room missed them"
            ),
        }
    }

    /// Delivers one message from NATS, if it passes; with history, `gate`
    /// is the room's delivered-through offset and the message's own.
    fn receive(
        &self,
        room: &RoomKey,
        message: async_nats::Message,
        gate: Option<(&mut u64, Option<u64>)>,
    ) {
        let bytes = message.payload.len();
        if bytes > self.max_message_bytes {
            self.metrics.consumed(Some(ConsumeError::TooLarge));
            if let Some(suppressed) = self.warnings.admit(WarningKind::BrokerMessageTooLarge) {
                tracing::warn!(
                    %room,
                    bytes,
                    limit = self.max_message_bytes,
                    suppressed,
                    "dropped a message from NATS larger than --max-message-bytes"
                );
            }
            return;
        }
        let payload = message.payload;
        let headers = message.headers.unwrap_or_default();
        match decode(room, &payload, &headers) {
            Ok(envelope) => {
                let (through, offset) = gate.map_or((None, None), |(t, o)| (Some(t), o));
                match (through, offset) {
                    // Delivered already (a replay covered it), or from
                    // before this node listened: not again.
                    (Some(through), Some(offset)) if offset <= *through => {
                        self.metrics.consumed(None);
                    }
                    (Some(through), Some(offset)) => {
                        self.metrics.consumed(None);
                        *through = offset;
                        self.delivery.deliver(&envelope, Some(offset));
                    }
                    // A room with history, but not the stream's copy: it
                    // could carry no offset and no resume could replay it.
                    (Some(_), None) => {
                        self.metrics.consumed(Some(ConsumeError::InvalidMessage));
                        if let Some(suppressed) =
                            self.warnings.admit(WarningKind::BrokerMessageInvalid)
                        {
                            tracing::warn!(
                                %room,
                                suppressed,
                                "dropped a message from NATS on a room with history that the \
                                 history stream did not store (a node without --history-size?)"
                            );
                        }
                    }
                    (None, _) => {
                        self.metrics.consumed(None);
                        self.delivery.deliver(&envelope, None);
                    }
                }
            }
            Err(reason) => {
                self.metrics.consumed(Some(ConsumeError::InvalidMessage));
                if let Some(suppressed) = self.warnings.admit(WarningKind::BrokerMessageInvalid) {
                    tracing::warn!(
                        %room,
                        reason,
                        suppressed,
                        "dropped a malformed message from NATS"
                    );
                }
            }
        }
    }
}

/// A room's delivered-through offset on this node, with history in JetStream.
pub(crate) type Gate = Arc<tokio::sync::Mutex<u64>>;

/// A header of `message`.
fn header_str<'a>(message: &'a async_nats::Message, name: &str) -> Option<&'a str> {
    Some(message.headers.as_ref()?.get(name)?.as_str())
}

/// A header of `message` as a number.
fn header_u64(message: &async_nats::Message, name: &str) -> Option<u64> {
    header_str(message, name)?.parse().ok()
}

/// Rebuilds an envelope from a NATS message (live, or read back from the
/// history stream): the payload must be JSON and the message id header
/// present; a missing or invalid trace context or publication time is
/// replaced, as for a client that sent none.
pub(super) fn decode(
    room: &RoomKey,
    payload: &[u8],
    headers: &HeaderMap,
) -> Result<Envelope, &'static str> {
    let data = protocol::parse_data(payload).map_err(|_| "payload is not JSON")?;
    let id = headers
        .get(WSGATE_MSG_ID)
        .or_else(|| headers.get(MSG_ID))
        .map(|v| v.as_str().to_owned())
        .ok_or("no Nats-Msg-Id header")?;
    let cx =
        StrictTraceContext::new().extract_with_context(&Context::new(), &NatsHeadersRef(headers));
    let published_at = headers
        .get(PUBLISHED_AT)
        .and_then(|v| v.as_str().parse::<u64>().ok())
        .map(|nanos| UNIX_EPOCH + Duration::from_nanos(nanos))
        .unwrap_or_else(SystemTime::now);
    Ok(Envelope {
        id: id.into(),
        room: room.clone(),
        data,
        trace: cx.span().span_context().clone(),
        published_at: PublishedAt::Remote(published_at),
    })
}

struct NatsHeadersRef<'a>(&'a HeaderMap);

impl Extractor for NatsHeadersRef<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}
