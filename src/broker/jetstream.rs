//! History in NATS JetStream, shared by every node: one stream over the rooms'
//! history subjects, whose limits come from the history flags.
//!
//! - **Subjects.** A room with history is published to
//!   `<prefix>.<tenant>.hist.<room>` (the stream's subjects,
//!   `<prefix>.*.hist.*`). The stream stores it and *republishes* it to the
//!   room's usual subject, `<prefix>.<tenant>.room.<room>`, with the
//!   `Nats-Sequence` header: every node's room subscription receives each
//!   stored message once, in stream order, carrying its offset.
//! - **Offsets** are stream sequence numbers: strictly increasing per room,
//!   not contiguous (the stream interleaves rooms), the same on every node.
//! - **The epoch** is the stream's creation time: the same on every node, new
//!   when the stream is deleted and made again.
//! - **Limits**: `max_msgs_per_subject` = `--history-size`, `max_age` =
//!   `--history-ttl`, `max_bytes` = `--history-max-bytes`, oldest discarded;
//!   the duplicate window (`Nats-Msg-Id`) is the TTL, for idempotent ids.
//!
//! Reading back costs one direct get per message (2.9 has no batched get),
//! served by any replica (`allow_direct`).

use async_nats::jetstream::{self, stream};
use futures_util::StreamExt as _;

use super::BrokerError;
use super::inbound;
use crate::history::HistoryLimits;
use crate::labels::ConsumeError;
use crate::message::Envelope;
use wsgate_protocol::room::RoomKey;

/// The stream, once made or found.
pub(crate) struct StreamHistory {
    stream: stream::Stream,
    js: jetstream::Context,
    limits: HistoryLimits,
    /// The stream's creation time, in nanoseconds since the epoch, as hex.
    epoch: String,
}

/// A stored message as a direct get returns it.
pub(crate) type Stored = async_nats::jetstream::message::StreamMessage;

/// The stream's name for `prefix`: stream names allow no `.`.
pub(crate) fn stream_name(prefix: &str) -> String {
    format!("{}_history", prefix.replace('.', "_"))
}

/// A room's history subject: `<prefix>.<tenant>.hist.<room>`, the room token
/// escaped as in its live subject.
pub(crate) fn history_subject(prefix: &str, key: &RoomKey) -> String {
    super::nats::subject_of(prefix, key, "hist")
}

fn config(prefix: &str, limits: &HistoryLimits) -> stream::Config {
    stream::Config {
        name: stream_name(prefix),
        subjects: vec![format!("{prefix}.*.hist.*")],
        max_messages_per_subject: i64::try_from(limits.size).unwrap_or(i64::MAX),
        max_age: limits.ttl,
        max_bytes: i64::try_from(limits.max_bytes).unwrap_or(i64::MAX),
        discard: stream::DiscardPolicy::Old,
        storage: stream::StorageType::File,
        num_replicas: 1,
        duplicate_window: limits.ttl,
        allow_direct: true,
        republish: Some(stream::Republish {
            source: format!("{prefix}.*.hist.*"),
            destination: format!("{prefix}.{{{{wildcard(1)}}}}.room.{{{{wildcard(2)}}}}"),
            headers_only: false,
        }),
        ..Default::default()
    }
}

/// The settings of `ours` that `theirs` does not share, by flag.
fn disagreements(ours: &stream::Config, theirs: &stream::Config) -> Vec<String> {
    let mut out = Vec::new();
    if ours.max_messages_per_subject != theirs.max_messages_per_subject {
        out.push(format!(
            "--history-size {} (the stream keeps {})",
            ours.max_messages_per_subject, theirs.max_messages_per_subject
        ));
    }
    if ours.max_age != theirs.max_age {
        out.push(format!(
            "--history-ttl {:?} (the stream's max age is {:?})",
            ours.max_age, theirs.max_age
        ));
    }
    if ours.max_bytes != theirs.max_bytes {
        out.push(format!(
            "--history-max-bytes {} (the stream's is {})",
            ours.max_bytes, theirs.max_bytes
        ));
    }
    if ours.subjects != theirs.subjects
        || ours.republish != theirs.republish
        || ours.duplicate_window != theirs.duplicate_window
        || ours.allow_direct != theirs.allow_direct
    {
        out.push("subjects, republish, duplicate window or direct get".to_owned());
    }
    out
}

impl StreamHistory {
    /// Finds the stream, or makes it. A stream made with other history flags
    /// is updated to this node's, with a warning naming each difference:
    /// nodes sharing a stream should run with the same flags.
    pub(crate) async fn setup(
        client: &async_nats::Client,
        prefix: &str,
        limits: HistoryLimits,
    ) -> Result<Self, BrokerError> {
        let js = jetstream::new(client.clone());
        let ours = config(prefix, &limits);
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            BrokerError::Unavailable(format!("JetStream stream {}: {what}: {e}", ours.name))
        };
        let mut stream = match js.get_stream(&ours.name).await {
            Ok(mut stream) => {
                let theirs = stream
                    .info()
                    .await
                    .map_err(|e| fail("reading", &e))?
                    .config
                    .clone();
                let differ = disagreements(&ours, &theirs);
                if !differ.is_empty() {
                    tracing::warn!(
                        stream = %ours.name,
                        differences = %differ.join("; "),
                        "this node's history flags differ from the JetStream stream's; \
                         updating the stream to this node's (run every node with the same flags)"
                    );
                    js.update_stream(&ours)
                        .await
                        .map_err(|e| fail("updating", &e))?;
                }
                js.get_stream(&ours.name)
                    .await
                    .map_err(|e| fail("reading", &e))?
            }
            Err(_) => js.create_stream(ours.clone()).await.map_err(|e| {
                fail(
                    "creating (is JetStream enabled on the server? `nats-server -js`)",
                    &e,
                )
            })?,
        };
        let info = stream.info().await.map_err(|e| fail("reading", &e))?;
        let created = info.created.unix_timestamp_nanos();
        tracing::info!(stream = %ours.name, "history in JetStream");
        Ok(Self {
            stream,
            js,
            limits,
            epoch: format!("{created:x}"),
        })
    }

    /// The stream's messages and bytes, all rooms.
    pub(crate) async fn state(&self) -> Result<(u64, u64), BrokerError> {
        let mut stream = self.stream.clone();
        let info = stream
            .info()
            .await
            .map_err(|e| BrokerError::Unavailable(format!("reading the stream: {e}")))?;
        Ok((info.state.messages, info.state.bytes))
    }

    pub(crate) fn epoch(&self) -> &str {
        &self.epoch
    }

    pub(crate) fn context(&self) -> &jetstream::Context {
        &self.js
    }

    /// The message stored as `sequence`, if it still is.
    pub(crate) async fn get(&self, sequence: u64) -> Result<Option<Stored>, BrokerError> {
        match self.stream.direct_get(sequence).await {
            Ok(message) => Ok(Some(message)),
            Err(e) if matches!(e.kind(), stream::DirectGetErrorKind::NotFound) => Ok(None),
            Err(e) => Err(BrokerError::Unavailable(format!("reading history: {e}"))),
        }
    }

    /// The first stored message of `key`'s room after `offset`.
    pub(crate) async fn next_after(
        &self,
        prefix: &str,
        key: &RoomKey,
        offset: u64,
    ) -> Result<Option<Stored>, BrokerError> {
        let subject = history_subject(prefix, key);
        match self
            .stream
            .direct_get_next_for_subject(subject, Some(offset + 1))
            .await
        {
            Ok(message) => Ok(Some(message)),
            Err(e) if matches!(e.kind(), stream::DirectGetErrorKind::NotFound) => Ok(None),
            Err(e) => Err(BrokerError::Unavailable(format!("reading history: {e}"))),
        }
    }

    /// Up to `read.max` stored messages of `room` after `after` and up to
    /// `through`, oldest first, with their offsets: one direct get each.
    /// What the live path would drop (larger than `--max-message-bytes`, or
    /// not published by a gateway) is skipped and handed to `dropped`. With
    /// the messages, the offset read up to (past any skipped).
    pub(crate) async fn read_stored(
        &self,
        prefix: &str,
        room: &RoomKey,
        (after, through): (u64, u64),
        read: Read,
        mut dropped: impl FnMut(ConsumeError),
    ) -> Result<(Vec<(u64, Envelope)>, u64), BrokerError> {
        let mut out = Vec::new();
        let mut cursor = after;
        while out.len() < read.max && cursor < through {
            let Some(stored) = self.next_after(prefix, room, cursor).await? else {
                break;
            };
            if stored.sequence > through {
                break;
            }
            cursor = stored.sequence;
            if stored.payload.len() > read.max_message_bytes {
                dropped(ConsumeError::TooLarge);
                continue;
            }
            match inbound::decode(room, &stored.payload, &stored.headers) {
                Ok(envelope) => out.push((stored.sequence, envelope)),
                Err(_) => dropped(ConsumeError::InvalidMessage),
            }
        }
        Ok((out, cursor))
    }

    /// The offset of the newest stored message of `key`'s room (0: none).
    pub(crate) async fn latest(&self, prefix: &str, key: &RoomKey) -> Result<u64, BrokerError> {
        let subject = history_subject(prefix, key);
        match self.stream.direct_get_last_for_subject(subject).await {
            Ok(message) => Ok(message.sequence),
            Err(e) if matches!(e.kind(), stream::DirectGetErrorKind::NotFound) => Ok(0),
            Err(e) => Err(BrokerError::Unavailable(format!("reading history: {e}"))),
        }
    }

    /// Whether every message of `key`'s room after `offset` (up to `through`,
    /// what this node has delivered) is still stored, for `recovered: true`.
    /// See ARCHITECTURE.md: a stream only ever takes a room's oldest messages
    /// (limits, age, a purge), so with `offset` itself still stored
    /// everything after it is; with it gone, or for `offset` 0 (a client that
    /// saw none of the room's messages), something after it may be gone:
    /// stream sequences skip the other rooms', so nothing tells whether the
    /// room's first messages were ever trimmed.
    pub(crate) async fn continuous_after(
        &self,
        prefix: &str,
        key: &RoomKey,
        offset: u64,
        through: u64,
    ) -> Result<bool, BrokerError> {
        // Offset 0 first: a node that listens anew starts its gate at the
        // room's newest stored message, 0 once all have expired, which would
        // look like a room where nothing was published.
        if offset == 0 || offset > through {
            return Ok(false);
        }
        if offset == through {
            return Ok(true);
        }
        self.stored_in_room(prefix, key, offset).await
    }

    /// Whether the message at `offset` is stored, and is `key`'s room's.
    async fn stored_in_room(
        &self,
        prefix: &str,
        key: &RoomKey,
        offset: u64,
    ) -> Result<bool, BrokerError> {
        let subject = history_subject(prefix, key);
        let stored = self.get(offset).await?;
        Ok(stored.is_some_and(|s| s.subject.as_str() == subject))
    }

    /// Whether nothing of `key`'s room after `offset` has been trimmed, for
    /// a listener that read back what NATS dropped: `offset` itself still
    /// stored, or nothing trimmed from the stream's front past it and the
    /// room below its per-room limit (a per-room trim leaves it at the
    /// limit), the lower of this node's and the stream's. Unlike
    /// `continuous_after` it does not see a purge of the room, which here
    /// only means a message an operator removed is not delivered.
    pub(crate) async fn nothing_trimmed_after(
        &self,
        prefix: &str,
        key: &RoomKey,
        offset: u64,
    ) -> Result<bool, BrokerError> {
        if offset > 0 && self.stored_in_room(prefix, key, offset).await? {
            return Ok(true);
        }
        let subject = history_subject(prefix, key);
        let unavailable =
            |e: stream::InfoError| BrokerError::Unavailable(format!("reading history: {e}"));
        let mut info = self
            .stream
            .info_with_subjects(&subject)
            .await
            .map_err(unavailable)?;
        let first = info.info.state.first_sequence;
        let stream_limit = u64::try_from(info.info.config.max_messages_per_subject)
            .ok()
            .filter(|&l| l > 0)
            .unwrap_or(u64::MAX);
        let limit = stream_limit.min(self.limits.size as u64);
        let mut count = 0;
        // The filter is the room's one subject: one entry at most.
        while let Some(entry) = info.next().await {
            let (name, n) = entry.map_err(unavailable)?;
            if name == subject {
                count = n;
            }
        }
        Ok(offset + 1 >= first && (count as u64) < limit)
    }
}

/// What a read of stored messages keeps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Read {
    /// Messages at most.
    pub(crate) max: usize,
    /// `--max-message-bytes`: larger ones are dropped, as live.
    pub(crate) max_message_bytes: usize,
}

#[cfg(test)]
mod tests {
    use super::super::nats::tests::key;
    use super::*;

    #[test]
    fn history_subjects_mirror_the_live_ones() {
        assert_eq!(
            history_subject("wsgate", &key("default", "a.b")),
            "wsgate.default.hist.a%2Eb"
        );
        assert_eq!(
            history_subject("acme.room.x", &key("t", "room")),
            "acme.room.x.t.hist.room"
        );
        assert_eq!(stream_name("acme.prod"), "acme_prod_history");
    }
}
