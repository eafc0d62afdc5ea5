//! The accept loop: TCP connections in, HTTP/1.1 (and upgrades) served by hyper.
//!
//! `axum::serve` would do, except that it gives hyper no timer, so hyper's
//! header-read timeout never fires and a client that sends half a request
//! (slowloris) holds its connection forever. Here each connection gets:
//! - a deadline for its request headers (`--handshake-timeout`), which also ends
//!   idle keep-alive connections;
//! - `TCP_NODELAY`, since frames are small and latency matters;
//! - its peer address as `ConnectInfo`, for per-IP limits.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops
/// accepting (new connections are refused) and lets in-flight requests finish.
/// Returns once every HTTP connection has closed; upgraded WebSocket sessions
/// are not HTTP connections any more and are tracked by the caller.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    header_timeout: Duration,
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
        connections.spawn(async move {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => log_end(result, peer),
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    log_end(connection.await, peer);
                }
            }
        });
    }
    // Dropping the listener refuses new connections from here on.
    drop(listener);
    connections.close();
    connections.wait().await;
}

fn log_end(result: Result<(), hyper::Error>, peer: SocketAddr) {
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}
