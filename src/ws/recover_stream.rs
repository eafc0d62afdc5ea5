//! Subscribing to a room whose history is in JetStream (`--nats-url` with
//! `--history-size`): the same answers as `recover.rs` gives on one node, with
//! the room's *gate* in place of its history lock.
//!
//! The gate holds the offset this node has delivered the room through; the
//! room's listener holds it while it fans a message out. A resuming
//! subscriber replays what it missed up to the gate's offset (read back from
//! the stream, paced by its send queue, without the gate), then takes the
//! gate and reads what was delivered meanwhile: if that is all of it and it
//! fits in the send queue now, it is queued in one piece and the subscriber
//! joins the hub's room under the gate, so every offset reaches it once, in
//! order. Otherwise the gate is let go, that part is replayed paced, and the
//! step repeats. The gate is held across one chunk's network reads, never
//! while waiting for the client to read: one slow client cannot hold up its
//! room's delivery to everyone else on the node.
//!
//! Each chunk is checked after it is read: if the messages after the
//! replay's position are no longer all stored (the stream trimmed them while
//! the client read slowly), a second `subscribed` with `recovered: false`
//! says so and live messages follow, as on one node.

use super::recover::{CHUNK, FRAME_OVERHEAD, Joined, Outcome, history_reply};
use super::session::Session;
use crate::broker::{BrokerError, Gate, NatsBroker};
use crate::message::Envelope;
use crate::outbox::{Outbound, Pushed};
use crate::telemetry::ReplaySpan;
use wsgate_protocol::room::{RoomKey, RoomName};
use wsgate_protocol::{ErrorCode, Since};

/// How long a resume waits for this node to deliver up to the client's
/// offset (it may come from a node that is a little ahead).
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(1);

impl Session {
    /// Subscribes to `room` (already acquired from the broker), with the
    /// stream's position, and with `since` the messages the client missed.
    pub(super) async fn join_with_stream(
        &mut self,
        nats: &NatsBroker,
        key: &RoomKey,
        room: &RoomName,
        since: Option<Since<'_>>,
    ) -> Joined {
        let available = (nats.stream(), nats.gate(key).await);
        let Some(since) = since else {
            let (Ok(stream), Some(gate)) = available else {
                self.refuse_unavailable();
                return Joined::Answered;
            };
            let through = gate.lock().await;
            let subscribed = self.subscribed_at(room, *through, stream.epoch(), None);
            return self.join_now(key, vec![subscribed]);
        };
        let system = self.state.broker().system();
        let replay = self.state.tracer().replay(system, key, since.offset);
        let mut outcome = Outcome {
            recovered: false,
            replayed: 0,
        };
        let (Ok(_), Some(gate)) = available else {
            // Counted as not recovered: an outage shows in the recovery alert.
            self.refuse_unavailable();
            self.finish_replay(replay, &outcome);
            return Joined::Answered;
        };
        let joined = match self
            .resume_stream(nats, &gate, key, room, &since, &replay, &mut outcome)
            .await
        {
            Ok(joined) => joined,
            Err(e) => {
                if outcome.recovered {
                    // `subscribed` went out, and perhaps part of the replay:
                    // the client hears that the subscription did not happen.
                    outcome.recovered = false;
                    self.end_replay_refused(room, ErrorCode::BrokerUnavailable, &e.to_string());
                } else {
                    self.refuse(ErrorCode::BrokerUnavailable, &e.to_string(), None);
                }
                Joined::Answered
            }
        };
        self.finish_replay(replay, &outcome);
        joined
    }

    fn refuse_unavailable(&mut self) {
        let message = "the history stream is not available";
        self.refuse(ErrorCode::BrokerUnavailable, message, None);
    }

    #[allow(clippy::too_many_arguments)]
    async fn resume_stream(
        &mut self,
        nats: &NatsBroker,
        gate: &Gate,
        key: &RoomKey,
        room: &RoomName,
        since: &Since<'_>,
        replay: &ReplaySpan,
        outcome: &mut Outcome,
    ) -> Result<Joined, BrokerError> {
        let stream = nats.stream()?;
        let epoch = stream.epoch();
        // The client may have seen, on another node, messages this node has
        // not delivered yet: wait a little for them.
        let deadline = tokio::time::Instant::now() + CATCH_UP;
        let mut through = *gate.lock().await;
        while since.offset > through && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            through = *gate.lock().await;
        }
        let recovered = *since.epoch == *epoch
            && stream
                .continuous_after(nats.prefix(), key, since.offset, through)
                .await?;
        if !recovered {
            let through = gate.lock().await;
            let subscribed = self.subscribed_at(room, *through, epoch, Some(false));
            return Ok(self.join_now(key, vec![subscribed]));
        }
        outcome.recovered = true;
        let subscribed = self.subscribed_at(room, through, epoch, Some(true));
        if self.outbox.push_when_room(subscribed).await != Pushed::Queued {
            return Ok(Joined::Answered);
        }
        let mut cursor = since.offset;
        loop {
            // What this node had delivered by `through`, paced, without the
            // gate. A chunk is whole if what follows `cursor` is still stored
            // after it was read (trims only ever take messages away).
            while cursor < through {
                let chunk = nats.read_stored(key, cursor, through, CHUNK).await?;
                if !stream
                    .continuous_after(nats.prefix(), key, cursor, through)
                    .await?
                {
                    let guard = gate.lock().await;
                    return Ok(self.trimmed_meanwhile(key, room, *guard, epoch, outcome));
                }
                let Some(&(last, _)) = chunk.last() else {
                    // Only messages the room's listener drops too.
                    break;
                };
                if !self.replay_paced(replay, key, &chunk, outcome).await {
                    return Ok(Joined::Answered);
                }
                cursor = last;
            }
            // Under the gate, so nothing is delivered meanwhile: what came
            // since, queued whole with the join if it fits now; otherwise
            // replayed paced without the gate, and round again. The gate is
            // held across one chunk's reads, never while the client reads.
            let guard = gate.lock().await;
            let delivered = *guard;
            let rest = nats.read_stored(key, cursor, delivered, CHUNK).await?;
            if !stream
                .continuous_after(nats.prefix(), key, cursor, delivered)
                .await?
            {
                return Ok(self.trimmed_meanwhile(key, room, delivered, epoch, outcome));
            }
            let complete = rest.len() < CHUNK || rest.last().is_some_and(|m| m.0 == delivered);
            let data = rest.iter().map(|(_, e)| e.data.get().len() + e.id.len());
            let mut frames = Vec::new();
            // Nothing left goes straight to `push_all`, which takes an empty
            // list whenever the connection is open.
            if complete && (rest.is_empty() || self.fits(rest.len(), data.sum(), rest.len())) {
                frames = self.replayed_frames(replay, key, &rest);
                match self.outbox.push_all(frames) {
                    Ok(()) => {
                        outcome.replayed += rest.len();
                        return Ok(self.join_after_replay(key, room, outcome));
                    }
                    // Only a closing connection refuses nothing at all.
                    Err(back) if back.is_empty() => return Ok(Joined::Answered),
                    // Another room's messages took the space first.
                    Err(back) => frames = back,
                }
            }
            drop(guard);
            if frames.is_empty() {
                frames = self.replayed_frames(replay, key, &rest);
            }
            for frame in frames {
                if self.outbox.push_when_room(frame).await != Pushed::Queued {
                    return Ok(Joined::Answered);
                }
                outcome.replayed += 1;
            }
            cursor = rest.last().map_or(cursor, |m| m.0);
            through = delivered;
        }
    }

    /// Messages after the client's `since` were trimmed before it could be
    /// given them: a second `subscribed` says so, and live messages follow.
    fn trimmed_meanwhile(
        &mut self,
        key: &RoomKey,
        room: &RoomName,
        delivered: u64,
        epoch: &str,
        outcome: &mut Outcome,
    ) -> Joined {
        outcome.recovered = false;
        let subscribed = self.subscribed_at(room, delivered, epoch, Some(false));
        self.join_late(key, room, vec![subscribed])
    }

    fn replayed_frames(
        &self,
        replay: &ReplaySpan,
        key: &RoomKey,
        messages: &[(u64, Envelope)],
    ) -> Vec<Outbound> {
        messages
            .iter()
            .map(|(offset, e)| self.replay_frame(replay, key, e, *offset))
            .collect()
    }

    /// Queues `messages` as replayed frames, each once the send queue has
    /// room for it, counting them; false if the connection is closing.
    async fn replay_paced(
        &self,
        replay: &ReplaySpan,
        key: &RoomKey,
        messages: &[(u64, Envelope)],
        outcome: &mut Outcome,
    ) -> bool {
        for (offset, envelope) in messages {
            let frame = self.replay_frame(replay, key, envelope, *offset);
            if self.outbox.push_when_room(frame).await != Pushed::Queued {
                return false;
            }
            outcome.replayed += 1;
        }
        true
    }

    /// A room's position (offset, epoch) for a connection already in it:
    /// from the node's history, or the stream's as delivered here.
    pub(super) async fn position_of(&self, key: &RoomKey) -> Option<(u64, String)> {
        if let Some(history) = self.state.history() {
            return Some(history.with_room(key, |log| (log.latest(), log.epoch().to_string())));
        }
        let nats = self.state.broker().stream_history()?;
        let epoch = nats.stream().ok()?.epoch().to_owned();
        let gate = nats.gate(key).await?;
        let through = *gate.lock().await;
        Some((through, epoch))
    }

    /// Answers a `history` request from the stream: as `read_history` does
    /// on one node (the newest `limit`, or those after `since`), at most one
    /// send queue's bytes. Reads one message per round trip, all of the
    /// room's stored messages for the newest ones (`--history-size` at most),
    /// holding no more than the answer's bytes meanwhile.
    pub(super) async fn read_stream_history(
        &mut self,
        nats: &NatsBroker,
        room: &RoomName,
        limit: Option<u32>,
        since: Option<Since<'_>>,
    ) -> Result<(), BrokerError> {
        let key = self.key(room.clone());
        let stream = nats.stream()?;
        let epoch = stream.epoch().to_owned();
        let latest = stream.latest(nats.prefix(), &key).await?;
        let size = nats.history_size();
        let max = limit.map_or(size, |l| (l as usize).min(size));
        let budget = self.state.limits().queue.bytes;
        let after = match &since {
            Some(s) if *s.epoch == *epoch => s.offset,
            _ => 0,
        };
        let window = Window {
            max,
            budget,
            newest: since.is_none(),
        };
        let stored = read_window(nats, &key, after, latest, window).await?;
        let messages = stored.iter().map(|(offset, e)| (*offset, e)).collect();
        let frame = history_reply(room, (latest, &epoch), messages, budget, since.is_none());
        let pushed = self.outbox.push_when_room(frame).await;
        self.account(pushed);
        Ok(())
    }
}

/// Which stored messages a `history` request keeps: at most `max`, and
/// about `budget` bytes of frames; the oldest after its position, or the
/// newest.
#[derive(Clone, Copy)]
struct Window {
    max: usize,
    budget: usize,
    newest: bool,
}

/// Reads `key`'s stored messages after `after` up to `latest`, a chunk at a
/// time, keeping only what `window` lets through: memory for the answer,
/// never for the whole room.
async fn read_window(
    nats: &NatsBroker,
    key: &RoomKey,
    after: u64,
    latest: u64,
    window: Window,
) -> Result<Vec<(u64, Envelope)>, BrokerError> {
    let size = |e: &Envelope| e.data.get().len() + e.id.len() + FRAME_OVERHEAD;
    let mut kept = std::collections::VecDeque::new();
    let mut bytes = 0;
    let mut cursor = after;
    while cursor < latest {
        let chunk = nats.read_stored(key, cursor, latest, CHUNK).await?;
        let Some(&(last, _)) = chunk.last() else {
            break;
        };
        cursor = last;
        for (offset, envelope) in chunk {
            if !window.newest && (kept.len() == window.max || bytes > window.budget) {
                return Ok(kept.into());
            }
            bytes += size(&envelope);
            kept.push_back((offset, envelope));
            while window.newest && (kept.len() > window.max || bytes > window.budget) {
                let Some((_, old)) = kept.pop_front() else {
                    break;
                };
                bytes -= size(&old);
            }
        }
    }
    Ok(kept.into())
}
