//! A connection's write loop: the only code that writes to its socket.
//!
//! It drains the outbox in batches, feeds every frame of a batch into
//! tungstenite's write buffer and flushes once, so N frames waiting for one
//! socket cost one write syscall, not N. Delivery latency is observed after the
//! flush returns: the histogram ends at the socket write, as promised.
//!
//! A write may take as long as it needs while the socket accepts bytes; a socket
//! that accepts none for `--write-timeout` ends the connection (`write_timeout`).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep_until, timeout};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::Ws;
use super::progress::WriteProgress;
use crate::message::{DeliveredAt, PublishedAt};
use crate::outbox::{CloseRequest, Next, Outbound, Outbox};
use crate::telemetry::{CloseReason, DropReason, ErrorType, Metrics};
use wsgate_protocol::ServerFrameType;

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
    pub(crate) sink: WsSink,
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) metrics: Metrics,
    pub(crate) heartbeat_interval: Duration,
    /// How long the socket may accept no bytes at all before the client is
    /// deemed to have stopped reading (`--write-timeout`).
    pub(crate) write_timeout: Duration,
    /// When the socket last accepted bytes.
    pub(crate) progress: WriteProgress,
}

impl Writer {
    pub(crate) async fn run(mut self) -> (WsSink, WriteEnd) {
        let end = self.write_loop().await;
        (self.sink, end)
    }

    async fn write_loop(&mut self) -> WriteEnd {
        let mut batch = VecDeque::new();
        let mut delivered = Vec::new();
        // Bytes of the last batch written, reported (and zeroed) by `next`.
        let mut written_bytes = 0;
        let start = tokio::time::Instant::now() + self.heartbeat_interval;
        let mut ping = interval_at(start, self.heartbeat_interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let next = tokio::select! {
                next = self.outbox.next(&mut batch, &mut written_bytes) => next,
                _ = ping.tick() => {
                    if self.write(Message::Ping(Bytes::new())).await.is_err() {
                        return WriteEnd::Failed;
                    }
                    continue;
                }
            };
            match next {
                Next::Write => {
                    let outcome = {
                        let write = pin!(write_batch(&mut self.sink, &mut batch, &mut delivered));
                        tokio::select! {
                            r = unless_stalled(write, &self.progress, self.write_timeout) => r,
                            () = self.outbox.abandoned() => Ok(Err(WriteFailure::Kicked)),
                        }
                    };
                    match outcome {
                        Ok(Ok(written)) => {
                            written_bytes = written.bytes;
                            self.record(written.frames, &mut delivered);
                        }
                        Ok(Err(failure)) => return self.fail(failure, &mut batch),
                        Err(Stalled) => return self.fail(WriteFailure::TimedOut, &mut batch),
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

    /// Writes one control frame, unless the socket stalls.
    async fn write(&mut self, message: Message) -> Result<(), ()> {
        let sent = {
            let send = pin!(self.sink.send(message));
            unless_stalled(send, &self.progress, self.write_timeout).await
        };
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.fail(WriteFailure::Io(e), &mut VecDeque::new());
                Err(())
            }
            Err(Stalled) => {
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
    fn record(&self, sent: [u64; ServerFrameType::ALL.len()], delivered: &mut Vec<PublishedAt>) {
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
            WriteFailure::Kicked => (
                CloseRequest::server(1008, "slow consumer", CloseReason::SlowConsumer),
                ErrorType::SlowConsumer,
                DropReason::SlowConsumer,
            ),
            // No close frame: the socket accepts nothing, so none would arrive.
            WriteFailure::TimedOut => (
                CloseRequest::abandon(CloseReason::WriteTimeout),
                ErrorType::WriteTimeout,
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

/// The socket accepted no bytes for the write timeout.
struct Stalled;

/// How often a write in progress checks that the socket still accepts bytes:
/// a stall is noticed between `limit` and `limit` and a quarter after the
/// socket's last progress. A write that completes sooner never looks.
const STALL_CHECKS: u32 = 4;

/// Runs `write` to completion unless the socket accepts no bytes for `limit`
/// (counted from the write's start, or from when progress was last seen).
///
/// The write is pinned by the caller, so its future is stored once, in the
/// caller's state: moved in by value, it was laid out twice, and every
/// connection's write loop carried the copy.
async fn unless_stalled<F: Future>(
    mut write: Pin<&mut F>,
    progress: &WriteProgress,
    limit: Duration,
) -> Result<F::Output, Stalled> {
    // Most writes complete at once, the socket having room: they arm no
    // timer. (Arming one per batch, with a deadline sooner than any other,
    // made the runtime wake its driver through an eventfd write per batch.)
    if let Poll::Ready(output) =
        std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await
    {
        return Ok(output);
    }
    let mut quiet_since = Instant::now();
    let mut seen = progress.written();
    // Boxed: this is the rare path, and an inline timer would widen every
    // connection's write loop by its size.
    let mut check = Box::pin(sleep_until(quiet_since + limit / STALL_CHECKS));
    loop {
        tokio::select! {
            output = write.as_mut() => return Ok(output),
            () = &mut check => {
                let now = Instant::now();
                let written = progress.written();
                if written != seen {
                    seen = written;
                    quiet_since = now;
                } else if now.duration_since(quiet_since) >= limit {
                    return Err(Stalled);
                }
                check.as_mut().reset(now + limit / STALL_CHECKS);
            }
        }
    }
}

/// Frames written per type, and their bytes.
struct Written {
    frames: [u64; ServerFrameType::ALL.len()],
    bytes: usize,
}

/// Feeds every frame of `batch` and flushes once. On success returns what was
/// written, leaves the message frames' publish times in `delivered`, and
/// empties `batch`. On failure, or when the future is dropped mid-write (a
/// kick, a stall), `batch` still holds every frame of the attempt: none can be
/// known to have arrived, and all are counted as dropped.
async fn write_batch(
    sink: &mut WsSink,
    batch: &mut VecDeque<Outbound>,
    delivered: &mut Vec<PublishedAt>,
) -> Result<Written, WriteFailure> {
    for item in batch.iter() {
        // A clone of the frame's bytes is a reference-count bump.
        sink.feed(Message::Text(item.frame.clone()))
            .await
            .map_err(WriteFailure::Io)?;
    }
    sink.flush().await.map_err(WriteFailure::Io)?;
    let mut written = Written {
        frames: [0; ServerFrameType::ALL.len()],
        bytes: 0,
    };
    for item in batch.drain(..) {
        written.frames[item.frame_type.index()] += 1;
        written.bytes += item.frame.len();
        if let Some(at) = item.published_at {
            delivered.push(at);
        }
    }
    Ok(written)
}

/// Returns a burst's memory once the queue is drained, so an idle connection
/// costs little however busy it once was.
fn shrink_if_idle(batch: &mut VecDeque<Outbound>) {
    if batch.is_empty() && batch.capacity() > 64 {
        *batch = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn a_write_that_makes_no_progress_stalls_after_the_limit() {
        let progress = WriteProgress::new();
        let started = Instant::now();
        let result = unless_stalled(pin!(std::future::pending::<()>()), &progress, LIMIT).await;
        assert!(result.is_err());
        assert_eq!(started.elapsed(), LIMIT);
    }

    #[tokio::test(start_paused = true)]
    async fn progress_before_the_write_started_does_not_count() {
        let progress = WriteProgress::new();
        progress.record(100);
        let started = Instant::now();
        assert!(
            unless_stalled(pin!(std::future::pending::<()>()), &progress, LIMIT)
                .await
                .is_err()
        );
        assert_eq!(started.elapsed(), LIMIT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_write_that_keeps_progressing_is_never_cut() {
        let progress = WriteProgress::new();
        // Five limits long, accepting bytes every half limit.
        let write = {
            let progress = progress.clone();
            async move {
                for _ in 0..10 {
                    tokio::time::sleep(LIMIT / 2).await;
                    progress.record(1);
                }
                "written"
            }
        };
        assert_eq!(
            unless_stalled(pin!(write), &progress, LIMIT).await.ok(),
            Some("written")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_stops_progressing_stalls_a_limit_after_its_last_bytes() {
        let progress = WriteProgress::new();
        let write = {
            let progress = progress.clone();
            async move {
                tokio::time::sleep(LIMIT * 2 / 5).await;
                progress.record(1);
                std::future::pending::<()>().await;
            }
        };
        let started = Instant::now();
        assert!(unless_stalled(pin!(write), &progress, LIMIT).await.is_err());
        // The bytes at 0.4 limits are seen at the check at 0.5; the stall is
        // declared a whole limit after that check.
        assert_eq!(started.elapsed(), LIMIT * 3 / 2);
    }
}
#[cfg(test)]
mod size_probe {
    use super::*;
    fn size3<F, A, B, C, Fut>(_: &F) -> usize
    where
        F: Fn(A, B, C) -> Fut,
        Fut: Future,
    {
        std::mem::size_of::<Fut>()
    }
    fn size2<F, A, B, Fut>(_: &F) -> usize
    where
        F: Fn(A, B) -> Fut,
        Fut: Future,
    {
        std::mem::size_of::<Fut>()
    }
    #[test]
    fn probe() {
        eprintln!(
            "PROBE unless_stalled {}",
            size3(&unless_stalled::<std::future::Pending<()>>)
        );
        eprintln!("PROBE write_batch {}", size3(&write_batch));
        eprintln!("PROBE write {}", size2(&Writer::write));
        eprintln!("PROBE close {}", size2(&Writer::close));
        eprintln!("PROBE sleep {}", std::mem::size_of::<tokio::time::Sleep>());
        eprintln!("PROBE writer {}", std::mem::size_of::<Writer>());
        eprintln!("PROBE next {}", size3(&Outbox::next));
        eprintln!("PROBE abandoned {}", std::mem::size_of_val(&0));
    }
}
