//! One WebSocket connection: its read loop, the frames it handles, and how it ends.
//!
//! A session is two loops. The read loop (here, in the session's task) reads
//! client frames, handles them and queues replies in the connection's outbox.
//! The write loop (`writer`, its own task) drains the outbox to the socket. The
//! outbox is also where fan-out from other connections lands, and where every
//! decision to close is recorded: the first close request is the one the
//! connection-duration histogram reports.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::stream::SplitStream;
use opentelemetry::context::FutureExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use super::Ws;
use super::writer::{WriteEnd, Writer, WsSink};
use crate::app::AppState;
use crate::hub::{ConnId, Subscriber};
use crate::outbox::{CloseRequest, Outbound, Outbox, Pushed};
use crate::protocol::{self, ClientFrame, ClientFrameType, ErrorCode, Publish, Reply};
use crate::room::RoomName;
use crate::telemetry::{CloseReason, ErrorType, Origin, propagation, spans};

/// How long to wait for the peer's close frame after sending ours.
const CLOSE_WAIT: Duration = Duration::from_secs(3);
/// How long to drain a socket's unread input after closing it, so the kernel
/// sends FIN rather than a reset that could swallow the close frame.
const LINGER: Duration = Duration::from_secs(2);
/// The most unread input drained before giving up on a clean close.
const LINGER_BYTES: usize = 64 << 20;

/// How the read loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadEnd {
    /// The stream ended cleanly or the peer is gone; nothing more to read.
    Done,
    /// Reading stopped mid-frame (oversize or malformed input): the rest of the
    /// client's input is still in the socket and must be drained after the close.
    Abandoned,
}

/// Runs a connection from its upgrade to its last byte.
pub async fn run(state: AppState, ws: Ws, permit: OwnedSemaphorePermit) {
    let conn = state.next_conn_id();
    let limits = *state.limits();
    let outbox = Arc::new(Outbox::new(limits.send_queue, limits.slow_consumer));
    let (sink, mut stream) = ws.split();
    let mut writer = tokio::spawn(
        Writer {
            sink,
            outbox: outbox.clone(),
            metrics: state.metrics().clone(),
            heartbeat_interval: limits.heartbeat_interval,
            write_timeout: limits.heartbeat_timeout,
        }
        .run(),
    );
    let mut session = Session::open(state, conn, outbox, permit);
    let (read_end, written) = session.read_loop(&mut stream, &mut writer).await;
    let written = match written {
        Some(written) => written,
        None => writer.await,
    };
    let Ok((sink, write_end)) = written else {
        tracing::error!(conn, "connection writer panicked");
        session
            .outbox
            .close(CloseRequest::peer(1011, CloseReason::Error));
        return;
    };
    if read_end == ReadEnd::Abandoned
        && write_end == WriteEnd::CloseSent
        && let Ok(ws) = sink.reunite(stream)
    {
        linger(ws).await;
    }
}

/// What the write loop task returned.
type Written = Result<(WsSink, WriteEnd), tokio::task::JoinError>;

/// Half-closes the socket and reads until the client closes its side, so the
/// close frame is not destroyed by a reset caused by unread input.
async fn linger(mut ws: Ws) {
    let io = ws.get_mut();
    if io.shutdown().await.is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER;
    let mut buf = [0u8; 8192];
    let mut drained = 0;
    while drained < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, io.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
}

struct Session {
    state: AppState,
    conn: ConnId,
    outbox: Arc<Outbox>,
    rooms: HashSet<RoomName>,
    opened: Instant,
    /// Held for the connection's life: releases its `--max-connections` slot.
    _permit: OwnedSemaphorePermit,
}

impl Session {
    fn open(
        state: AppState,
        conn: ConnId,
        outbox: Arc<Outbox>,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        state.metrics().connection_opened();
        tracing::debug!(conn, "connection opened");
        Self {
            state,
            conn,
            outbox,
            rooms: HashSet::new(),
            opened: Instant::now(),
            _permit: permit,
        }
    }

    /// Reads until the connection is done. Returns the write loop's outcome too
    /// if it finished first (the caller awaits it otherwise).
    async fn read_loop(
        &mut self,
        stream: &mut SplitStream<Ws>,
        writer: &mut JoinHandle<(WsSink, WriteEnd)>,
    ) -> (ReadEnd, Option<Written>) {
        let heartbeat_timeout = self.state.limits().heartbeat_timeout;
        let shutdown = self.state.shutdown().clone();
        let mut last_seen = Instant::now();
        // One timer for the connection, re-armed only when it fires: cheaper
        // than resetting a deadline on every frame.
        let timer = sleep_until(last_seen + heartbeat_timeout);
        tokio::pin!(timer);
        let mut closing = false;
        let mut written: Option<Written> = None;
        loop {
            tokio::select! {
                frame = stream.next() => {
                    last_seen = Instant::now();
                    match frame {
                        Some(Ok(message)) => {
                            if let Some(end) = self.on_message(message).await {
                                return (end, written);
                            }
                        }
                        Some(Err(e)) => return (self.on_read_error(e), written),
                        None => {
                            self.outbox.close(CloseRequest::peer(1006, CloseReason::ClientClose));
                            return (ReadEnd::Done, written);
                        }
                    }
                }
                () = shutdown.cancelled(), if !closing => {
                    self.outbox.close(CloseRequest::server(1001, "server shutting down", CloseReason::ServerShutdown));
                    closing = true;
                }
                result = &mut *writer, if written.is_none() => {
                    let sent_close = matches!(result, Ok((_, WriteEnd::CloseSent)));
                    written = Some(result);
                    if !sent_close {
                        // Nothing more can be written, so nothing more is worth reading.
                        return (ReadEnd::Done, written);
                    }
                    // Our close frame is out: read on briefly for the peer's reply.
                    closing = true;
                    timer.as_mut().reset(Instant::now() + CLOSE_WAIT);
                }
                () = &mut timer => {
                    if written.is_some() {
                        return (ReadEnd::Done, written);
                    }
                    let due = last_seen + heartbeat_timeout;
                    if due > Instant::now() {
                        timer.as_mut().reset(due);
                        continue;
                    }
                    if self.outbox.close(CloseRequest::server(1001, "heartbeat timeout", CloseReason::HeartbeatTimeout)) {
                        self.state.metrics().error(ErrorType::HeartbeatTimeout);
                    }
                    return (ReadEnd::Done, written);
                }
            }
        }
    }

    /// Handles one frame; `Some` ends the read loop.
    async fn on_message(&mut self, message: Message) -> Option<ReadEnd> {
        match message {
            Message::Text(text) => {
                self.on_text(text).await;
                None
            }
            Message::Binary(_) => {
                let started = std::time::Instant::now();
                self.refuse(
                    ErrorCode::UnsupportedBinary,
                    "binary frames are not supported; send JSON text frames",
                    None,
                );
                self.state
                    .metrics()
                    .message_received(ClientFrameType::Invalid, started.elapsed());
                None
            }
            // tungstenite answers pings itself; any frame proves the peer alive.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => None,
            Message::Close(frame) => {
                let code = frame.map_or(1005, |f| u16::from(f.code));
                self.outbox
                    .close(CloseRequest::peer(code, CloseReason::ClientClose));
                Some(ReadEnd::Done)
            }
        }
    }

    fn on_read_error(&mut self, error: WsError) -> ReadEnd {
        let metrics = self.state.metrics();
        let (request, error_type, end) = match &error {
            WsError::Capacity(_) => (
                CloseRequest::server(1009, "message too large", CloseReason::TooLarge),
                Some(ErrorType::TooLarge),
                ReadEnd::Abandoned,
            ),
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => (
                CloseRequest::peer(1006, CloseReason::ClientClose),
                None,
                ReadEnd::Done,
            ),
            WsError::Protocol(_) => (
                CloseRequest::server(1002, "protocol error", CloseReason::ProtocolError),
                Some(ErrorType::Protocol),
                ReadEnd::Abandoned,
            ),
            WsError::Utf8(_) => (
                CloseRequest::server(
                    1007,
                    "invalid UTF-8 in a text frame",
                    CloseReason::ProtocolError,
                ),
                Some(ErrorType::Protocol),
                ReadEnd::Abandoned,
            ),
            WsError::Io(_) | WsError::ConnectionClosed | WsError::AlreadyClosed => (
                CloseRequest::peer(1006, CloseReason::Error),
                None,
                ReadEnd::Done,
            ),
            _ => (
                CloseRequest::server(1011, "internal error", CloseReason::Error),
                Some(ErrorType::Internal),
                ReadEnd::Abandoned,
            ),
        };
        tracing::debug!(conn = self.conn, error = %error, "read ended");
        if self.outbox.close(request)
            && let Some(error_type) = error_type
        {
            metrics.error(error_type);
        }
        end
    }

    async fn on_text(&mut self, text: Utf8Bytes) {
        let started = std::time::Instant::now();
        let frame_type = match protocol::decode(text.as_str()) {
            Ok(frame) => {
                let frame_type = frame.frame_type();
                self.on_frame(frame).await;
                frame_type
            }
            Err(e) => {
                self.refuse(e.code, &e.message, e.id.as_deref());
                e.frame_type
            }
        };
        self.state
            .metrics()
            .message_received(frame_type, started.elapsed());
    }

    async fn on_frame(&mut self, frame: ClientFrame<'_>) {
        match frame {
            ClientFrame::Subscribe { room } => self.subscribe(room).await,
            ClientFrame::Unsubscribe { room } => self.unsubscribe(room),
            ClientFrame::Publish(publish) => self.publish(publish).await,
            ClientFrame::Ping { id } => self.reply(&Reply::Pong { id: id.as_deref() }),
        }
    }

    async fn subscribe(&mut self, room: RoomName) {
        if self.rooms.contains(&room) {
            // Idempotent: the client is subscribed, and hears so again.
            self.reply(&Reply::Subscribed {
                room: room.as_str(),
            });
            return;
        }
        if let Err(e) = self.state.broker().acquire(&room).await {
            tracing::warn!(conn = self.conn, %room, error = %e, "subscribe failed");
            self.refuse(ErrorCode::BrokerUnavailable, &e.to_string(), None);
            return;
        }
        let confirmation = Reply::Subscribed {
            room: room.as_str(),
        };
        let frame = confirmation.encode();
        let subscriber = Subscriber {
            conn: self.conn,
            outbox: self.outbox.clone(),
        };
        let mut pushed = Pushed::Queued;
        self.state.hub().join(&room, subscriber, || {
            pushed = self.outbox.push(Outbound {
                frame,
                frame_type: confirmation.frame_type(),
                published_at: None,
            });
        });
        self.account(pushed);
        self.rooms.insert(room);
    }

    fn unsubscribe(&mut self, room: RoomName) {
        if !self.rooms.remove(&room) {
            let message = format!("not subscribed to room {room}");
            self.refuse(ErrorCode::NotSubscribed, &message, None);
            return;
        }
        let confirmation = Reply::Unsubscribed {
            room: room.as_str(),
        };
        let frame = confirmation.encode();
        let mut pushed = Pushed::Queued;
        self.state.hub().leave(&room, self.conn, || {
            pushed = self.outbox.push(Outbound {
                frame,
                frame_type: confirmation.frame_type(),
                published_at: None,
            });
        });
        self.account(pushed);
        self.state.broker().release(&room);
    }

    async fn publish(&mut self, publish: Publish<'_>) {
        let parent = propagation::extract_frame(
            publish.traceparent.as_deref(),
            publish.tracestate.as_deref(),
        );
        let tracer = self.state.tracer();
        let cx = tracer.publish(&parent, Origin::WebSocket(self.conn), &publish.room);
        let result = self
            .state
            .publish(&cx, &publish.room, publish.data)
            .with_context(cx.clone())
            .await;
        match result {
            Ok(message_id) => {
                spans::record_message_id(&cx, &message_id);
                if let Some(id) = publish.id.as_deref() {
                    self.reply(&Reply::Ack {
                        id,
                        room: publish.room.as_str(),
                    });
                }
            }
            Err(e) => {
                let code = ErrorCode::BrokerUnavailable;
                spans::record_error(&cx, code.as_str(), &e.to_string());
                self.refuse(code, &e.to_string(), publish.id.as_deref());
            }
        }
        spans::end(&cx);
    }

    /// Queues an error frame and counts the error.
    fn refuse(&self, code: ErrorCode, message: &str, id: Option<&str>) {
        self.state.metrics().error(code.into());
        self.reply(&Reply::Error { code, message, id });
    }

    fn reply(&self, reply: &Reply<'_>) {
        let pushed = self.outbox.push(Outbound {
            frame: reply.encode(),
            frame_type: reply.frame_type(),
            published_at: None,
        });
        self.account(pushed);
    }

    /// Counts a frame that could not be queued for this connection.
    fn account(&self, pushed: Pushed) {
        let metrics = self.state.metrics();
        match pushed {
            Pushed::Queued => {}
            Pushed::Dropped => metrics.undelivered(1, 0, 0),
            Pushed::Kicked => metrics.undelivered(0, 1, 0),
            Pushed::Closed => metrics.undelivered(0, 0, 1),
        }
    }
}

impl Drop for Session {
    /// Every exit path, panics included, leaves the rooms and records the close,
    /// so the active-connections gauge returns to exactly zero.
    fn drop(&mut self) {
        for room in self.rooms.drain() {
            self.state.hub().leave(&room, self.conn, || {});
            self.state.broker().release(&room);
        }
        let close = self
            .outbox
            .close_request()
            .unwrap_or(CloseRequest::peer(1006, CloseReason::Error));
        self.state
            .metrics()
            .connection_closed(self.opened.elapsed(), close.why, close.code);
        tracing::debug!(
            conn = self.conn,
            code = close.code,
            reason = close.why.as_str(),
            "connection closed"
        );
    }
}
