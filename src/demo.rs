//! The demo page at `/`: one self-contained HTML file, embedded in the binary.
//!
//! It connects by itself, subscribes to `?room=` (default `lobby`), shows every
//! message with its trace id (a link into Jaeger when `--jaeger-ui-url` is set),
//! publishes what the user types, and publishes `?autopublish=TEXT` once
//! subscribed, which makes demos and browser tests one URL.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

const PAGE: &str = include_str!("demo.html");
const PLACEHOLDER: &str = "__WSGATE_JAEGER_UI_URL__";

/// The page with the Jaeger UI base URL filled in. The URL was validated by
/// the configuration (no quotes, no angle brackets), so it is safe inside the
/// page's JavaScript string literal.
pub(crate) fn render(jaeger_ui_url: Option<&str>) -> String {
    PAGE.replace(PLACEHOLDER, jaeger_ui_url.unwrap_or(""))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jaeger_url_is_filled_in_or_left_empty() {
        assert!(
            render(Some("http://localhost:16686"))
                .contains(r#"const JAEGER_UI = "http://localhost:16686";"#)
        );
        assert!(render(None).contains(r#"const JAEGER_UI = "";"#));
        assert!(!render(None).contains(PLACEHOLDER));
    }
}
