//! The NATS broker's history in JetStream (see `broker/jetstream.rs` for the
//! stream itself): publishing into it and waiting for the stored offset,
//! each room's gate, reading stored messages back, and keeping the stream
//! set up and its state read for the gauges.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::connection::State;
use sha2::{Digest as _, Sha256};
use tokio::sync::OnceCell;

use super::super::BrokerError;
use super::super::inbound::Gate;
use super::super::jetstream::{Read, StreamHistory, history_subject};
use super::{MSG_ID, NatsBroker, WSGATE_MSG_ID, error_type};
use crate::history::{Appended, HistoryLimits};
use crate::message::Envelope;
use wsgate_protocol::room::RoomKey;

impl NatsBroker {
    /// Whether this node keeps history in JetStream.
    pub(crate) fn has_history(&self) -> bool {
        self.history.is_some()
    }

    /// The history stream, once set up.
    pub(crate) fn stream(&self) -> Result<&StreamHistory, BrokerError> {
        self.history
            .as_ref()
            .and_then(|cell| cell.get())
            .ok_or_else(|| {
                BrokerError::Unavailable("the JetStream history stream is not set up yet".into())
            })
    }

    /// `--history-size` (0 without history).
    pub(crate) fn history_size(&self) -> usize {
        self.history_limits.map_or(0, |l| l.size)
    }

    /// Publishes an envelope into the history stream and waits for it to be
    /// stored: its offset is the stream sequence. With a publisher's
    /// idempotency key, JetStream's duplicate window finds a retry; the
    /// stored original is then read back to tell a retry from a conflict.
    pub(crate) async fn publish_stored(
        &self,
        envelope: &Envelope,
        dedupe: Option<&str>,
    ) -> Result<Appended, BrokerError> {
        let started = Instant::now();
        let result = self.try_publish_stored(envelope, dedupe).await;
        self.metrics
            .published(started.elapsed(), result.as_ref().err().map(error_type));
        result
    }

    async fn try_publish_stored(
        &self,
        envelope: &Envelope,
        dedupe: Option<&str>,
    ) -> Result<Appended, BrokerError> {
        self.available().await?;
        let stream = self.stream()?;
        let subject = history_subject(&self.prefix, &envelope.room);
        let mut headers = self.headers(envelope);
        headers.insert(WSGATE_MSG_ID, &*envelope.id);
        if let Some(key) = dedupe {
            // Unique per room and publisher scope, and header-safe.
            let digest = Sha256::new()
                .chain_update(subject.as_bytes())
                .chain_update([0])
                .chain_update(key.as_bytes())
                .finalize();
            headers.insert(MSG_ID, format!("{digest:x}"));
        }
        let payload = bytes::Bytes::copy_from_slice(envelope.data.get().as_bytes());
        let unavailable = |e: &dyn std::fmt::Display| {
            BrokerError::Unavailable(format!("storing in JetStream: {e}"))
        };
        let ack = stream
            .context()
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(|e| unavailable(&e))?
            .await
            .map_err(|e| unavailable(&e))?;
        let offset = ack.sequence;
        if !ack.duplicate {
            return Ok(Appended::Stored { offset });
        }
        Ok(match stream.get(offset).await? {
            Some(original) if original.payload.as_ref() == envelope.data.get().as_bytes() => {
                let id = original
                    .headers
                    .get(WSGATE_MSG_ID)
                    .map_or_else(|| envelope.id.clone(), |v| v.as_str().into());
                Appended::Duplicate { offset, id }
            }
            Some(_) => Appended::Conflict { offset },
            // Trimmed by the room's size limit while its id is still in the
            // duplicate window (the TTL): the retry is acknowledged as the
            // message JetStream stored, which it can no longer compare.
            None => Appended::Duplicate {
                offset,
                id: envelope.id.clone(),
            },
        })
    }

    /// Subscribes to `room`; with history, also the room's gate, starting at
    /// the newest stored offset read *after* the subscription was confirmed:
    /// everything stored later arrives through the subscription, everything
    /// up to it was published before this node listened.
    pub(super) async fn listen_to(
        &self,
        room: &RoomKey,
    ) -> Result<(async_nats::Subscriber, Option<Gate>), BrokerError> {
        let subscriber = self.subscribe(room).await?;
        if !self.has_history() {
            return Ok((subscriber, None));
        }
        let latest = self.stream()?.latest(&self.prefix, room).await?;
        Ok((subscriber, Some(Arc::new(tokio::sync::Mutex::new(latest)))))
    }

    /// The gate of a room this node listens to (after `acquire`), with history.
    pub(crate) async fn gate(&self, room: &RoomKey) -> Option<Gate> {
        let claim = self.rooms.claim(room);
        let interest = claim.lock().await;
        interest.gate.clone()
    }

    /// Up to `max` stored messages of `room` after `after` and up to
    /// `through`, oldest first, with their offsets: one direct get each.
    pub(crate) async fn read_stored(
        &self,
        room: &RoomKey,
        after: u64,
        through: u64,
        max: usize,
    ) -> Result<Vec<(u64, Envelope)>, BrokerError> {
        let read = Read {
            max,
            max_message_bytes: self.inbound.max_message_bytes,
        };
        // What is skipped was counted when the live path dropped it: a
        // replay reading it again is not another message from NATS.
        let (messages, _) = self
            .stream()?
            .read_stored(&self.prefix, room, (after, through), read, |_| {})
            .await?;
        Ok(messages)
    }
}

/// Finds or makes the history stream as soon as NATS is reachable (retrying
/// every 2 s, a failure logged every 30 s), then reads its state every 5 s for
/// the history gauges.
pub(super) async fn keep_stream(
    client: async_nats::Client,
    prefix: String,
    limits: HistoryLimits,
    cell: Arc<OnceCell<StreamHistory>>,
    state: Arc<[AtomicU64; 2]>,
) {
    let mut last_logged: Option<Instant> = None;
    let stream = loop {
        if client.connection_state() == State::Connected {
            match StreamHistory::setup(&client, &prefix, limits).await {
                Ok(stream) => break stream,
                Err(e) => {
                    if last_logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(30)) {
                        tracing::error!(error = %e, "history in JetStream is not available; retrying");
                        last_logged = Some(Instant::now());
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let stream = cell.get_or_init(|| async { stream }).await;
    loop {
        if let Ok((messages, bytes)) = stream.state().await {
            state[0].store(messages, Ordering::Relaxed);
            state[1].store(bytes, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}
