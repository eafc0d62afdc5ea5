//! Subscribing to a room with history: the position in `subscribed`, resuming
//! from `since`, and `history` requests.
//!
//! A resuming subscriber is given every message after `since`, then live ones,
//! with no gap and no duplicate at the seam: it joins the hub's room under the
//! room's history lock, which every publish to the room holds while it is given
//! an offset and fanned out. A backlog that does not fit in the connection's
//! free send-queue space is replayed in chunks, each pushed only as space
//! frees up, with the lock released in between; the subscriber joins once the
//! rest fits, queued in one all-or-nothing push (`Outbox::push_all`), so
//! another room's fan-out cannot take the space between the check and the
//! queuing. So a replay never trips the slow-consumer policy. If messages
//! it had yet to replay are trimmed meanwhile (a room publishing faster than
//! the client reads), a second `subscribed` with `recovered: false` says so,
//! and live messages follow.

use std::sync::Arc;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::session::Session;
use crate::history::{Entry, History, RoomLog};
use crate::hub::Subscriber;
use crate::labels::RecoveryResult;
use crate::message::Envelope;
use crate::outbox::{Outbound, Outbox, Pushed};
use crate::telemetry::ReplaySpan;
use crate::telemetry::propagation::traceparent;
use wsgate_protocol::room::{RoomKey, RoomName};
use wsgate_protocol::{self as protocol, ErrorCode, HistoryEntry, Reply, ServerFrameType, Since};

/// Messages replayed per chunk when the backlog does not fit at once.
pub(super) const CHUNK: usize = 64;

/// Bytes a `message` frame adds to its data and id, at most: the field names,
/// the room (128 bytes at most), the offset and a traceparent.
pub(super) const FRAME_OVERHEAD: usize = 320;

/// Replayed frames not yet queued, and where the replay stands.
struct Chunk {
    epoch: Arc<str>,
    /// The offset of the last message in `frames`.
    cursor: u64,
    frames: Vec<Outbound>,
    /// How many of `frames` are messages (the first may be `subscribed`).
    messages: usize,
}

/// What a step of the replay, under the room's lock, decided.
enum Step {
    Done(Joined),
    Replay(Chunk),
}

/// What a resuming subscribe was told, and how many messages it was given.
pub(super) struct Outcome {
    pub(super) recovered: bool,
    pub(super) replayed: usize,
}

/// How a subscribe with history ended.
pub(super) enum Joined {
    Yes,
    /// The node reached `--max-rooms` first; nothing was queued.
    RoomLimit,
    /// Not joined, and the client has its answer (or is going away).
    Answered,
}

impl Session {
    /// Subscribes to `room` (already checked and acquired from the broker),
    /// answering with the room's position and, with `since`, replaying what
    /// the client missed. Counts the answer and ends the replay's span.
    pub(super) async fn join_with_history(
        &mut self,
        history: &History,
        key: &RoomKey,
        room: &RoomName,
        since: Option<Since<'_>>,
    ) -> Joined {
        let Some(since) = since else {
            return history.with_room(key, |log| {
                log.touch();
                let subscribed = self.subscribed(room, log, None);
                self.join_now(key, vec![subscribed])
            });
        };
        let system = self.state.broker().system();
        let replay = self.state.tracer().replay(system, key, since.offset);
        let mut outcome = Outcome {
            recovered: false,
            replayed: 0,
        };
        let joined = self
            .resume(history, key, room, &since, &replay, &mut outcome)
            .await;
        self.finish_replay(replay, &outcome);
        joined
    }

    /// Counts a resume's answer and ends its replay span.
    pub(super) fn finish_replay(&mut self, replay: ReplaySpan, outcome: &Outcome) {
        self.replayed = true;
        let result = if outcome.recovered {
            RecoveryResult::Recovered
        } else {
            RecoveryResult::NotRecovered
        };
        self.state
            .history_metrics()
            .recovery(result, outcome.replayed as u64);
        self.state
            .tracer()
            .end_replay(replay, outcome.replayed, outcome.recovered);
    }

    /// Resumes after `since`: see the module's comment.
    async fn resume(
        &mut self,
        history: &History,
        key: &RoomKey,
        room: &RoomName,
        since: &Since<'_>,
        replay: &ReplaySpan,
        outcome: &mut Outcome,
    ) -> Joined {
        let first = history.with_room(key, |log| {
            log.touch();
            let recovered = log.continuous_after(&since.epoch, since.offset);
            let subscribed = self.subscribed(room, log, Some(recovered));
            if !recovered {
                return Step::Done(self.join_now(key, vec![subscribed]));
            }
            outcome.recovered = true;
            self.replay_step(
                replay,
                key,
                room,
                log,
                since.offset,
                vec![subscribed],
                outcome,
            )
        });
        let mut chunk = match first {
            Step::Done(joined) => return joined,
            Step::Replay(chunk) => chunk,
        };
        loop {
            for frame in chunk.frames {
                if self.outbox.push_when_room(frame).await != Pushed::Queued {
                    // The connection is closing; the room was never joined.
                    return Joined::Answered;
                }
            }
            outcome.replayed += chunk.messages;
            let (epoch, cursor) = (chunk.epoch, chunk.cursor);
            let next = history.with_room(key, |log| {
                if !log.continuous_after(&epoch, cursor) {
                    // Trimmed before this client could read it: say so, go live.
                    outcome.recovered = false;
                    let subscribed = self.subscribed(room, log, Some(false));
                    return Step::Done(self.join_late(key, room, vec![subscribed]));
                }
                self.replay_step(replay, key, room, log, cursor, Vec::new(), outcome)
            });
            chunk = match next {
                Step::Done(joined) => return joined,
                Step::Replay(chunk) => chunk,
            };
        }
    }

    /// Under the room's lock: queues `first` and the whole backlog after
    /// `cursor` and joins, if all of it fits in the send queue now; otherwise
    /// the next chunk to replay, paced, outside the lock.
    #[allow(clippy::too_many_arguments)]
    fn replay_step(
        &mut self,
        replay: &ReplaySpan,
        key: &RoomKey,
        room: &RoomName,
        log: &RoomLog,
        cursor: u64,
        mut frames: Vec<Outbound>,
        outcome: &mut Outcome,
    ) -> Step {
        let (count, bytes) = log.backlog_after(cursor);
        // Nothing left to replay goes straight to `push_all`, which takes an
        // empty list (or a lone `subscribed`) whenever the connection is open.
        let whole = count == 0 || self.fits(frames.len() + count, bytes, count);
        let entries = log.after(cursor, if whole { count } else { CHUNK });
        let messages = entries.len();
        frames.extend(self.replayed(replay, key, &entries));
        if whole {
            // One push for all, so no other room's fan-out can take the space
            // between the check and the queuing; joined under the room's lock,
            // which every publish to it holds, so no live message comes first.
            match self.outbox.push_all(frames) {
                Ok(()) => {
                    outcome.replayed += messages;
                    return Step::Done(self.join_after_replay(key, room, outcome));
                }
                Err(back) => frames = back,
            }
        }
        if frames.is_empty() {
            // Only a closing connection refuses nothing at all.
            return Step::Done(Joined::Answered);
        }
        Step::Replay(Chunk {
            epoch: log.epoch().clone(),
            cursor: entries.last().map_or(cursor, |e| e.offset),
            frames,
            messages,
        })
    }

    /// Joins once the replay is queued; at the room limit the client hears
    /// `unsubscribed` and `too_many_rooms`, and the resume did not recover.
    pub(super) fn join_after_replay(
        &mut self,
        key: &RoomKey,
        room: &RoomName,
        outcome: &mut Outcome,
    ) -> Joined {
        let joined = self.join_late(key, room, Vec::new());
        if let Joined::Answered = joined {
            outcome.recovered = false;
        }
        joined
    }

    /// Answers a `history` request: the room's position and its stored
    /// messages, after `since` (oldest first) or the newest ones, at most
    /// `limit` and at most one send queue's bytes.
    pub(super) async fn read_history(
        &mut self,
        room: &RoomName,
        limit: Option<u32>,
        since: Option<Since<'_>>,
    ) {
        let Some(history) = self.state.history() else {
            self.push(outbound(
                protocol::history_frame(room, None, &[]),
                ServerFrameType::History,
            ));
            return;
        };
        let size = history.limits().size;
        let max = limit.map_or(size, |l| (l as usize).min(size));
        let budget = self.state.limits().queue.bytes;
        let (offset, epoch, entries) = history.with_room(&self.key(room.clone()), |log| {
            let entries = match &since {
                Some(s) if **log.epoch() == *s.epoch => log.after(s.offset, max),
                Some(_) => log.after(0, max),
                None => log.newest(max),
            };
            (log.latest(), log.epoch().clone(), entries)
        });
        let messages = entries.iter().map(|e| (e.offset, &e.envelope)).collect();
        let frame = history_reply(room, (offset, &epoch), messages, budget, since.is_none());
        let pushed = self.outbox.push_when_room(frame).await;
        self.account(pushed);
    }

    /// Joins the hub's room, queuing `frames` under its lock.
    pub(super) fn join_now(&mut self, key: &RoomKey, frames: Vec<Outbound>) -> Joined {
        self.join_queuing(key, frames, Outbox::push)
    }

    fn join_queuing(
        &mut self,
        key: &RoomKey,
        frames: Vec<Outbound>,
        push: fn(&Outbox, Outbound) -> Pushed,
    ) -> Joined {
        let subscriber = Subscriber {
            conn: self.conn,
            outbox: self.outbox.clone(),
        };
        let mut results = Vec::with_capacity(frames.len());
        let joined = self.state.hub().join(key, subscriber, || {
            results.extend(frames.into_iter().map(|f| push(&self.outbox, f)));
        });
        if joined.is_err() {
            return Joined::RoomLimit;
        }
        for pushed in results {
            self.account(pushed);
        }
        Joined::Yes
    }

    /// Joins after a paced replay, whose `subscribed` is already out: at the
    /// room limit now, the client hears `unsubscribed` and `too_many_rooms`.
    /// These replies, and `frames`, pass a send queue the replay filled
    /// (`Outbox::push_control`).
    pub(super) fn join_late(
        &mut self,
        key: &RoomKey,
        room: &RoomName,
        frames: Vec<Outbound>,
    ) -> Joined {
        if let Joined::RoomLimit = self.join_queuing(key, frames, Outbox::push_control) {
            let message = "this server is at its limit of rooms; try again later";
            self.end_replay_refused(room, ErrorCode::TooManyRooms, message);
            return Joined::Answered;
        }
        Joined::Yes
    }

    /// Tells a client whose `subscribed` (and part of a replay) went out that
    /// the subscription did not happen after all: `unsubscribed`, then the
    /// error, past a send queue the replay filled.
    pub(super) fn end_replay_refused(&mut self, room: &RoomName, code: ErrorCode, message: &str) {
        let unsubscribed = Reply::Unsubscribed {
            room: room.as_str(),
        };
        let error = Reply::Error {
            code,
            message,
            id: None,
        };
        self.state.metrics().error(code.into());
        for reply in [unsubscribed, error] {
            let pushed = self
                .outbox
                .push_control(outbound(reply.encode(), reply.frame_type()));
            self.account(pushed);
        }
    }

    /// The `subscribed` frame for `room` at its current position.
    fn subscribed(&self, room: &RoomName, log: &RoomLog, recovered: Option<bool>) -> Outbound {
        self.subscribed_at(room, log.latest(), log.epoch(), recovered)
    }

    /// The `subscribed` frame for `room` at `offset` of `epoch`.
    pub(super) fn subscribed_at(
        &self,
        room: &RoomName,
        offset: u64,
        epoch: &str,
        recovered: Option<bool>,
    ) -> Outbound {
        let reply = Reply::Subscribed {
            room: room.as_str(),
            offset: Some(offset),
            epoch: Some(epoch),
            recovered,
        };
        outbound(reply.encode(), reply.frame_type())
    }

    fn replayed(
        &self,
        replay: &ReplaySpan,
        key: &RoomKey,
        entries: &[Arc<Entry>],
    ) -> Vec<Outbound> {
        entries
            .iter()
            .map(|e| self.replay_frame(replay, key, &e.envelope, e.offset))
            .collect()
    }

    /// A stored message as a `message` frame, under its own `process` span
    /// (linked to its publish), or with the publish's own context when the
    /// replay is not traced: either way the client continues its trace.
    pub(super) fn replay_frame(
        &self,
        replay: &ReplaySpan,
        key: &RoomKey,
        envelope: &Envelope,
        offset: u64,
    ) -> Outbound {
        let tracer = self.state.tracer();
        let system = self.state.broker().system();
        let span = tracer.replayed(replay, system, key, &envelope.id, &envelope.trace);
        let trace = traceparent(span.span_context());
        let frame = protocol::message_frame(
            &key.room,
            &envelope.id,
            &envelope.data,
            trace.as_ref().map(|tp| tp.as_str()),
            Some(offset),
        );
        tracer.end_replayed(span);
        outbound(frame, ServerFrameType::Message)
    }

    /// Whether `frames` frames carrying `data` bytes of `messages` messages
    /// fit in the send queue now.
    pub(super) fn fits(&self, frames: usize, data: usize, messages: usize) -> bool {
        self.outbox
            .has_room(frames, data + (messages + 1) * FRAME_OVERHEAD)
    }

    pub(super) fn push(&self, item: Outbound) {
        let pushed = self.outbox.push(item);
        self.account(pushed);
    }
}

fn outbound(frame: Utf8Bytes, frame_type: ServerFrameType) -> Outbound {
    Outbound {
        frame,
        frame_type,
        published_at: None,
    }
}

/// The answer to a `history` request: the room's position and `messages`,
/// cut to those whose frame fits in `budget` bytes (the newest ones when
/// `newest`, else the oldest).
pub(super) fn history_reply(
    room: &RoomName,
    position: (u64, &str),
    messages: Vec<(u64, &Envelope)>,
    budget: usize,
    newest: bool,
) -> Outbound {
    let messages = within_budget(messages, budget, newest);
    let traces: Vec<_> = messages
        .iter()
        .map(|(_, e)| traceparent(&e.trace))
        .collect();
    let items: Vec<HistoryEntry<'_>> = messages
        .iter()
        .zip(&traces)
        .map(|((offset, e), tp)| HistoryEntry {
            id: &e.id,
            offset: Some(*offset),
            data: &e.data,
            traceparent: tp.as_ref().map(|tp| tp.as_str()),
        })
        .collect();
    let frame = protocol::history_frame(room, Some(position), &items);
    outbound(frame, ServerFrameType::History)
}

/// The messages whose frame fits in `budget` bytes: the newest ones when
/// `newest`, else the oldest.
fn within_budget(
    mut messages: Vec<(u64, &Envelope)>,
    budget: usize,
    newest: bool,
) -> Vec<(u64, &Envelope)> {
    let size = |(_, e): &(u64, &Envelope)| e.data.get().len() + e.id.len() + FRAME_OVERHEAD;
    let mut total = FRAME_OVERHEAD;
    let mut fits = |m: &(u64, &Envelope)| {
        total += size(m);
        total <= budget
    };
    if newest {
        let keep = messages.iter().rev().take_while(|m| fits(m)).count();
        messages.drain(..messages.len() - keep);
    } else {
        let keep = messages.iter().take_while(|m| fits(m)).count();
        messages.truncate(keep);
    }
    messages
}
