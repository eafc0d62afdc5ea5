//! A connection's write loop: the only code that writes to its socket.
//!
//! It drains the outbox in batches, feeds every frame of a batch into
//! tungstenite's write buffer and flushes once, so N frames waiting for one
//! socket cost one write syscall, not N. Delivery latency is observed after the
//! flush returns: the histogram ends at the socket write, as promised.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use tokio::time::{MissedTickBehavior, interval_at, timeout};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::Ws;
use crate::message::{DeliveredAt, PublishedAt};
use crate::outbox::{CloseRequest, Next, Outbound, Outbox};
use crate::protocol::ServerFrameType;
use crate::telemetry::{CloseReason, DropReason, ErrorType, Metrics};

pub(super) type WsSink = SplitSink<Ws, Message>;

/// How the write loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WriteEnd {
    /// The server's close frame was written: the read loop may wait for the
    /// peer's reply.
    CloseSent,
    /// The peer closed or vanished; whatever tungstenite queued was flushed.
    Flushed,
    /// The socket could not be written (error, timeout, or a slow consumer
    /// kicked mid-write): nothing more can be sent on it.
    Failed,
}

pub(super) struct Writer {
    pub sink: WsSink,
    pub outbox: Arc<Outbox>,
    pub metrics: Metrics,
    pub heartbeat_interval: Duration,
    /// The longest one batch (or ping, or close) may take to write before the
    /// client is deemed to have stopped reading.
    pub write_timeout: Duration,
}

impl Writer {
    pub async fn run(mut self) -> (WsSink, WriteEnd) {
        let end = self.write_loop().await;
        (self.sink, end)
    }

    async fn write_loop(&mut self) -> WriteEnd {
        let mut batch = VecDeque::new();
        let mut delivered = Vec::new();
        let start = tokio::time::Instant::now() + self.heartbeat_interval;
        let mut ping = interval_at(start, self.heartbeat_interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let next = tokio::select! {
                next = self.outbox.next(&mut batch) => next,
                _ = ping.tick() => {
                    if self.write(Message::Ping(Bytes::new())).await.is_err() {
                        return WriteEnd::Failed;
                    }
                    continue;
                }
            };
            match next {
                Next::Write => {
                    let outcome = tokio::select! {
                        r = timeout(self.write_timeout, write_batch(&mut self.sink, &mut batch, &mut delivered)) => r,
                        () = self.outbox.abandoned() => Ok(Err(WriteFailure::Kicked)),
                    };
                    match outcome {
                        Ok(Ok(sent)) => self.record(sent, &mut delivered),
                        Ok(Err(failure)) => return self.fail(failure, &mut batch),
                        Err(_elapsed) => return self.fail(WriteFailure::TimedOut, &mut batch),
                    }
                    shrink_if_idle(&mut batch);
                }
                Next::Close { request, discarded } => {
                    let reason = if request.abandons_backlog() {
                        DropReason::SlowConsumer
                    } else {
                        DropReason::ConnectionClosed
                    };
                    self.metrics.dropped(reason, discarded.len() as u64);
                    return self.close(request).await;
                }
            }
        }
    }

    /// Writes one control frame with the write timeout.
    async fn write(&mut self, message: Message) -> Result<(), ()> {
        match timeout(self.write_timeout, self.sink.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.fail(WriteFailure::Io(e), &mut VecDeque::new());
                Err(())
            }
            Err(_) => {
                self.fail(WriteFailure::TimedOut, &mut VecDeque::new());
                Err(())
            }
        }
    }

    async fn close(&mut self, request: CloseRequest) -> WriteEnd {
        if !request.send {
            // The peer closed first: flush the close reply tungstenite queued.
            let _ = timeout(self.write_timeout, self.sink.flush()).await;
            return WriteEnd::Flushed;
        }
        let frame = CloseFrame {
            code: CloseCode::from(request.code),
            reason: request.reason.into(),
        };
        match timeout(
            self.write_timeout,
            self.sink.send(Message::Close(Some(frame))),
        )
        .await
        {
            Ok(Ok(())) => WriteEnd::CloseSent,
            // The peer's own close crossed ours; its reply is already on the way.
            Ok(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => WriteEnd::Flushed,
            _ => WriteEnd::Failed,
        }
    }

    /// Records a written batch: frames by type, and one delivery latency each.
    fn record(&self, sent: [u64; 6], delivered: &mut Vec<PublishedAt>) {
        for frame_type in ServerFrameType::ALL {
            let n = sent[frame_type.index()];
            if n > 0 {
                self.metrics.messages_sent(frame_type, n);
            }
        }
        if !delivered.is_empty() {
            let at = DeliveredAt::now();
            for published_at in delivered.drain(..) {
                self.metrics.delivered(published_at.latency(&at));
            }
        }
    }

    /// Ends the connection after a failed write. The frames of the failed batch
    /// cannot be known to have arrived, so they count as dropped.
    fn fail(&self, failure: WriteFailure, batch: &mut VecDeque<Outbound>) -> WriteEnd {
        let (request, error, drop_reason) = match &failure {
            WriteFailure::Kicked | WriteFailure::TimedOut => (
                CloseRequest::server(1008, "slow consumer", CloseReason::SlowConsumer),
                ErrorType::SlowConsumer,
                DropReason::SlowConsumer,
            ),
            WriteFailure::Io(_) => (
                CloseRequest::peer(1006, CloseReason::Error),
                ErrorType::WriteFailed,
                DropReason::ConnectionClosed,
            ),
        };
        // A kick was counted where it happened; only a first close counts here.
        if self.outbox.close(request) {
            self.metrics.error(error);
        }
        if let WriteFailure::Io(e) = &failure {
            tracing::debug!(error = %e, "socket write failed");
        }
        let unsent = batch.len() + self.outbox.discard(request);
        self.metrics.dropped(drop_reason, unsent as u64);
        batch.clear();
        WriteEnd::Failed
    }
}

enum WriteFailure {
    Io(WsError),
    TimedOut,
    Kicked,
}

/// Feeds every frame of `batch` and flushes once. On success returns the number
/// of frames written per type, leaves the message frames' publish times in
/// `delivered`, and empties `batch`. On failure, or when the future is dropped
/// mid-write (a kick, a timeout), `batch` still holds every frame of the
/// attempt: none can be known to have arrived, and all are counted as dropped.
async fn write_batch(
    sink: &mut WsSink,
    batch: &mut VecDeque<Outbound>,
    delivered: &mut Vec<PublishedAt>,
) -> Result<[u64; 6], WriteFailure> {
    for item in batch.iter() {
        // A clone of the frame's bytes is a reference-count bump.
        sink.feed(Message::Text(item.frame.clone()))
            .await
            .map_err(WriteFailure::Io)?;
    }
    sink.flush().await.map_err(WriteFailure::Io)?;
    let mut sent = [0u64; 6];
    for item in batch.drain(..) {
        sent[item.frame_type.index()] += 1;
        if let Some(at) = item.published_at {
            delivered.push(at);
        }
    }
    Ok(sent)
}

/// Returns a burst's memory once the queue is drained, so an idle connection
/// costs little however busy it once was.
fn shrink_if_idle(batch: &mut VecDeque<Outbound>) {
    if batch.is_empty() && batch.capacity() > 64 {
        *batch = VecDeque::new();
    }
}
