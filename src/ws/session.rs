//! One WebSocket connection: its read loop and how it ends. What each client
//! frame does is in `handle`.
//!
//! A session is two loops. The read loop (here, in the session's task) reads
//! client frames, handles them and queues replies in the connection's outbox.
//! The write loop (`writer`, its own task) drains the outbox to the socket. The
//! outbox is also where fan-out from other connections lands, and where every
//! decision to close is recorded: the first close request is the one the
//! connection-duration histogram reports.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use futures_util::stream::SplitStream;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::Ws;
use super::progress::WriteProgress;
use super::rate::{FrameRate, Verdict};
use super::writer::{WriteEnd, Writer, WsSink};
use crate::admission::Admitted;
use crate::auth::LEEWAY_SECS;
use crate::hub::ConnId;
use crate::outbox::{CloseRequest, Outbox};
use crate::state::AppState;
use crate::telemetry::{CloseReason, ErrorType};
use wsgate_protocol::room::RoomName;
use wsgate_protocol::{ClientFrameType, ErrorCode};

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
///
/// `progress` counts the bytes `ws`'s socket accepts. It comes in beside `ws`
/// rather than from it: borrowing `ws` here kept its whole 336 bytes in this
/// future's state for the connection's life.
pub(crate) async fn run(state: AppState, ws: Ws, admitted: Admitted, progress: WriteProgress) {
    let conn = state.next_conn_id();
    let limits = *state.limits();
    let outbox = Arc::new(Outbox::new(limits.queue, state.queued_bytes().clone()));
    let (sink, mut stream) = ws.split();
    let mut writer = tokio::spawn(
        Writer {
            sink,
            outbox: outbox.clone(),
            metrics: state.metrics().clone(),
            heartbeat_interval: limits.heartbeat_interval,
            write_timeout: limits.write_timeout,
            progress,
        }
        .run(),
    );
    let mut session = Session::open(state, conn, outbox, admitted);
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
    // On the heap, and only here: an array would live inside every session's
    // future, for the whole life of every connection.
    let mut buf = vec![0u8; 8192];
    let mut drained = 0;
    while drained < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, io.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
}

pub(super) struct Session {
    pub(super) state: AppState,
    pub(super) conn: ConnId,
    pub(super) outbox: Arc<Outbox>,
    /// Rooms this connection is subscribed to, within its tenant.
    pub(super) rooms: HashSet<RoomName>,
    /// Who the connection is, and its slots: held for the connection's life, so
    /// `--max-connections` and `--max-connections-per-ip` are released on drop.
    pub(super) admitted: Admitted,
    /// `--max-msgs-per-sec`, if set. Boxed: most gateways run without it, and
    /// every idle connection's future would carry it.
    rate: Option<Box<FrameRate>>,
    /// Set when a refresh moved the token's expiry, so the read loop re-arms
    /// its timer.
    pub(super) rearm: bool,
    /// Set when a resume's replay ends. No frame is read while one runs, so
    /// the client's pings wait in the socket: having taken the replay, the
    /// client was alive until it ended, and the heartbeat counts from then.
    pub(super) replayed: bool,
    /// The read loop stops handling frames: a close was requested.
    closing: bool,
    opened: Instant,
}

impl Session {
    fn open(state: AppState, conn: ConnId, outbox: Arc<Outbox>, admitted: Admitted) -> Self {
        state.metrics().connection_opened();
        tracing::debug!(conn, tenant = %admitted.identity.tenant, "connection opened");
        let rate = FrameRate::new(state.limits().max_msgs_per_sec).map(Box::new);
        Self {
            state,
            conn,
            outbox,
            rooms: HashSet::new(),
            admitted,
            rate,
            rearm: false,
            replayed: false,
            closing: false,
            opened: Instant::now(),
        }
    }

    /// When the connection's token expires (its `exp` plus the leeway);
    /// `None` without tokens. Derived from the identity rather than stored: a
    /// `refresh` replaces the identity, and the session stays smaller.
    fn expires_at(&self) -> Option<Instant> {
        self.admitted.identity.expires.map(expiry)
    }

    /// Whether the connection's token has expired, the leeway included. Asked
    /// of the wall clock, like the token's `exp`: an instant computed from it
    /// afresh would always lie a little ahead of the timer that fired for it.
    fn token_expired(&self) -> bool {
        self.admitted.identity.expires.is_some_and(|exp| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            now >= Duration::from_secs(exp.saturating_add(LEEWAY_SECS))
        })
    }

    /// When the read loop's timer should next fire: the heartbeat deadline or
    /// the token's expiry, whichever comes first.
    fn next_due(&self, last_seen: Instant) -> Instant {
        let heartbeat = last_seen + self.state.limits().heartbeat_timeout;
        self.expires_at().map_or(heartbeat, |at| at.min(heartbeat))
    }

    /// Reads until the connection is done. Returns the write loop's outcome too
    /// if it finished first (the caller awaits it otherwise).
    async fn read_loop(
        &mut self,
        stream: &mut SplitStream<Ws>,
        writer: &mut JoinHandle<(WsSink, WriteEnd)>,
    ) -> (ReadEnd, Option<Written>) {
        let shutdown = self.state.shutdown().clone();
        let mut last_seen = Instant::now();
        // One timer for the connection (heartbeat and token expiry), re-armed
        // only when it fires or a refresh moves the expiry: cheaper than
        // resetting a deadline on every frame.
        let timer = sleep_until(self.next_due(last_seen));
        tokio::pin!(timer);
        let mut written: Option<Written> = None;
        loop {
            tokio::select! {
                frame = stream.next() => {
                    last_seen = Instant::now();
                    match frame {
                        Some(Ok(message)) => {
                            if let Some(end) = self.on_message(message, last_seen).await {
                                return (end, written);
                            }
                            if std::mem::take(&mut self.replayed) {
                                last_seen = Instant::now();
                            }
                            if std::mem::take(&mut self.rearm) {
                                timer.as_mut().reset(self.next_due(last_seen));
                            }
                        }
                        Some(Err(e)) => return (self.on_read_error(e), written),
                        None => {
                            self.outbox.close(CloseRequest::peer(1006, CloseReason::ClientClose));
                            return (ReadEnd::Done, written);
                        }
                    }
                }
                () = shutdown.cancelled(), if !self.closing => {
                    self.outbox.close(CloseRequest::server(1001, "server shutting down", CloseReason::ServerShutdown));
                    self.closing = true;
                }
                result = &mut *writer, if written.is_none() => {
                    let sent_close = matches!(result, Ok((_, WriteEnd::CloseSent)));
                    written = Some(result);
                    if !sent_close {
                        // Nothing more can be written, so nothing more is worth reading.
                        return (ReadEnd::Done, written);
                    }
                    // Our close frame is out: read on briefly for the peer's reply.
                    self.closing = true;
                    timer.as_mut().reset(Instant::now() + CLOSE_WAIT);
                }
                () = &mut timer => {
                    if written.is_some() {
                        return (ReadEnd::Done, written);
                    }
                    let now = Instant::now();
                    if self.token_expired() {
                        self.expire();
                        // The client is alive and may still be sending: its
                        // input is drained after the close, never handled.
                        return (ReadEnd::Abandoned, written);
                    }
                    if last_seen + self.state.limits().heartbeat_timeout <= now {
                        if self.outbox.close(CloseRequest::server(1001, "heartbeat timeout", CloseReason::HeartbeatTimeout)) {
                            self.state.metrics().error(ErrorType::HeartbeatTimeout);
                        }
                        return (ReadEnd::Done, written);
                    }
                    // Nothing is due yet: frames arrived since the timer was
                    // armed, or the wall clock has not quite reached the
                    // token's expiry. Wait again, at least a millisecond.
                    let due = self.next_due(last_seen).max(now + Duration::from_millis(1));
                    timer.as_mut().reset(due);
                }
            }
        }
    }

    /// Handles one frame received at `now`; `Some` ends the read loop.
    async fn on_message(&mut self, message: Message, now: Instant) -> Option<ReadEnd> {
        let verdict = match (&message, &mut self.rate) {
            (Message::Close(_) | Message::Frame(_), _) | (_, None) => Verdict::Allowed,
            (_, Some(rate)) => rate.check(now),
        };
        if verdict == Verdict::Abusive {
            self.state.metrics().error(ErrorType::RateLimited);
            self.request_close(CloseRequest::server(
                1008,
                "rate limit exceeded",
                CloseReason::Policy,
            ));
            // The client is still sending: drain its input after the close.
            return Some(ReadEnd::Abandoned);
        }
        match message {
            Message::Text(text) => {
                self.on_text(text, verdict).await;
                None
            }
            Message::Binary(_) => {
                let started = std::time::Instant::now();
                if verdict == Verdict::Allowed {
                    self.refuse(
                        ErrorCode::UnsupportedBinary,
                        "binary frames are not supported; send JSON text frames",
                        None,
                    );
                } else {
                    self.rate_limited(verdict, None);
                }
                self.state
                    .metrics()
                    .message_received(ClientFrameType::Invalid, started.elapsed());
                None
            }
            // tungstenite answers pings itself, so a ping over the limit is
            // still answered; it counts, and a flood of them gets the client
            // closed. Any frame proves the peer alive.
            Message::Ping(_) | Message::Pong(_) => {
                self.rate_limited(verdict, None);
                None
            }
            Message::Frame(_) => None,
            Message::Close(frame) => {
                let code = frame.map_or(1005, |f| u16::from(f.code));
                self.outbox
                    .close(CloseRequest::peer(code, CloseReason::ClientClose));
                Some(ReadEnd::Done)
            }
        }
    }

    /// Records a close the session itself decided on (rate-limit abuse, an
    /// expired token) and stops handling frames.
    fn request_close(&mut self, request: CloseRequest) {
        self.closing = true;
        self.outbox.close(request);
    }

    /// Closes a connection whose token expired and was not refreshed.
    fn expire(&mut self) {
        self.admitted.identity.expires = None;
        self.request_close(CloseRequest::server(
            4001,
            "token expired",
            CloseReason::TokenExpired,
        ));
    }

    /// Accounts for a frame the rate limit refused (nothing for an allowed
    /// one): every refusal is counted, and at most one a second is answered.
    pub(super) fn rate_limited(&self, verdict: Verdict, id: Option<&str>) {
        let Verdict::Refused { notify } = verdict else {
            return;
        };
        if notify {
            self.refuse(
                ErrorCode::RateLimited,
                "too many frames per second; slow down (further refusals this second are not answered)",
                id,
            );
        } else {
            self.state.metrics().error(ErrorType::RateLimited);
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
}

/// The instant a token expiring at `exp` (Unix seconds) stops being valid,
/// the leeway included.
fn expiry(exp: u64) -> Instant {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let until = Duration::from_secs(exp.saturating_add(LEEWAY_SECS)).saturating_sub(now);
    Instant::now() + until
}

impl Drop for Session {
    /// Every exit path, panics included, leaves the rooms and records the close,
    /// so the active-connections gauge returns to exactly zero.
    fn drop(&mut self) {
        for room in std::mem::take(&mut self.rooms) {
            let key = self.key(room);
            self.state.hub().leave(&key, self.conn, || {});
            self.state.broker().release(&key);
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
