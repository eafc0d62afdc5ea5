//! One connection's bounded outbound queue, and the policy for a full one.
//!
//! Every frame bound for a client goes through its outbox: replies pushed by the
//! connection's own read loop and messages pushed by fan-out from any task. The
//! connection's write loop is the only consumer. Pushing never waits, so a
//! subscriber that stops reading can never slow a publisher or its neighbours;
//! its queue fills and the slow-consumer policy decides what happens.
//!
//! This is a hand-written queue rather than a `tokio::sync::mpsc` channel because
//! the policy needs to act on the consumer too (close the connection) and because
//! an idle connection's queue should cost a few dozen bytes, not a pre-allocated
//! block.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::message::PublishedAt;
use crate::protocol::ServerFrameType;
use crate::telemetry::CloseReason;

/// What to do when a subscriber's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SlowConsumerPolicy {
    /// Drop the new frame for that subscriber and count it.
    Drop,
    /// Close the connection with 1008 ("slow consumer"); the client reconnects
    /// knowing it missed messages, rather than silently having gaps.
    Disconnect,
}

/// One frame waiting to be written.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub frame: Utf8Bytes,
    pub frame_type: ServerFrameType,
    /// Set on `message` frames: the delivery histogram's start.
    pub published_at: Option<PublishedAt>,
}

/// How a connection ends. The first request made is the one that counts: it is
/// what the connection-duration histogram records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseRequest {
    /// The RFC 6455 close code sent, or received from the peer (1006 when the
    /// peer vanished without one).
    pub code: u16,
    pub reason: &'static str,
    pub why: CloseReason,
    /// Whether the server still has to send a close frame. False when the peer
    /// closed first (tungstenite queues the reply itself) or vanished.
    pub send: bool,
}

impl CloseRequest {
    /// The server closes the connection with `code`.
    pub const fn server(code: u16, reason: &'static str, why: CloseReason) -> Self {
        Self {
            code,
            reason,
            why,
            send: true,
        }
    }

    /// The peer closed with `code`, or vanished (1006).
    pub const fn peer(code: u16, why: CloseReason) -> Self {
        Self {
            code,
            reason: "",
            why,
            send: false,
        }
    }

    /// A slow consumer's backlog is abandoned rather than written.
    pub fn abandons_backlog(&self) -> bool {
        self.why == CloseReason::SlowConsumer
    }
}

/// The result of [`Outbox::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// The queue was full and the policy is `drop`.
    Dropped,
    /// The queue was full and the policy is `disconnect`: this push asked the
    /// connection to close. Only the push that trips the policy sees this.
    Kicked,
    /// The connection is closing; nothing more is accepted.
    Closed,
}

pub struct Outbox {
    /// A std mutex: held only to move frames in or out, never across `.await`,
    /// and contended only between one producer at a time and the one consumer.
    state: Mutex<State>,
    /// Wakes the write loop: a stored permit means "look at the state again".
    wake: Notify,
    /// Wakes everyone waiting for the connection to start closing, such as a
    /// write loop stuck writing to a client that stopped reading.
    closed: Notify,
    capacity: usize,
    policy: SlowConsumerPolicy,
}

const SLOW_CONSUMER: CloseRequest =
    CloseRequest::server(1008, "slow consumer", CloseReason::SlowConsumer);

#[derive(Default)]
struct State {
    queue: VecDeque<Outbound>,
    close: Option<CloseRequest>,
}

/// What the write loop should do next.
#[derive(Debug)]
pub enum Next {
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
    pub fn new(capacity: usize, policy: SlowConsumerPolicy) -> Self {
        Self {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            closed: Notify::new(),
            capacity: capacity.max(1),
            policy,
        }
    }

    /// Queues a frame without waiting, applying the slow-consumer policy when full.
    pub fn push(&self, item: Outbound) -> Pushed {
        let mut state = self.lock();
        if state.close.is_some() {
            return Pushed::Closed;
        }
        if state.queue.len() >= self.capacity {
            return match self.policy {
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
        let was_empty = state.queue.is_empty();
        state.queue.push_back(item);
        drop(state);
        if was_empty {
            self.wake.notify_one();
        }
        Pushed::Queued
    }

    /// Asks the write loop to close the connection. Returns whether this was the
    /// first request (later ones change nothing). Frames already queued are still
    /// written first, unless the request abandons the backlog.
    pub fn close(&self, request: CloseRequest) -> bool {
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

    /// Empties the queue of a connection whose socket can no longer be written,
    /// returning how many frames were discarded. Later pushes see `Closed`.
    pub fn discard(&self, request: CloseRequest) -> usize {
        let mut state = self.lock();
        let first = state.close.is_none();
        state.close.get_or_insert(request);
        let n = state.queue.len();
        state.queue = VecDeque::new();
        drop(state);
        if first {
            self.closed.notify_waiters();
        }
        n
    }

    /// The close request that ends this connection, once one was made.
    pub fn close_request(&self) -> Option<CloseRequest> {
        self.lock().close
    }

    /// Resolves once a close that abandons the backlog has been requested: the
    /// write loop races a blocked write against it.
    pub async fn abandoned(&self) {
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

    /// Waits for work for the write loop. On `Next::Write`, `batch` (which must
    /// be empty) holds every queued frame, in order.
    pub async fn next(&self, batch: &mut VecDeque<Outbound>) -> Next {
        debug_assert!(batch.is_empty());
        loop {
            {
                let mut state = self.lock();
                if let Some(request) = state.close {
                    if request.abandons_backlog() || state.queue.is_empty() {
                        let discarded = state.queue.drain(..).collect();
                        return Next::Close { request, discarded };
                    }
                }
                if !state.queue.is_empty() {
                    std::mem::swap(&mut state.queue, batch);
                    return Next::Write;
                }
            }
            self.wake.notified().await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // (every critical section is a single VecDeque operation), so a poisoned
        // lock is still safe to use.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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

    fn texts(batch: &VecDeque<Outbound>) -> Vec<String> {
        batch.iter().map(|o| o.frame.to_string()).collect()
    }

    #[tokio::test]
    async fn delivers_in_order_in_one_batch() {
        let outbox = Outbox::new(8, SlowConsumerPolicy::Drop);
        for n in 0..3 {
            assert_eq!(outbox.push(frame(n)), Pushed::Queued);
        }
        let mut batch = VecDeque::new();
        assert!(matches!(outbox.next(&mut batch).await, Next::Write));
        assert_eq!(texts(&batch), ["0", "1", "2"]);
    }

    #[tokio::test]
    async fn drop_policy_refuses_beyond_capacity_and_keeps_the_rest() {
        let outbox = Outbox::new(2, SlowConsumerPolicy::Drop);
        assert_eq!(outbox.push(frame(0)), Pushed::Queued);
        assert_eq!(outbox.push(frame(1)), Pushed::Queued);
        assert_eq!(outbox.push(frame(2)), Pushed::Dropped);
        assert!(outbox.close_request().is_none());
        let mut batch = VecDeque::new();
        outbox.next(&mut batch).await;
        assert_eq!(texts(&batch), ["0", "1"]);
    }

    #[tokio::test]
    async fn disconnect_policy_kicks_once_and_discards_the_queue() {
        let outbox = Outbox::new(2, SlowConsumerPolicy::Disconnect);
        outbox.push(frame(0));
        outbox.push(frame(1));
        assert_eq!(outbox.push(frame(2)), Pushed::Kicked);
        assert_eq!(outbox.push(frame(3)), Pushed::Closed);
        let mut batch = VecDeque::new();
        match outbox.next(&mut batch).await {
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
        let outbox = Outbox::new(4, SlowConsumerPolicy::Disconnect);
        outbox.push(frame(0));
        assert!(outbox.close(CloseRequest::server(
            1001,
            "server shutting down",
            CloseReason::ServerShutdown
        )));
        assert!(!outbox.close(CloseRequest::peer(1000, CloseReason::ClientClose)));
        let mut batch = VecDeque::new();
        assert!(matches!(outbox.next(&mut batch).await, Next::Write));
        assert_eq!(texts(&batch), ["0"]);
        batch.clear();
        assert!(matches!(
            outbox.next(&mut batch).await,
            Next::Close { request, .. } if request.code == 1001
        ));
    }

    #[tokio::test]
    async fn a_kick_wakes_a_writer_blocked_elsewhere() {
        let outbox = std::sync::Arc::new(Outbox::new(1, SlowConsumerPolicy::Disconnect));
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
        let outbox = std::sync::Arc::new(Outbox::new(4, SlowConsumerPolicy::Drop));
        let writer = {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                let mut batch = VecDeque::new();
                outbox.next(&mut batch).await;
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
}
