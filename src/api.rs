//! The HTTP publish API for backends: `POST /api/publish`.
//!
//! A request goes through the same producer path as a WebSocket `publish`
//! frame: a message id, a `send` span (child of the request's SERVER span, which
//! continues the caller's `traceparent`), the broker, and every node's `process`.
//!
//! Access: with `--api-key`, callers present `Authorization: Bearer <key>`. With
//! tokens enabled on `/ws` but no API key, the API refuses everyone (403):
//! securing the WebSocket side must not leave an open side door.

use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::app::AppState;
use subtle::ConstantTimeEq as _;

use crate::protocol::{self, ErrorCode, HttpReply};
use crate::room::{RoomKey, Tenant};

/// Why a publish request was refused; each maps to one status and a stable code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or wrong API key (Authorization: Bearer <key>)")]
    Unauthorized,
    #[error("the publish API is disabled: tokens are enabled on /ws but no --api-key is set")]
    Disabled,
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
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Disabled => StatusCode::FORBIDDEN,
            Self::ContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Invalid { .. } => StatusCode::BAD_REQUEST,
            Self::BrokerUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Disabled => "forbidden",
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

async fn accept(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<std::sync::Arc<str>, ApiError> {
    authorize(state, headers)?;
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
    let tenant = request.tenant.unwrap_or_else(Tenant::default_tenant);
    let key = RoomKey::new(tenant, request.room);
    state
        .publish(&parent, &key, request.data)
        .await
        .map_err(|e| ApiError::BrokerUnavailable(e.to_string()))
}

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    match state.api_key() {
        Some(key) => {
            let presented = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            // Constant time, so the comparison does not reveal how much of a
            // guess was right.
            if bool::from(presented.as_bytes().ct_eq(key.expose().as_bytes())) {
                Ok(())
            } else {
                Err(ApiError::Unauthorized)
            }
        }
        None if state.admission().tokens_enabled() => Err(ApiError::Disabled),
        None => Ok(()),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}
