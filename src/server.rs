//! The accept loop: TCP connections in, HTTP/1.1 (and upgrades) served by hyper.
//!
//! `axum::serve` would do, except that it gives hyper no timer, so hyper's
//! header-read timeout never fires and a client that sends half a request
//! (slowloris) holds its connection forever. Here each connection gets:
//! - a deadline for its request headers (`--handshake-timeout`), which also ends
//!   idle keep-alive connections;
//! - `TCP_NODELAY`, since frames are small and latency matters;
//! - its peer address as `ConnectInfo`, for per-IP limits.
//!
//! A connection that fails before hyper has read a request is counted in
//! `websocket_connections_rejected_total` (`handshake_timeout`,
//! `malformed_request`): in a reconnect storm these are the casualties that no
//! handler ever sees.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use crate::telemetry::{Metrics, RejectReason};

/// Binds a listening socket with a `backlog` of its own (`--listen-backlog`):
/// tokio's `TcpListener::bind` always asks for 128, which a reconnect storm
/// of thousands overflows, and the kernel then drops connection attempts
/// without a trace on the server. The kernel caps the value at
/// `net.core.somaxconn`. `SO_REUSEADDR` is set as tokio does, so a restart
/// binds while the old process's connections linger in TIME_WAIT.
pub(crate) fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops
/// accepting (new connections are refused) and lets in-flight requests finish.
/// Returns once every HTTP connection has closed; upgraded WebSocket sessions
/// are not HTTP connections any more and are tracked by the caller.
/// Connections that fail before their first request are counted in `failures`
/// (the public listener's; the admin listener's are only logged).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    header_timeout: Duration,
    failures: Option<Metrics>,
) {
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before
                    // accept: neither is fatal; back off briefly on the former.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone().map_request(
            move |mut request: axum::http::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            },
        ));
        let shutdown = shutdown.clone();
        let failures = failures.clone();
        let (stream, progress) = Watched::new(stream);
        connections.spawn(async move {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            // From here on the socket is either closed or a WebSocket's, whose
            // reads and writes need not be watched any more.
            let midway = progress.swap(DONE, Ordering::Relaxed) == MIDWAY;
            log_end(result, peer, midway, failures.as_ref());
        });
    }
    // Dropping the listener refuses new connections from here on.
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Logs how a connection ended and counts the handshakes that failed.
/// `midway`: bytes arrived since the server last wrote (see [`Watched`]).
///
/// How hyper 1.x reports the ways a connection ends (`proto::h1::conn`):
/// - the header-read timeout is an error whose `is_timeout()` holds
///   (`HeaderTimeout`), sent without an answer, *whether or not* a request
///   had begun: an idle keep-alive connection, or one that never sent a byte,
///   ends exactly like a stalled handshake. Only `midway` tells them apart,
///   and only the stalled handshake is a failure;
/// - bytes that are not an HTTP/1 request head are a parse error
///   (`is_parse()`), answered 400 (431, 414 for oversize heads) first;
/// - a peer that closes while idle ends with `Ok(())`; anything else (a
///   reset or an EOF mid-request, a failed write) is the peer going away or an
///   I/O error, not a refused handshake: logged only.
fn log_end(
    result: Result<(), hyper::Error>,
    peer: SocketAddr,
    midway: bool,
    failures: Option<&Metrics>,
) {
    let Err(e) = result else {
        return;
    };
    let reason = if e.is_timeout() {
        midway.then_some(RejectReason::HandshakeTimeout)
    } else if e.is_parse() {
        Some(RejectReason::MalformedRequest)
    } else {
        None
    };
    match (reason, failures) {
        (Some(reason), Some(metrics)) => {
            metrics.connection_rejected(reason);
            tracing::debug!(%peer, error = %e, reason = reason.as_str(), "handshake failed");
        }
        _ => tracing::debug!(%peer, error = %e, "HTTP connection ended"),
    }
}

/// A connection's socket that notes whether bytes arrived since the server
/// last wrote to it: a request under way. hyper's header-read timeout reports
/// an idle keep-alive and a stalled request head alike; this is what tells
/// them apart. Once the HTTP connection is over (`DONE`, set when hyper hands
/// the socket to a WebSocket), reads and writes only load the state: the
/// session's reader and writer tasks do not bounce a written cache line.
struct Watched {
    stream: TcpStream,
    progress: Arc<AtomicU8>,
}

/// Nothing read since the last write (or ever).
const IDLE: u8 = 0;
/// Bytes read since the last write: a request is under way.
const MIDWAY: u8 = 1;
/// The HTTP connection has ended; stop watching.
const DONE: u8 = 2;

impl Watched {
    fn new(stream: TcpStream) -> (Self, Arc<AtomicU8>) {
        let progress = Arc::new(AtomicU8::new(IDLE));
        let watched = Self {
            stream,
            progress: progress.clone(),
        };
        (watched, progress)
    }

    /// Moves `from` → `to`; any other state is left alone.
    fn step(&self, from: u8, to: u8) {
        if self.progress.load(Ordering::Relaxed) == from {
            // A compare-exchange, so a concurrent `DONE` is never undone.
            let _ = self
                .progress
                .compare_exchange(from, to, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    fn wrote(&self, result: &Poll<io::Result<usize>>) {
        if matches!(result, Poll::Ready(Ok(n)) if *n > 0) {
            self.step(MIDWAY, IDLE);
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.step(IDLE, MIDWAY);
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.wrote(&result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.wrote(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
