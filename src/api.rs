//! The HTTP publish API for backends: `POST /api/publish`.
//!
//! A request goes through the same producer path as a WebSocket `publish`
//! frame: a message id, a `send` span (child of the request's SERVER span, which
//! continues the caller's `traceparent`), the broker, and every node's `process`.
//!
//! Access: with `--api-key`, callers present `Authorization: Bearer <key>`. With
//! tokens enabled on `/ws` but no API key, the API refuses everyone (403):
//! securing the WebSocket side must not leave an open side door.
//!
//! Bounds: a body larger than `--max-message-bytes` is refused as soon as its
//! `Content-Length` or its bytes say so (413); a body must arrive within
//! `--request-timeout` (408); at most `--max-api-concurrency` requests are
//! handled at once (503 with `Retry-After`). A request is let into the
//! handler's slots only after its key and headers passed, so callers without
//! the key cannot use up the slots.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::publish::{ClientId, PublishError, Published};
use crate::state::AppState;
use crate::telemetry::Publisher;
use wsgate_protocol::room::{RoomKey, Tenant};
use wsgate_protocol::{self as protocol, ErrorCode, HttpReply};

/// Why a publish request was refused; each maps to one status and a stable code.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("missing or wrong API key (Authorization: Bearer <key>)")]
    Unauthorized,
    #[error("the publish API is disabled: tokens are enabled on /ws but no --api-key is set")]
    Disabled,
    #[error("Content-Type must be application/json")]
    ContentType,
    #[error("body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the request body did not arrive within {0:?} (--request-timeout)")]
    Timeout(Duration),
    #[error("could not read the request body: {0}")]
    Body(String),
    #[error("too many publish requests at once; retry shortly")]
    Overloaded,
    #[error("{message}")]
    Invalid { code: ErrorCode, message: String },
    #[error("{0}")]
    BrokerUnavailable(String),
    #[error("{0}")]
    IdConflict(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Disabled => StatusCode::FORBIDDEN,
            Self::ContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Body(_) | Self::Invalid { .. } => StatusCode::BAD_REQUEST,
            Self::BrokerUnavailable(_) | Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Self::IdConflict(_) => StatusCode::CONFLICT,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Disabled => "forbidden",
            Self::ContentType => "unsupported_media_type",
            Self::TooLarge(_) => "too_large",
            Self::Timeout(_) => "request_timeout",
            Self::Body(_) => ErrorCode::InvalidMessage.as_str(),
            Self::Overloaded => "overloaded",
            Self::Invalid { code, .. } => code.as_str(),
            Self::BrokerUnavailable(_) => ErrorCode::BrokerUnavailable.as_str(),
            Self::IdConflict(_) => ErrorCode::IdConflict.as_str(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let body = HttpReply::Error {
            code: self.code(),
            message: &message,
        };
        let mut response = json(self.status(), body.to_json());
        let headers = response.headers_mut();
        match self {
            Self::Overloaded => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            // The body was not read to its end, so the connection cannot
            // carry another request: say so, rather than leave the client
            // to find out.
            Self::TooLarge(_) | Self::Timeout(_) | Self::Body(_) => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `POST /api/publish` with `{"room": "...", "data": <any JSON>}` → `202 {"id": "..."}`
/// (and `"offset"` when the room has history).
pub(crate) async fn publish(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match accept(&state, &headers, body).await {
        Ok(published) => json(
            StatusCode::ACCEPTED,
            HttpReply::Accepted {
                id: &published.id,
                offset: published.offset,
            }
            .to_json(),
        ),
        Err(e) => e.into_response(),
    }
}

async fn accept(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Published, ApiError> {
    authorize(state, headers)?;
    if !is_json(headers) {
        return Err(ApiError::ContentType);
    }
    let limit = state.max_message_bytes();
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::TooLarge(limit));
    }
    let api = state.api();
    let _permit = api.enter().ok_or(ApiError::Overloaded)?;
    let bytes = tokio::time::timeout(api.body_timeout, read_body(body, limit, announced))
        .await
        .map_err(|_| ApiError::Timeout(api.body_timeout))??;
    let request = protocol::decode_http_publish(&bytes).map_err(|e| ApiError::Invalid {
        code: e.code,
        message: e.message,
    })?;
    // The middleware's SERVER span is current; the `send` span becomes its child.
    let parent = tracing::Span::current().context();
    let tenant = request.tenant.unwrap_or_else(Tenant::default_tenant);
    let key = RoomKey::new(tenant, request.room);
    let client_id = request.id.as_deref().map(|id| ClientId {
        kind: "http",
        user: "",
        id,
    });
    state
        .publish(&parent, Publisher::Http, &key, request.data, client_id)
        .await
        .map_err(|e| match e {
            PublishError::Broker(e) => ApiError::BrokerUnavailable(e.to_string()),
            e @ PublishError::IdConflict { .. } => ApiError::IdConflict(e.to_string()),
        })
}

/// The body, up to `limit` bytes. Only exceeding the limit is `TooLarge`;
/// any other failure (a broken chunked encoding, a peer gone mid-body) is the
/// request's fault too, but a different one.
async fn read_body(body: Body, limit: usize, announced: Option<u64>) -> Result<Bytes, ApiError> {
    // `announced` was checked against `limit`, so this allocation is bounded.
    let mut buf = BytesMut::with_capacity(announced.map_or(0, |n| n as usize));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::Body(e.to_string()))?;
        if buf.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let api = state.api();
    if !api.has_key() {
        return if state.admission().tokens_enabled() {
            Err(ApiError::Disabled)
        } else {
            Ok(())
        };
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if api.key_matches(presented) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}
