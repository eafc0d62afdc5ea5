//! Nobody gets in where they don't belong, and no client can hurt the rest.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::helpers::{TestApp, hs256_token, post_publish, spawn_app_with_args, unix_now, within};

const SECRET: &str = "integration-test-secret";

fn token(claims: Value) -> String {
    hs256_token(SECRET, &claims)
}

fn user(sub: &str) -> Value {
    json!({"sub": sub, "exp": unix_now() + 300})
}

async fn secured() -> TestApp {
    spawn_app_with_args(&["--jwt-secret", SECRET, "--api-key", "backend-key"]).await
}

/// The HTTP status of a refused upgrade.
#[track_caller]
fn status(result: Result<crate::helpers::Client, WsError>) -> u16 {
    match result {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected an HTTP refusal, got a connection"),
    }
}

#[tokio::test]
async fn tokens_are_checked_before_the_upgrade() {
    let app = secured().await;
    let none = json!({"alg": "none"});
    let unsigned = {
        use base64::Engine as _;
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.", b64(&none), b64(&user("mallory")))
    };
    let wrong_key = hs256_token("guess", &user("mallory"));
    for (what, query) in [
        ("missing", "/ws".to_owned()),
        ("malformed", "/ws?token=garbage".to_owned()),
        ("wrongly signed", format!("/ws?token={wrong_key}")),
        (
            "expired",
            format!(
                "/ws?token={}",
                token(json!({"sub": "a", "exp": unix_now() - 60}))
            ),
        ),
        (
            "not yet valid",
            format!(
                "/ws?token={}",
                token(json!({"sub": "a", "exp": unix_now() + 300, "nbf": unix_now() + 120}))
            ),
        ),
        ("alg none", format!("/ws?token={unsigned}")),
        (
            "no sub",
            format!("/ws?token={}", token(json!({"exp": unix_now() + 300}))),
        ),
    ] {
        assert_eq!(
            status(app.try_connect_with(&query, |_| {}).await),
            401,
            "{what}"
        );
    }
    let m = app.metrics().await;
    assert_eq!(
        m.get("websocket_connections_rejected_total{reason=\"unauthorized\"}"),
        7.0
    );
    assert_eq!(m.get("websocket_connections_opened_total"), 0.0);

    // A valid token works from each of the three places a client can put it.
    let good = token(user("alice"));
    let mut by_query = app
        .try_connect_with(&format!("/ws?token={good}"), |_| {})
        .await
        .expect("?token=");
    by_query.subscribe("lobby").await;
    let by_header = app
        .try_connect_with("/ws", |r| {
            let value = HeaderValue::from_str(&format!("Bearer {good}")).unwrap();
            r.headers_mut().insert("authorization", value);
        })
        .await;
    by_header.expect("Authorization: Bearer");
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut request = format!("ws://{}/ws", app.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&format!("wsgate.v1, wsgate.token.{good}")).unwrap(),
    );
    let (_ws, response) = within(tokio_tungstenite::connect_async(request))
        .await
        .expect("subprotocol token");
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "wsgate.v1",
        "the server selects wsgate.v1"
    );
}

#[tokio::test]
async fn room_permissions_are_enforced_with_forbidden() {
    let app = secured().await;
    let limited = token(json!({"sub": "bob", "exp": unix_now() + 300,
        "rooms": {"subscribe": ["public:*"], "publish": ["public:chat"]}}));
    let mut c = app
        .try_connect_with(&format!("/ws?token={limited}"), |_| {})
        .await
        .unwrap();
    c.subscribe("public:news").await;
    c.send_json(json!({"type": "subscribe", "room": "private"}))
        .await;
    c.expect_error("forbidden", None).await;
    c.send_json(json!({"type": "publish", "room": "public:news", "data": 1, "id": "p"}))
        .await;
    c.expect_error("forbidden", Some("p")).await;
    c.publish_acked("public:chat", json!("hi"), "ok").await;
    let m = app.metrics().await;
    assert_eq!(
        m.get("websocket_errors_total{error_type=\"forbidden\"}"),
        2.0
    );
}

#[tokio::test]
async fn two_tenants_with_the_same_room_never_see_each_other() {
    let app = secured().await;
    let connect = |tenant: &'static str| {
        let app = &app;
        async move {
            let t = token(json!({"sub": "u", "exp": unix_now() + 300, "tenant": tenant}));
            app.try_connect_with(&format!("/ws?token={t}"), |_| {})
                .await
                .unwrap()
        }
    };
    let mut acme = connect("acme").await;
    let mut globex = connect("globex").await;
    acme.subscribe("lobby").await;
    globex.subscribe("lobby").await;
    acme.publish_acked("lobby", json!("acme only"), "a").await;
    globex
        .publish_acked("lobby", json!("globex only"), "g")
        .await;
    // Each hears only its own tenant's message; the pong proves nothing else is queued.
    for (client, mine) in [(&mut acme, "acme only"), (&mut globex, "globex only")] {
        client.send_json(json!({"type": "ping", "id": "end"})).await;
        assert_eq!(
            client.recv().await,
            json!({"type": "pong", "id": "end"}),
            "{mine}"
        );
    }
    // The HTTP API names the tenant in the body.
    let response = reqwest::Client::new()
        .post(app.http_url("/api/publish"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer backend-key")
        .body(r#"{"room":"lobby","data":"to acme","tenant":"acme"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(acme.expect("message").await["data"], "to acme");
    globex.send_json(json!({"type": "ping", "id": "end"})).await;
    assert_eq!(globex.recv().await, json!({"type": "pong", "id": "end"}));
}

#[tokio::test]
async fn cross_site_origins_are_refused_and_the_public_url_allowed() {
    let app = spawn_app_with_args(&[
        "--allowed-origins",
        "https://app.example.com",
        "--public-url",
        "https://chat.example.com",
    ])
    .await;
    let with_origin = |origin: &'static str| {
        move |r: &mut tokio_tungstenite::tungstenite::handshake::client::Request| {
            r.headers_mut()
                .insert("origin", HeaderValue::from_static(origin));
        }
    };
    assert_eq!(
        status(
            app.try_connect_with("/ws", with_origin("https://evil.example"))
                .await
        ),
        403
    );
    assert_eq!(
        status(app.try_connect_with("/ws", with_origin("null")).await),
        403
    );
    app.try_connect_with("/ws", with_origin("https://app.example.com"))
        .await
        .expect("listed origin");
    app.try_connect_with("/ws", with_origin("https://chat.example.com"))
        .await
        .expect("the gateway's own origin (its demo page), from --public-url");
    app.try_connect_with("/ws", |_| {})
        .await
        .expect("no Origin: not a browser");
    let m = app.metrics().await;
    assert_eq!(
        m.get("websocket_connections_rejected_total{reason=\"origin\"}"),
        2.0
    );
}

#[tokio::test]
async fn the_publish_api_needs_the_key_and_is_closed_by_default_when_tokens_are_on() {
    let post = |app: &TestApp, auth: Option<&'static str>| {
        let base = app.http_url("");
        async move {
            let headers: Vec<(&str, &str)> =
                auth.map(|a| ("authorization", a)).into_iter().collect();
            post_publish(&base, r#"{"room":"r","data":1}"#, &headers).await
        }
    };
    let app = secured().await;
    assert_eq!(post(&app, None).await, 401);
    assert_eq!(post(&app, Some("Bearer wrong")).await, 401);
    assert_eq!(post(&app, Some("Bearer backend-key-and-more")).await, 401);
    assert_eq!(post(&app, Some("Bearer backend-ke")).await, 401, "a prefix");
    assert_eq!(post(&app, Some("Bearer b")).await, 401, "a one-byte prefix");
    assert_eq!(post(&app, Some("Bearer ")).await, 401, "empty");
    assert_eq!(post(&app, Some("backend-key")).await, 401, "not Bearer");
    assert_eq!(post(&app, Some("Bearer backend-key")).await, 202);
    let tokens_only = spawn_app_with_args(&["--jwt-secret", SECRET]).await;
    assert_eq!(post(&tokens_only, Some("Bearer anything")).await, 403);
    let open = spawn_app_with_args(&[]).await;
    assert_eq!(
        post(&open, None).await,
        202,
        "no tokens, no key: an open development setup"
    );
}

#[tokio::test]
async fn per_ip_and_room_caps() {
    let app = spawn_app_with_args(&[
        "--max-connections-per-ip",
        "2",
        "--max-rooms-per-connection",
        "2",
    ])
    .await;
    let mut a = app.connect().await;
    let _b = app.connect().await;
    assert_eq!(status(app.try_connect_with("/ws", |_| {}).await), 429);
    a.subscribe("one").await;
    a.subscribe("two").await;
    a.send_json(json!({"type": "subscribe", "room": "three"}))
        .await;
    a.expect_error("too_many_rooms", None).await;
    a.unsubscribe("one").await;
    a.subscribe("three").await;
    let m = app.metrics().await;
    assert_eq!(
        m.get("websocket_connections_rejected_total{reason=\"per_ip_limit\"}"),
        1.0
    );
    assert_eq!(
        m.get("websocket_errors_total{error_type=\"too_many_rooms\"}"),
        1.0
    );
}

#[tokio::test]
async fn a_slowloris_handshake_is_cut_off() {
    let app = spawn_app_with_args(&["--handshake-timeout", "300ms"]).await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    // Half a request, then nothing.
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 1024];
    // The server closes the connection (EOF, possibly after a 408 answer).
    loop {
        let n = within(stream.read(&mut buf)).await.unwrap_or(0);
        if n == 0 {
            break;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut off by the timeout, not the test deadline"
    );
    // An idle keep-alive connection is closed the same way.
    let mut idle = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    within(idle.read_to_end(&mut response)).await.unwrap();
    assert!(String::from_utf8_lossy(&response).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_token_client_closing_normally_is_not_an_error() {
    let app = secured().await;
    let good = token(user("carol"));
    let mut c = app
        .try_connect_with(&format!("/ws?token={good}"), |_| {})
        .await
        .unwrap();
    c.subscribe("x").await;
    c.close().await;
    let m = app
        .metrics_when("closed", |m| m.get("websocket_connections_active") == 0.0)
        .await;
    assert_eq!(
        m.get("websocket_connection_duration_seconds_count{close_code=\"1000\",close_reason=\"client_close\"}"),
        1.0
    );
}
