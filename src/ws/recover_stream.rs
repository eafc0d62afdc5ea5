//! Subscribing to a room whose history is in JetStream (`--nats-url` with
//! `--history-size`): the same answers as `recover.rs` gives on one node, with
//! the room's *gate* in place of its history lock.
//!
//! The gate holds the offset this node has delivered the room through; the
//! room's listener holds it while it fans a message out. A resuming
//! subscriber replays what it missed up to the gate's offset (read back from
//! the stream, paced by its send queue, without the gate), then takes the
//! gate, replays what was delivered meanwhile and joins the hub's room under
//! it: every offset reaches it once, in order. The gate is held across the
//! network reads of that last step only.

use super::recover::{CHUNK, Joined, Outcome, history_reply};
use super::session::Session;
use crate::broker::{BrokerError, Gate, NatsBroker};
use crate::message::Envelope;
use crate::outbox::Pushed;
use crate::telemetry::ReplaySpan;
use wsgate_protocol::room::{RoomKey, RoomName};
use wsgate_protocol::{ErrorCode, Reply, Since};

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
        let (Ok(stream), Some(gate)) = (nats.stream(), nats.gate(key).await) else {
            let message = "the history stream is not available";
            self.refuse(ErrorCode::BrokerUnavailable, message, None);
            return Joined::Answered;
        };
        let epoch = stream.epoch().to_owned();
        let Some(since) = since else {
            let through = gate.lock().await;
            let subscribed = self.subscribed_at(room, *through, &epoch, None);
            return self.join_now(key, vec![subscribed]);
        };
        let system = self.state.broker().system();
        let replay = self.state.tracer().replay(system, key, since.offset);
        let mut outcome = Outcome {
            recovered: false,
            replayed: 0,
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
                    self.reply(&Reply::Unsubscribed {
                        room: room.as_str(),
                    });
                }
                self.refuse(ErrorCode::BrokerUnavailable, &e.to_string(), None);
                Joined::Answered
            }
        };
        self.finish_replay(replay, &outcome);
        joined
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
        self.push(self.subscribed_at(room, through, epoch, Some(true)));
        // What was delivered up to now, without the gate, paced.
        let mut cursor = since.offset;
        while cursor < through {
            let chunk = nats.read_stored(key, cursor, through, CHUNK).await?;
            let Some(&(last, _)) = chunk.last() else {
                break;
            };
            if !self.replay_paced(replay, key, &chunk, outcome).await {
                return Ok(Joined::Answered);
            }
            cursor = last;
        }
        // What was delivered meanwhile, under the gate, then live.
        let guard = gate.lock().await;
        let rest = nats.read_stored(key, cursor, *guard, usize::MAX).await?;
        if !self.replay_paced(replay, key, &rest, outcome).await {
            return Ok(Joined::Answered);
        }
        let joined = self.join_late(key, room, Vec::new());
        drop(guard);
        Ok(joined)
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
    /// room's stored messages for the newest ones.
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
        let stored = match &since {
            Some(s) if *s.epoch == *epoch => nats.read_stored(&key, s.offset, latest, max).await?,
            Some(_) => nats.read_stored(&key, 0, latest, max).await?,
            None => {
                let mut all = nats.read_stored(&key, 0, latest, size).await?;
                all.drain(..all.len().saturating_sub(max));
                all
            }
        };
        let messages = stored.iter().map(|(offset, e)| (*offset, e)).collect();
        let budget = self.state.limits().queue.bytes;
        let frame = history_reply(room, (latest, &epoch), messages, budget, since.is_none());
        let pushed = self.outbox.push_when_room(frame).await;
        self.account(pushed);
        Ok(())
    }
}
