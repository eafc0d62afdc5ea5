//! Every HTTP route, and the middleware that observes them.

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus::{Encoder as _, TextEncoder};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::api;
use crate::demo;
use crate::state::AppState;
use crate::telemetry::propagation;
use crate::ws;

/// The routes of `--listen`. `/metrics` is among them only when there is no
/// admin listener to keep it apart (`with_metrics`).
pub(crate) fn router(state: AppState, with_metrics: bool) -> Router {
    let router = Router::new()
        .route("/", get(demo::page))
        .route("/demo.js", get(demo::script))
        .route("/ws", get(ws::upgrade::handler))
        .route("/api/publish", post(api::publish));
    let router = if with_metrics {
        router.route("/metrics", get(metrics))
    } else {
        router
    };
    probes(router)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// The routes of `--admin-listen`: what operators and orchestrators use.
pub(crate) fn admin_router(state: AppState) -> Router {
    probes(Router::new().route("/metrics", get(metrics)))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Liveness and readiness answer on both listeners: an orchestrator may probe
/// either, and the public one is what a load balancer checks.
fn probes(router: Router<AppState>) -> Router<AppState> {
    router
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// Prometheus text exposition of every OTel instrument and the process metrics.
async fn metrics(State(state): State<AppState>) -> Response {
    let families = state.registry().gather();
    let mut body = Vec::with_capacity(16 * 1024);
    let encoder = TextEncoder::new();
    if let Err(e) = encoder.encode(&families, &mut body) {
        tracing::error!(error = %e, "encoding metrics");
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not encode metrics",
        )
            .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// Liveness: the process is serving HTTP.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: not shutting down, and the broker can carry messages.
async fn readyz(State(state): State<AppState>) -> Response {
    if state.shutdown().is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else if !state.broker().is_ready() {
        (StatusCode::SERVICE_UNAVAILABLE, "broker unavailable\n").into_response()
    } else {
        "ready\n".into_response()
    }
}

/// The routes that get no span: scrapes and probes arrive every few seconds
/// from every Prometheus and orchestrator, and would bury real requests in the
/// trace backend. Their count and latency are still in the histogram.
const UNTRACED_ROUTES: [&str; 3] = ["/metrics", "/healthz", "/readyz"];

/// The `url.scheme` of every request: TLS terminates in front of wsgate, which
/// itself only speaks plain HTTP.
const URL_SCHEME: &str = "http";

/// Gives each request a SERVER span (continuing an incoming `traceparent`),
/// except scrapes and probes ([`UNTRACED_ROUTES`]), and an
/// `http.server.request.duration` observation. A WebSocket upgrade's span ends
/// at the 101; upgrades are not observed in the histogram, whose job is request
/// latency, not connection lifetime.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let traced = !route
        .as_deref()
        .is_some_and(|route| UNTRACED_ROUTES.contains(&route));
    let response = if traced {
        traced_request(method, route.as_deref(), req, next).await
    } else {
        next.run(req).await
    };
    let status = response.status();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        state.metrics().http_request(
            method,
            URL_SCHEME,
            route,
            status.as_u16(),
            started.elapsed(),
        );
    }
    response
}

/// Runs the request under its SERVER span.
async fn traced_request(
    method: &'static str,
    route: Option<&str>,
    req: Request,
    next: Next,
) -> Response {
    let name = match route {
        Some(route) => format!("{method} {route}"),
        None => method.to_owned(),
    };
    let span = tracing::info_span!(
        target: "wsgate::http",
        "HTTP request",
        otel.name = name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.route = route,
        url.path = req.uri().path(),
        url.scheme = URL_SCHEME,
        http.response.status_code = tracing::field::Empty,
    );
    // An invalid or absent traceparent leaves the span a new root.
    let _ = span.set_parent(propagation::extract_headers(req.headers()));
    let response = next.run(req).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response
}

/// The semantic conventions' method label: known methods, else `_OTHER`, so a
/// client cannot invent label values.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => "_OTHER",
    }
}
