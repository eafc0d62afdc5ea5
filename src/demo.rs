//! The demo page at `/`, and its script at `/demo.js`; both embedded in the
//! binary.
//!
//! The script is `clients/js/demo/demo.ts` built with the client library and
//! the OpenTelemetry web SDK into `src/demo.bundle.js` (committed, so `cargo
//! build` needs no Node; `./scripts/test` checks it matches a fresh build). It
//! connects by itself, subscribes to `?room=` (default `lobby`), shows every
//! message with its trace id (a link into Jaeger when `--jaeger-ui-url` is
//! set), publishes what the user types, and publishes `?autopublish=TEXT` once
//! subscribed, which makes demos and browser tests one URL. Its spans go to
//! `--demo-otlp-endpoint` when set: a flag, never a query parameter, so no
//! link can send a visitor's spans elsewhere.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

const PAGE: &str = include_str!("demo.html");
const SCRIPT: &str = include_str!("demo.bundle.js");
const JAEGER_UI_URL: &str = "__WSGATE_JAEGER_UI_URL__";
const OTLP_ENDPOINT: &str = "__WSGATE_DEMO_OTLP_ENDPOINT__";

/// The page with its configuration filled in, as `<meta>` attribute values.
/// The configuration admits only URLs without quotes or angle brackets, and
/// `&` is escaped here, so a value is always exactly one attribute's text.
pub(crate) fn render(jaeger_ui_url: Option<&str>, otlp_endpoint: Option<&str>) -> String {
    let attribute = |value: Option<&str>| value.unwrap_or("").replace('&', "&amp;");
    PAGE.replace(JAEGER_UI_URL, &attribute(jaeger_ui_url))
        .replace(OTLP_ENDPOINT, &attribute(otlp_endpoint))
}

/// `GET /`.
pub(crate) async fn page(State(state): State<AppState>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        state.demo_page().to_owned(),
    )
        .into_response()
}

/// `GET /demo.js`.
pub(crate) async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        SCRIPT,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_is_filled_in_or_left_empty() {
        let page = render(
            Some("http://localhost:16686"),
            Some("http://localhost:4318/a?b=1&c=2"),
        );
        assert!(
            page.contains(r#"<meta name="wsgate:jaeger-ui-url" content="http://localhost:16686">"#)
        );
        assert!(page.contains(
            r#"<meta name="wsgate:demo-otlp-endpoint" content="http://localhost:4318/a?b=1&amp;c=2">"#
        ));
        let empty = render(None, None);
        assert!(empty.contains(r#"<meta name="wsgate:jaeger-ui-url" content="">"#));
        assert!(empty.contains(r#"<meta name="wsgate:demo-otlp-endpoint" content="">"#));
        assert!(!empty.contains("__WSGATE_"));
    }

    #[test]
    fn the_script_is_the_generated_bundle() {
        assert!(SCRIPT.starts_with("// Generated from clients/js/demo/demo.ts"));
    }
}
