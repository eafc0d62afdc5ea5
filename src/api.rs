//! The HTTP publish API for backends: `POST /api/publish`.
//!
//! A request goes through the same producer path as a WebSocket `publish`
//! frame: a message id, a `send` span (child of the request's SERVER span, which
//! continues the caller's `traceparent`), the broker, and every node's `process`.

use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::app::AppState;
use crate::protocol::{self, ErrorCode, HttpReply};

/// Why a publish request was refused; each maps to one status and a stable code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Content-Type must be application/json")]
    ContentType,
    #[error("body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{message}")]
    Invalid { code: ErrorCode, message: String },
    #[error("{0}")]
    BrokerUnavailable(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::ContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Invalid { .. } => StatusCode::BAD_REQUEST,
            Self::BrokerUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::ContentType => "unsupported_media_type",
            Self::TooLarge(_) => "too_large",
            Self::Invalid { code, .. } => code.as_str(),
            Self::BrokerUnavailable(_) => ErrorCode::BrokerUnavailable.as_str(),
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
        json(self.status(), body.to_json())
    }
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `POST /api/publish` with `{"room": "...", "data": <any JSON>}` → `202 {"id": "..."}`.
pub async fn publish(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    match accept(&state, &headers, body).await {
        Ok(id) => json(
            StatusCode::ACCEPTED,
            HttpReply::Accepted { id: &id }.to_json(),
        ),
        Err(e) => e.into_response(),
    }
}

async fn accept(state: &AppState, headers: &HeaderMap, body: Body) -> Result<String, ApiError> {
    if !is_json(headers) {
        return Err(ApiError::ContentType);
    }
    let limit = state.max_message_bytes();
    let bytes = to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::TooLarge(limit))?;
    let request = protocol::decode_http_publish(&bytes).map_err(|e| ApiError::Invalid {
        code: e.code,
        message: e.message,
    })?;
    // The middleware's SERVER span is current; the `send` span becomes its child.
    let parent = tracing::Span::current().context();
    state
        .publish(&parent, &request.room, request.data)
        .await
        .map_err(|e| ApiError::BrokerUnavailable(e.to_string()))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}
