//! One connection's bounded outbound queue, and the policy for a full one.
//!
//! Every frame bound for a client goes through its outbox: replies pushed by the
//! connection's own read loop and messages pushed by fan-out from any task. The
//! connection's write loop is the only consumer. Pushing never waits, so a
//! subscriber that stops reading can never slow a publisher or its neighbours;
//! its queue fills and the slow-consumer policy decides what happens.
//!
//! The queue is bounded twice: in frames (`--send-queue`) and in bytes
//! (`--send-queue-bytes`). Bytes count from the push until the write loop has
//! written them to the socket, so the frames of a batch being written still
//! count: what a client that stopped reading can make the server hold is the
//! byte bound, whatever the frames' sizes.
//!
//! This is a hand-written queue rather than a `tokio::sync::mpsc` channel because
//! the policy needs to act on the consumer too (close the connection) and because
//! an idle connection's queue should cost a few dozen bytes, not a pre-allocated
//! block.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::labels::CloseReason;
use crate::message::PublishedAt;
use wsgate_protocol::ServerFrameType;

/// What to do when a subscriber's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SlowConsumerPolicy {
    /// Drop the new frame for that subscriber and count it.
    Drop,
    /// Close the connection with 1008 ("slow consumer"); the client reconnects
    /// knowing it missed messages, rather than silently having gaps.
    Disconnect,
}

/// The bounds of one connection's queue and what happens when one is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueLimits {
    /// Frames waiting to be written (`--send-queue`).
    pub(crate) frames: usize,
    /// Bytes queued or being written (`--send-queue-bytes`). A frame is always
    /// accepted into an empty queue, so one frame of any size can pass.
    pub(crate) bytes: usize,
    pub(crate) policy: SlowConsumerPolicy,
}

/// Bytes held in every outbox of the node, for the
/// `websocket.send_queue.bytes` gauge. Each outbox adds what it takes and
/// subtracts what it lets go of, its remainder included when it is dropped.
#[derive(Debug, Clone, Default)]
pub(crate) struct QueuedBytes(Arc<AtomicU64>);

impl QueuedBytes {
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    fn add(&self, n: usize) {
        self.0.fetch_add(n as u64, Ordering::Relaxed);
    }
    fn sub(&self, n: usize) {
        self.0.fetch_sub(n as u64, Ordering::Relaxed);
    }
}

/// One frame waiting to be written.
#[derive(Debug, Clone)]
pub(crate) struct Outbound {
    pub(crate) frame: Utf8Bytes,
    pub(crate) frame_type: ServerFrameType,
    /// Set on `message` frames: the delivery histogram's start.
    pub(crate) published_at: Option<PublishedAt>,
}

/// How a connection ends. The first request made is the one that counts: it is
/// what the connection-duration histogram records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CloseRequest {
    /// The RFC 6455 close code sent, or received from the peer (1006 when the
    /// peer vanished without one).
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
    pub(crate) why: CloseReason,
    /// Whether the server still has to send a close frame. False when the peer
    /// closed first (tungstenite queues the reply itself) or vanished.
    pub(crate) send: bool,
}

impl CloseRequest {
    /// The server closes the connection with `code`.
    pub(crate) const fn server(code: u16, reason: &'static str, why: CloseReason) -> Self {
        Self {
            code,
            reason,
            why,
            send: true,
        }
    }

    /// The peer closed with `code`, or vanished (1006).
    pub(crate) const fn peer(code: u16, why: CloseReason) -> Self {
        Self {
            code,
            reason: "",
            why,
            send: false,
        }
    }

    /// The socket is given up on without a close frame: it accepts no bytes.
    pub(crate) const fn abandon(why: CloseReason) -> Self {
        Self {
            code: 1006,
            reason: "",
            why,
            send: false,
        }
    }

    /// A slow consumer's backlog is abandoned rather than written.
    pub(crate) fn abandons_backlog(&self) -> bool {
        matches!(
            self.why,
            CloseReason::SlowConsumer | CloseReason::WriteTimeout
        )
    }
}

/// The result of [`Outbox::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    Queued,
    /// The queue was full and the policy is `drop`.
    Dropped,
    /// The queue was full and the policy is `disconnect`: this push asked the
    /// connection to close. Only the push that trips the policy sees this.
    Kicked,
    /// The connection is closing; nothing more is accepted.
    Closed,
}

pub(crate) struct Outbox {
    /// A std mutex: held only to move frames in or out, never across `.await`,
    /// and contended only between one producer at a time and the one consumer.
    state: Mutex<State>,
    /// Wakes the write loop: a stored permit means "look at the state again".
    wake: Notify,
    /// Wakes everyone waiting for the connection to start closing, such as a
    /// write loop stuck writing to a client that stopped reading; and a paced
    /// push (a replay) when the write loop freed space. Waiters re-check their
    /// condition, so one `Notify` serves both and keeps the outbox small.
    closed: Notify,
    limits: QueueLimits,
    /// The node-wide total this outbox's bytes are part of.
    gauge: QueuedBytes,
}

const SLOW_CONSUMER: CloseRequest =
    CloseRequest::server(1008, "slow consumer", CloseReason::SlowConsumer);

#[derive(Default)]
struct State {
    queue: VecDeque<Outbound>,
    /// Bytes of the frames queued plus those handed to the write loop and not
    /// yet reported written.
    bytes: usize,
    close: Option<CloseRequest>,
    /// A paced push waits for space: the write loop wakes it when it frees some.
    awaiting_space: bool,
}

/// What the write loop should do next.
#[derive(Debug)]
pub(crate) enum Next {
    /// Write these frames (the batch passed in now holds them), then come back.
    Write,
    /// Write nothing more: send this close frame. `discarded` frames that were
    /// still queued will never be written.
    Close {
        request: CloseRequest,
        discarded: Vec<Outbound>,
    },
}

impl Outbox {
    pub(crate) fn new(limits: QueueLimits, gauge: QueuedBytes) -> Self {
        Self {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            closed: Notify::new(),
            limits: QueueLimits {
                frames: limits.frames.max(1),
                ..limits
            },
            gauge,
        }
    }

    /// Queues a frame without waiting, applying the slow-consumer policy when
    /// either bound is reached.
    pub(crate) fn push(&self, item: Outbound) -> Pushed {
        let mut state = self.lock();
        if state.close.is_some() {
            return Pushed::Closed;
        }
        let len = item.frame.len();
        let full = state.queue.len() >= self.limits.frames
            || (state.bytes > 0 && state.bytes + len > self.limits.bytes);
        if full {
            return match self.limits.policy {
                SlowConsumerPolicy::Drop => Pushed::Dropped,
                SlowConsumerPolicy::Disconnect => {
                    state.close = Some(SLOW_CONSUMER);
                    drop(state);
                    self.wake.notify_one();
                    self.closed.notify_waiters();
                    Pushed::Kicked
                }
            };
        }
        self.enqueue(state, item)
    }

    fn enqueue(&self, state: MutexGuard<'_, State>, item: Outbound) -> Pushed {
        let len = item.frame.len();
        self.enqueue_all(state, [item], len);
        Pushed::Queued
    }

    /// Appends `items` (`bytes` in all), waking the write loop if the queue
    /// was empty and is not now.
    fn enqueue_all(
        &self,
        mut state: MutexGuard<'_, State>,
        items: impl IntoIterator<Item = Outbound>,
        bytes: usize,
    ) {
        let was_empty = state.queue.is_empty();
        state.queue.extend(items);
        state.bytes += bytes;
        let wake = was_empty && !state.queue.is_empty();
        drop(state);
        self.gauge.add(bytes);
        if wake {
            self.wake.notify_one();
        }
    }

    /// Queues a reply that ends a replay the server itself paced into this
    /// queue (a second `subscribed`, or `unsubscribed` and its error) past
    /// the bounds if need be: the queue is full of what the client asked for,
    /// and a reply dropped or a client kicked there would leave it believing
    /// `recovered: true`. At most three such frames per resume, each small.
    pub(crate) fn push_control(&self, item: Outbound) -> Pushed {
        let state = self.lock();
        if state.close.is_some() {
            return Pushed::Closed;
        }
        self.enqueue(state, item)
    }

    /// Queues every frame of `items`, in order, if all of them fit now;
    /// otherwise queues none and gives them back. For a replay's last part,
    /// which must be queued whole before its connection joins the room: a
    /// `has_room` check and separate pushes would let another room's
    /// fan-out take the space in between. `Err` too on a closing connection.
    pub(crate) fn push_all(&self, items: Vec<Outbound>) -> Result<(), Vec<Outbound>> {
        let state = self.lock();
        let bytes = items.iter().map(|i| i.frame.len()).sum();
        // Nothing always fits (even beside one frame over the byte bound,
        // which an empty queue takes).
        let fits = items.is_empty() || self.fits(&state, items.len(), bytes);
        if state.close.is_some() || !fits {
            return Err(items);
        }
        self.enqueue_all(state, items, bytes);
        Ok(())
    }

    /// Whether `frames` more frames of `bytes` in all fit now, within both
    /// bounds, on a connection that is not closing.
    pub(crate) fn has_room(&self, frames: usize, bytes: usize) -> bool {
        let state = self.lock();
        state.close.is_none() && self.fits(&state, frames, bytes)
    }

    fn fits(&self, state: &State, frames: usize, bytes: usize) -> bool {
        let frames_fit = state.queue.len() + frames <= self.limits.frames;
        // As in `push`, one frame of any size enters an empty queue.
        let bytes_fit =
            state.bytes + bytes <= self.limits.bytes || (state.bytes == 0 && frames <= 1);
        frames_fit && bytes_fit
    }

    /// Queues `item` once it fits within both bounds, waiting for the write
    /// loop to make room: for replays, which a client asked for and which must
    /// never trip the slow-consumer policy. `Closed` if the connection starts
    /// closing first.
    pub(crate) async fn push_when_room(&self, item: Outbound) -> Pushed {
        loop {
            let changed = self.closed.notified();
            tokio::pin!(changed);
            // Registered before the check, so space freed in between is not missed.
            changed.as_mut().enable();
            {
                let mut state = self.lock();
                if state.close.is_some() {
                    return Pushed::Closed;
                }
                if self.fits(&state, 1, item.frame.len()) {
                    return self.enqueue(state, item);
                }
                state.awaiting_space = true;
            }
            changed.await;
        }
    }

    /// Asks the write loop to close the connection. Returns whether this was the
    /// first request (later ones change nothing). Frames already queued are still
    /// written first, unless the request abandons the backlog.
    pub(crate) fn close(&self, request: CloseRequest) -> bool {
        let mut state = self.lock();
        if state.close.is_some() {
            return false;
        }
        state.close = Some(request);
        drop(state);
        self.wake.notify_one();
        self.closed.notify_waiters();
        true
    }

    /// Reports `n` bytes of a batch written to the socket: they no longer count
    /// against the queue's byte bound. (The write loop reports them through
    /// [`next`](Self::next), saving a lock per batch.)
    #[cfg(test)]
    pub(crate) fn written(&self, n: usize) {
        let mut state = self.lock();
        self.release(&mut state, n);
    }

    fn release(&self, state: &mut State, written: usize) {
        let n = written.min(state.bytes);
        state.bytes -= n;
        self.gauge.sub(n);
    }

    /// Empties the queue of a connection whose socket can no longer be written,
    /// returning how many frames were discarded. Later pushes see `Closed`.
    pub(crate) fn discard(&self, request: CloseRequest) -> usize {
        let mut state = self.lock();
        let first = state.close.is_none();
        state.close.get_or_insert(request);
        let n = state.queue.len();
        state.queue = VecDeque::new();
        let bytes = std::mem::take(&mut state.bytes);
        drop(state);
        self.gauge.sub(bytes);
        if first {
            self.closed.notify_waiters();
        }
        n
    }

    /// The close request that ends this connection, once one was made.
    pub(crate) fn close_request(&self) -> Option<CloseRequest> {
        self.lock().close
    }

    /// Resolves once a close that abandons the backlog has been requested: the
    /// write loop races a blocked write against it.
    pub(crate) async fn abandoned(&self) {
        self.wait_close(CloseRequest::abandons_backlog).await;
    }

    async fn wait_close(&self, matches: impl Fn(&CloseRequest) -> bool) {
        loop {
            let notified = self.closed.notified();
            tokio::pin!(notified);
            // Registered before the check, so a close between the two is not missed.
            notified.as_mut().enable();
            if self.lock().close.as_ref().is_some_and(&matches) {
                return;
            }
            notified.await;
        }
    }

    /// Reports `written` bytes of the previous batch written to the socket,
    /// then waits for work for the write loop. On `Next::Write`, `batch` (which
    /// must be empty) holds every queued frame, in order.
    /// `written` is taken (set to 0) once reported, so a call abandoned before
    /// or after that reports it exactly once.
    pub(crate) async fn next(&self, batch: &mut VecDeque<Outbound>, written: &mut usize) -> Next {
        debug_assert!(batch.is_empty());
        loop {
            let (next, freed) = {
                let mut state = self.lock();
                self.release(&mut state, std::mem::take(written));
                let freed = std::mem::take(&mut state.awaiting_space);
                if let Some(request) = state.close
                    && (request.abandons_backlog() || state.queue.is_empty())
                {
                    let discarded = state.queue.drain(..).collect();
                    let bytes = std::mem::take(&mut state.bytes);
                    drop(state);
                    self.gauge.sub(bytes);
                    return Next::Close { request, discarded };
                }
                if state.queue.is_empty() {
                    (None, freed)
                } else {
                    std::mem::swap(&mut state.queue, batch);
                    (Some(Next::Write), freed)
                }
            };
            if freed {
                self.closed.notify_waiters();
            }
            if let Some(next) = next {
                return next;
            }
            self.wake.notified().await;
        }
    }

    /// Frames waiting in the queue (not those being written).
    #[cfg(test)]
    pub(crate) fn queued_frames(&self) -> usize {
        self.lock().queue.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every critical section is a single VecDeque operation (crate::sync).
        crate::sync::lock(&self.state)
    }
}

impl Drop for Outbox {
    /// Whatever is still counted (a batch whose write failed, a queue never
    /// drained) leaves the node-wide total with the outbox.
    fn drop(&mut self) {
        let bytes = self.lock().bytes;
        self.gauge.sub(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u32) -> Outbound {
        Outbound {
            frame: Utf8Bytes::from(n.to_string()),
            frame_type: ServerFrameType::Message,
            published_at: None,
        }
    }

    fn by_frames(frames: usize, policy: SlowConsumerPolicy) -> Outbox {
        let limits = QueueLimits {
            frames,
            bytes: usize::MAX,
            policy,
        };
        Outbox::new(limits, QueuedBytes::default())
    }

    fn by_bytes(bytes: usize, policy: SlowConsumerPolicy, gauge: &QueuedBytes) -> Outbox {
        let limits = QueueLimits {
            frames: 1_000,
            bytes,
            policy,
        };
        Outbox::new(limits, gauge.clone())
    }

    fn sized(n: usize) -> Outbound {
        Outbound {
            frame: Utf8Bytes::from("x".repeat(n)),
            frame_type: ServerFrameType::Message,
            published_at: None,
        }
    }

    fn texts(batch: &VecDeque<Outbound>) -> Vec<String> {
        batch.iter().map(|o| o.frame.to_string()).collect()
    }

    #[tokio::test]
    async fn delivers_in_order_in_one_batch() {
        let outbox = by_frames(8, SlowConsumerPolicy::Drop);
        for n in 0..3 {
            assert_eq!(outbox.push(frame(n)), Pushed::Queued);
        }
        let mut batch = VecDeque::new();
        assert!(matches!(outbox.next(&mut batch, &mut 0).await, Next::Write));
        assert_eq!(texts(&batch), ["0", "1", "2"]);
    }

    #[tokio::test]
    async fn drop_policy_refuses_beyond_capacity_and_keeps_the_rest() {
        let outbox = by_frames(2, SlowConsumerPolicy::Drop);
        assert_eq!(outbox.push(frame(0)), Pushed::Queued);
        assert_eq!(outbox.push(frame(1)), Pushed::Queued);
        assert_eq!(outbox.push(frame(2)), Pushed::Dropped);
        assert!(outbox.close_request().is_none());
        let mut batch = VecDeque::new();
        outbox.next(&mut batch, &mut 0).await;
        assert_eq!(texts(&batch), ["0", "1"]);
    }

    #[tokio::test]
    async fn disconnect_policy_kicks_once_and_discards_the_queue() {
        let outbox = by_frames(2, SlowConsumerPolicy::Disconnect);
        outbox.push(frame(0));
        outbox.push(frame(1));
        assert_eq!(outbox.push(frame(2)), Pushed::Kicked);
        assert_eq!(outbox.push(frame(3)), Pushed::Closed);
        let mut batch = VecDeque::new();
        match outbox.next(&mut batch, &mut 0).await {
            Next::Close { request, discarded } => {
                assert_eq!(request.code, 1008);
                assert_eq!(request.why, CloseReason::SlowConsumer);
                assert_eq!(discarded.len(), 2);
            }
            Next::Write => panic!("a kicked connection must not write its backlog"),
        }
    }

    #[tokio::test]
    async fn other_closes_write_the_backlog_first() {
        let outbox = by_frames(4, SlowConsumerPolicy::Disconnect);
        outbox.push(frame(0));
        assert!(outbox.close(CloseRequest::server(
            1001,
            "server shutting down",
            CloseReason::ServerShutdown
        )));
        assert!(!outbox.close(CloseRequest::peer(1000, CloseReason::ClientClose)));
        let mut batch = VecDeque::new();
        assert!(matches!(outbox.next(&mut batch, &mut 0).await, Next::Write));
        assert_eq!(texts(&batch), ["0"]);
        batch.clear();
        assert!(matches!(
            outbox.next(&mut batch, &mut 0).await,
            Next::Close { request, .. } if request.code == 1001
        ));
    }

    #[tokio::test]
    async fn a_kick_wakes_a_writer_blocked_elsewhere() {
        let outbox = std::sync::Arc::new(by_frames(1, SlowConsumerPolicy::Disconnect));
        let blocked = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.abandoned().await })
        };
        outbox.push(frame(0));
        assert_eq!(outbox.push(frame(1)), Pushed::Kicked);
        tokio::time::timeout(std::time::Duration::from_secs(5), blocked)
            .await
            .expect("abandoned() resolved")
            .expect("no panic");
    }

    #[tokio::test]
    async fn a_push_wakes_a_waiting_writer() {
        let outbox = std::sync::Arc::new(by_frames(4, SlowConsumerPolicy::Drop));
        let writer = {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                let mut batch = VecDeque::new();
                outbox.next(&mut batch, &mut 0).await;
                texts(&batch)
            })
        };
        tokio::task::yield_now().await;
        outbox.push(frame(7));
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), writer)
            .await
            .expect("writer woke")
            .expect("writer did not panic");
        assert_eq!(got, ["7"]);
    }

    #[tokio::test]
    async fn bytes_count_until_written_and_the_byte_bound_applies_the_policy() {
        let gauge = QueuedBytes::default();
        let outbox = by_bytes(100, SlowConsumerPolicy::Drop, &gauge);
        assert_eq!(outbox.push(sized(60)), Pushed::Queued);
        assert_eq!(outbox.push(sized(40)), Pushed::Queued);
        assert_eq!(outbox.push(sized(1)), Pushed::Dropped, "100 bytes held");
        assert_eq!(gauge.get(), 100);
        // Handed to the writer, the batch still counts until it is written.
        let mut batch = VecDeque::new();
        assert!(matches!(outbox.next(&mut batch, &mut 0).await, Next::Write));
        assert_eq!(outbox.push(sized(1)), Pushed::Dropped, "the batch counts");
        outbox.written(100);
        assert_eq!(gauge.get(), 0);
        assert_eq!(outbox.push(sized(1)), Pushed::Queued);
    }

    #[tokio::test]
    async fn push_all_queues_every_frame_or_none() {
        let gauge = QueuedBytes::default();
        let outbox = by_bytes(10, SlowConsumerPolicy::Disconnect, &gauge);
        assert_eq!(outbox.push(sized(4)), Pushed::Queued);
        let refused = outbox.push_all(vec![sized(3), sized(4)]).unwrap_err();
        assert_eq!(refused.len(), 2, "given back whole");
        assert_eq!((outbox.queued_frames(), gauge.get()), (1, 4), "none queued");
        assert!(outbox.close_request().is_none(), "no slow-consumer kick");
        outbox.push_all(vec![sized(3), sized(3)]).expect("both fit");
        let mut batch = VecDeque::new();
        assert!(matches!(outbox.next(&mut batch, &mut 0).await, Next::Write));
        assert_eq!(batch.len(), 3);
        assert_eq!(gauge.get(), 10);
        let over = by_bytes(10, SlowConsumerPolicy::Disconnect, &gauge);
        assert_eq!(
            over.push(sized(50)),
            Pushed::Queued,
            "alone, past the bound"
        );
        assert!(over.push_all(Vec::new()).is_ok(), "nothing fits beside it");
        outbox.close(CloseRequest::abandon(CloseReason::Error));
        assert!(outbox.push_all(vec![sized(1)]).is_err(), "closing");
        assert!(outbox.push_all(Vec::new()).is_err(), "closing, even empty");
    }

    #[test]
    fn a_control_reply_passes_a_full_queue_but_not_a_closing_one() {
        let outbox = by_frames(1, SlowConsumerPolicy::Disconnect);
        assert_eq!(outbox.push(sized(4)), Pushed::Queued);
        assert_eq!(outbox.push_control(sized(4)), Pushed::Queued);
        assert_eq!(outbox.queued_frames(), 2);
        assert!(outbox.close_request().is_none(), "not kicked");
        outbox.close(CloseRequest::abandon(CloseReason::Error));
        assert_eq!(outbox.push_control(sized(4)), Pushed::Closed);
    }

    #[test]
    fn one_frame_larger_than_the_byte_bound_passes_an_empty_queue() {
        let gauge = QueuedBytes::default();
        let outbox = by_bytes(100, SlowConsumerPolicy::Disconnect, &gauge);
        assert_eq!(outbox.push(sized(500)), Pushed::Queued);
        assert_eq!(outbox.push(sized(1)), Pushed::Kicked);
    }

    #[tokio::test]
    async fn the_node_total_returns_to_zero_on_every_path() {
        let gauge = QueuedBytes::default();
        {
            let kicked = by_bytes(10, SlowConsumerPolicy::Disconnect, &gauge);
            kicked.push(sized(8));
            kicked.push(sized(8));
            let mut batch = VecDeque::new();
            assert!(matches!(
                kicked.next(&mut batch, &mut 0).await,
                Next::Close { .. }
            ));
            let discarded = by_bytes(100, SlowConsumerPolicy::Drop, &gauge);
            discarded.push(sized(30));
            discarded.discard(CloseRequest::abandon(CloseReason::Error));
            let dropped_mid_write = by_bytes(100, SlowConsumerPolicy::Drop, &gauge);
            dropped_mid_write.push(sized(30));
            let mut batch = VecDeque::new();
            dropped_mid_write.next(&mut batch, &mut 0).await;
            assert_eq!(gauge.get(), 30, "the unwritten batch is still held");
        }
        assert_eq!(gauge.get(), 0);
    }
}
