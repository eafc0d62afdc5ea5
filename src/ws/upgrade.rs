//! The WebSocket opening handshake (RFC 6455 §4.2), done here rather than by
//! axum's `WebSocketUpgrade`.
//!
//! Owning the upgrade gives the session the raw socket underneath the WebSocket
//! stream. It needs that to close cleanly after an oversize frame: the unread
//! remainder of the frame must be drained after the 1009 close frame, or the
//! kernel answers it with a TCP reset (see `session::linger`). axum's `WebSocket`
//! offers no way to reach the socket.

use axum::body::Body;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::progress::{Stamped, WriteProgress};
use super::session;
use crate::admission::Refusal;
use crate::state::AppState;
use crate::telemetry::RejectReason;

/// Bytes read per syscall and the read buffer's starting size. Small, because an
/// idle connection keeps it for life (2 KiB of the 7.5 KiB an idle connection
/// costs), and because tungstenite zero-fills the free part of it before every
/// read. Client frames are small; larger ones grow the buffer as needed.
const READ_BUFFER: usize = 2 * 1024;
/// Frames are fed into the write buffer and flushed once per batch; this is the
/// size at which tungstenite writes early, mid-batch. Not pre-allocated.
const WRITE_BUFFER: usize = 32 * 1024;

/// Why an upgrade request was refused, answered as an HTTP status before any
/// WebSocket exists.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpgradeError {
    #[error("WebSocket upgrade requires GET")]
    Method,
    #[error("WebSocket upgrade requires HTTP/1.1")]
    Version,
    #[error("missing `Connection: upgrade` and `Upgrade: websocket` headers")]
    NotUpgrade,
    #[error("unsupported Sec-WebSocket-Version; this server speaks 13")]
    WsVersion,
    #[error("missing or malformed Sec-WebSocket-Key")]
    Key,
    #[error("connection cannot be upgraded")]
    NotUpgradable,
    #[error("server is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    Refused(Refusal),
}

impl UpgradeError {
    fn reason(&self) -> RejectReason {
        match self {
            Self::ShuttingDown => RejectReason::ShuttingDown,
            Self::Refused(refusal) => refusal.reason(),
            _ => RejectReason::BadHandshake,
        }
    }
}

impl IntoResponse for UpgradeError {
    fn into_response(self) -> Response {
        let status = match self {
            Self::Method => StatusCode::METHOD_NOT_ALLOWED,
            Self::Version => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            Self::NotUpgrade | Self::Key => StatusCode::BAD_REQUEST,
            Self::WsVersion => StatusCode::UPGRADE_REQUIRED,
            Self::NotUpgradable => StatusCode::INTERNAL_SERVER_ERROR,
            Self::ShuttingDown | Self::Refused(Refusal::Capacity) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Refused(Refusal::Origin) => StatusCode::FORBIDDEN,
            Self::Refused(Refusal::Unauthorized(_)) => StatusCode::UNAUTHORIZED,
            Self::Refused(Refusal::PerIpLimit | Refusal::PerUserLimit) => {
                StatusCode::TOO_MANY_REQUESTS
            }
        };
        let mut response = (status, self.to_string()).into_response();
        match self {
            Self::WsVersion => {
                response.headers_mut().insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                );
            }
            Self::Refused(Refusal::Unauthorized(_)) => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

/// `GET /ws`: checks the handshake and capacity, answers 101 and starts a session.
pub(crate) async fn handler(State(state): State<AppState>, mut req: Request) -> Response {
    match accept(&state, &mut req) {
        Ok(response) => response,
        Err(e) => {
            tracing::debug!(error = %e, "websocket upgrade refused");
            state.metrics().connection_rejected(e.reason());
            e.into_response()
        }
    }
}

fn accept(state: &AppState, req: &mut Request) -> Result<Response, UpgradeError> {
    let key = check_handshake(req.method(), req.version(), req.headers())?;
    if state.shutdown().is_cancelled() {
        return Err(UpgradeError::ShuttingDown);
    }
    if req
        .extensions()
        .get::<hyper::upgrade::OnUpgrade>()
        .is_none()
    {
        return Err(UpgradeError::NotUpgradable);
    }
    // The admission holds the connection's slots (total and per IP) for as long
    // as the session lives, so the caps cannot be exceeded or leaked.
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let admitted = state
        .admission()
        .admit(req.uri(), req.headers(), peer)
        .map_err(UpgradeError::Refused)?;
    let subprotocol = crate::admission::offered_subprotocol(req.headers());
    let on_upgrade = hyper::upgrade::on(req);
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_frame_size(Some(state.max_message_bytes()))
        .max_message_size(Some(state.max_message_bytes()));
    let session_state = state.clone();
    state.sessions().spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(error = %e, "client left during the upgrade");
                return;
            }
        };
        let progress = WriteProgress::new();
        let io = Stamped::new(TokioIo::new(upgraded), progress.clone());
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        session::run(session_state, ws, admitted, progress).await;
    });
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, HeaderValue::from_static("upgrade"))
        .header(header::UPGRADE, HeaderValue::from_static("websocket"))
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        );
    if let Some(protocol) = subprotocol {
        response = response.header(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    let response = response
        .body(Body::empty())
        .map_err(|_| UpgradeError::NotUpgradable)?;
    Ok(response)
}

/// Validates the client's opening handshake and returns its key.
fn check_handshake(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
) -> Result<HeaderValue, UpgradeError> {
    if method != Method::GET {
        return Err(UpgradeError::Method);
    }
    if version != Version::HTTP_11 {
        return Err(UpgradeError::Version);
    }
    if !has_token(headers, header::CONNECTION, "upgrade")
        || !has_token(headers, header::UPGRADE, "websocket")
    {
        return Err(UpgradeError::NotUpgrade);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(UpgradeError::WsVersion);
    }
    // A key is 16 random bytes in base64: 24 characters.
    match headers.get(header::SEC_WEBSOCKET_KEY) {
        Some(key) if key.len() == 24 => Ok(key.clone()),
        _ => Err(UpgradeError::Key),
    }
}

/// Whether a comma-separated header contains `token`, ignoring ASCII case.
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    const GOOD: [(&str, &str); 4] = [
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[track_caller]
    fn check(method: Method, pairs: &[(&'static str, &'static str)], expected: Result<(), &str>) {
        let got = check_handshake(&method, Version::HTTP_11, &headers(pairs))
            .map(|_| ())
            .map_err(|e| format!("{e:?}"));
        assert_eq!(got, expected.map_err(str::to_owned));
    }

    #[test]
    fn handshake_rules() {
        check(Method::GET, &GOOD, Ok(()));
        check(Method::POST, &GOOD, Err("Method"));
        check(Method::GET, &GOOD[1..], Err("NotUpgrade"));
        check(Method::GET, &[GOOD[0], GOOD[2], GOOD[3]], Err("NotUpgrade"));
        check(
            Method::GET,
            &[GOOD[0], GOOD[1], ("sec-websocket-version", "8"), GOOD[3]],
            Err("WsVersion"),
        );
        check(Method::GET, &GOOD[..3], Err("Key"));
        check(
            Method::GET,
            &[GOOD[0], GOOD[1], GOOD[2], ("sec-websocket-key", "short")],
            Err("Key"),
        );
    }

    #[test]
    fn refusals_map_to_statuses() {
        assert_eq!(
            UpgradeError::Refused(Refusal::Capacity)
                .into_response()
                .status(),
            503
        );
        assert_eq!(
            UpgradeError::Refused(Refusal::Origin)
                .into_response()
                .status(),
            403
        );
        assert_eq!(
            UpgradeError::Refused(Refusal::PerIpLimit)
                .into_response()
                .status(),
            429
        );
        let unauthorized =
            UpgradeError::Refused(Refusal::Unauthorized(crate::auth::AuthError::Expired))
                .into_response();
        assert_eq!(unauthorized.status(), 401);
        assert_eq!(unauthorized.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(UpgradeError::ShuttingDown.into_response().status(), 503);
        let r = UpgradeError::WsVersion.into_response();
        assert_eq!(r.status(), 426);
        assert_eq!(r.headers()[header::SEC_WEBSOCKET_VERSION], "13");
    }

    #[test]
    fn accept_key_is_the_rfc_example() {
        assert_eq!(
            derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
