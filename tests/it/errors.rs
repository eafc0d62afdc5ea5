//! Every bad input gets a stable answer: an error frame, a close code or a status.

use serde_json::json;

use crate::helpers::{Closed, spawn_app, spawn_app_with, within};

#[tokio::test]
async fn every_error_code_is_answered_and_the_connection_stays_usable() {
    let app = spawn_app().await;
    let mut c = app.connect().await;

    c.send_text("not json").await;
    c.expect_error("invalid_message", None).await;
    c.send_text("[1, 2, 3]").await;
    c.expect_error("invalid_message", None).await;
    c.send_json(json!({"room": "lobby"})).await;
    c.expect_error("invalid_message", None).await;
    c.send_json(json!({"type": "subscribe", "id": "s1"})).await;
    c.expect_error("invalid_message", Some("s1")).await;
    c.send_json(json!({"type": "publish", "room": "lobby", "id": "p1"}))
        .await;
    c.expect_error("invalid_message", Some("p1")).await;
    c.send_json(json!({"type": "teleport", "id": "u1"})).await;
    c.expect_error("unknown_type", Some("u1")).await;
    c.send_json(json!({"type": "subscribe", "room": "no spaces"}))
        .await;
    c.expect_error("invalid_room", None).await;
    c.send_json(json!({"type": "subscribe", "room": "x".repeat(129)}))
        .await;
    c.expect_error("invalid_room", None).await;
    c.send_json(json!({"type": "publish", "room": "", "data": 1, "id": "p2"}))
        .await;
    c.expect_error("invalid_room", Some("p2")).await;
    c.send_json(json!({"type": "unsubscribe", "room": "never"}))
        .await;
    c.expect_error("not_subscribed", None).await;
    within(futures_util::SinkExt::send(
        &mut c.ws,
        tokio_tungstenite::tungstenite::Message::binary(vec![1u8, 2, 3]),
    ))
    .await
    .expect("send binary");
    c.expect_error("unsupported_binary", None).await;

    // Still a working connection.
    c.subscribe("lobby").await;
    c.publish_acked("lobby", json!("ok"), "last").await;

    let m = app
        .metrics_when("every error counted", |m| {
            m.get("websocket_errors_total{error_type=\"invalid_message\"}") == 5.0
        })
        .await;
    for (error_type, count) in [
        ("invalid_message", 5.0),
        ("unknown_type", 1.0),
        ("invalid_room", 3.0),
        ("not_subscribed", 1.0),
        ("unsupported_binary", 1.0),
        ("internal", 0.0),
    ] {
        assert_eq!(
            m.get(&format!(
                "websocket_errors_total{{error_type=\"{error_type}\"}}"
            )),
            count,
            "{error_type}"
        );
    }
}

#[tokio::test]
async fn an_oversize_frame_closes_with_1009_cleanly() {
    let app = spawn_app_with(|c| c.max_message_bytes = 1024).await;
    let mut c = app.connect().await;
    c.subscribe("r").await;
    // 1 MiB: far beyond the limit, so most of it is still unread when the server closes.
    c.send_text(&format!(
        r#"{{"type":"publish","room":"r","data":"{}"}}"#,
        "x".repeat(1 << 20)
    ))
    .await;
    assert_eq!(
        c.closed().await,
        Closed::Frame(1009, "message too large".into())
    );
    let m = app
        .metrics_when("connection closed", |m| {
            m.get("websocket_connections_active") == 0.0
        })
        .await;
    assert_eq!(
        m.get("websocket_errors_total{error_type=\"too_large\"}"),
        1.0
    );
    assert_eq!(
        m.get("websocket_connection_duration_seconds_count{close_code=\"1009\",close_reason=\"too_large\"}"),
        1.0
    );
}

#[tokio::test]
async fn a_message_just_under_the_limit_is_accepted() {
    let app = spawn_app_with(|c| c.max_message_bytes = 1024).await;
    let mut c = app.connect().await;
    // Padding in a field the server ignores: an `id` that long is refused.
    let frame = |n: usize| format!(r#"{{"type":"ping","pad":"{}"}}"#, "i".repeat(n));
    let fits = frame(1024 - frame(0).len());
    assert_eq!(fits.len(), 1024);
    c.send_text(&fits).await;
    c.expect("pong").await;
}

#[tokio::test]
async fn upgrades_beyond_max_connections_get_503_and_a_freed_slot_is_reused() {
    let app = spawn_app_with(|c| c.max_connections = 2).await;
    let first = app.connect().await;
    let _second = app.connect().await;
    let refused = tokio_tungstenite::connect_async(app.ws_url()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
        }
        other => panic!("expected HTTP 503, got {other:?}"),
    }
    first.close().await;
    // The slot comes back once the first session has fully ended.
    app.metrics_when("first connection released", |m| {
        m.get("websocket_connections_active") == 1.0
    })
    .await;
    let mut third = app.connect().await;
    third.send_json(json!({"type": "ping"})).await;
    third.expect("pong").await;
}

#[tokio::test]
async fn plain_http_on_the_websocket_route_is_refused_with_a_reason() {
    let app = spawn_app().await;
    let response = within(reqwest::get(app.http_url("/ws")))
        .await
        .expect("GET");
    assert_eq!(response.status(), 400);
    let body = response.text().await.expect("body");
    assert!(body.contains("Upgrade: websocket"), "{body}");
}
