//! The HTTP publish API for backends.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_with, within};

async fn post(app: &TestApp, content_type: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let response = within(
        reqwest::Client::new()
            .post(app.http_url("/api/publish"))
            .header("content-type", content_type)
            .body(body)
            .send(),
    )
    .await
    .expect("POST");
    let status = response.status().as_u16();
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "every answer is JSON"
    );
    let body = response.text().await.expect("body");
    (status, serde_json::from_str(&body).expect("a JSON body"))
}

#[tokio::test]
async fn a_backend_publish_reaches_websocket_subscribers() {
    let app = spawn_app().await;
    let mut sub = app.connect().await;
    sub.subscribe("alerts").await;
    let (status, body) = post(
        &app,
        "application/json; charset=utf-8",
        r#"{"room":"alerts","data":{"level":"high", "n":1}}"#,
    )
    .await;
    assert_eq!(status, 202);
    let id = body["id"].as_str().expect("a message id");
    let frame = sub.expect("message").await;
    assert_eq!(frame["id"], id);
    assert_eq!(frame["data"], json!({"level": "high", "n": 1}));

    let (status, _) = post(&app, "application/json", r#"{"room":"alerts","data":null}"#).await;
    assert_eq!(status, 202, "null is data too");
    assert_eq!(sub.expect("message").await["data"], Value::Null);
}

#[tokio::test]
async fn bad_requests_get_a_clear_status_and_code() {
    let app = spawn_app_with(|c| c.max_message_bytes = 1024).await;
    for (content_type, body, status, code) in [
        (
            "application/json",
            "not json".to_owned(),
            400,
            "invalid_message",
        ),
        (
            "application/json",
            r#"{"room":"r"}"#.to_owned(),
            400,
            "invalid_message",
        ),
        (
            "application/json",
            r#"{"data":1}"#.to_owned(),
            400,
            "invalid_message",
        ),
        (
            "application/json",
            r#"{"room":"no spaces","data":1}"#.to_owned(),
            400,
            "invalid_room",
        ),
        (
            "text/plain",
            r#"{"room":"r","data":1}"#.to_owned(),
            415,
            "unsupported_media_type",
        ),
        (
            "application/json",
            format!(r#"{{"room":"r","data":"{}"}}"#, "x".repeat(2000)),
            413,
            "too_large",
        ),
    ] {
        let (got_status, got) = post(&app, content_type, body).await;
        assert_eq!(
            (got_status, got["code"].as_str()),
            (status, Some(code)),
            "{got}"
        );
        assert!(got["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let m = app.metrics().await;
    assert_eq!(
        m.get("http_server_request_duration_seconds_count{http_request_method=\"POST\",http_response_status_code=\"400\",http_route=\"/api/publish\"}"),
        4.0
    );
}
