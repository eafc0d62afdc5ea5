//! The HTTP publish API for backends.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, poll_until, spawn_app, spawn_app_with, spawn_app_with_args, within};

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
        m.get("http_server_request_duration_seconds_count{http_request_method=\"POST\",http_response_status_code=\"400\",http_route=\"/api/publish\",url_scheme=\"http\"}"),
        4.0
    );
}

/// Writes `head` (and whatever body bytes it includes) on a fresh connection,
/// never writes more, and returns everything the server sent until it closed.
async fn send_and_stall(app: &TestApp, head: &str) -> String {
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    within(stream.read_to_end(&mut answer))
        .await
        .expect("read until the server closes");
    String::from_utf8_lossy(&answer).into_owned()
}

#[track_caller]
fn check_answer(answer: &str, status: &str, code: &str) {
    assert!(
        answer.starts_with(&format!("HTTP/1.1 {status}")),
        "{answer}"
    );
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let body: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"));
    assert_eq!(body["code"], code, "{answer}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
}

fn http_count(m: &crate::helpers::Metrics, status: u16) -> f64 {
    m.get_or_zero(&format!(
        "http_server_request_duration_seconds_count{{http_request_method=\"POST\",http_response_status_code=\"{status}\",http_route=\"/api/publish\",url_scheme=\"http\"}}"
    ))
}

#[tokio::test]
async fn a_body_that_stalls_gets_408_and_loses_its_connection() {
    let app = spawn_app_with_args(&["--request-timeout", "300ms"]).await;
    let started = tokio::time::Instant::now();
    let answer = send_and_stall(
        &app,
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 60000\r\n\r\n{\"room\":\"r\",\"data\":\"",
    )
    .await;
    check_answer(&answer, "408", "request_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "cut off by --request-timeout, not the test's deadline"
    );
    let m = app.metrics().await;
    assert_eq!(http_count(&m, 408), 1.0);
}

#[tokio::test]
async fn only_the_length_limit_is_413_and_other_body_errors_are_400() {
    let app = spawn_app_with_args(&["--max-message-bytes", "1024"]).await;
    // Announcing too much is enough: nothing is read, nothing waited for.
    let answer = send_and_stall(
        &app,
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 100000\r\n\r\n",
    )
    .await;
    check_answer(&answer, "413", "too_large");
    // A chunked body that breaks off with a malformed chunk size.
    let answer = send_and_stall(
        &app,
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n5\r\n{\"roo\r\nzz\r\n",
    )
    .await;
    check_answer(&answer, "400", "invalid_message");
    let m = app.metrics().await;
    assert_eq!((http_count(&m, 413), http_count(&m, 400)), (1.0, 1.0));
}

#[tokio::test]
async fn publishes_beyond_the_concurrency_cap_get_503_with_retry_after() {
    let app =
        spawn_app_with_args(&["--max-api-concurrency", "1", "--request-timeout", "60s"]).await;
    // One request holds the only slot: its body never finishes.
    let mut holder = TcpStream::connect(app.addr).await.expect("connect");
    holder
        .write_all(
            b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{",
        )
        .await
        .expect("write");
    let client = reqwest::Client::new();
    let publish = || {
        client
            .post(app.http_url("/api/publish"))
            .header("content-type", "application/json")
            .body(r#"{"room":"r","data":1}"#)
            .send()
    };
    // Until the holder's request reaches the handler, others still get in.
    let refused = poll_until(async || {
        let response = within(publish()).await.expect("POST");
        match response.status().as_u16() {
            503 => Ok(response),
            202 => Err("the holder to take the slot".to_owned()),
            other => panic!("unexpected status {other}"),
        }
    })
    .await;
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = serde_json::from_str(&refused.text().await.expect("body")).expect("JSON");
    assert_eq!(body["code"], "overloaded", "{body}");
    let m = app.metrics().await;
    assert_eq!(http_count(&m, 503), 1.0);

    // The holder gives up: its slot comes back.
    drop(holder);
    poll_until(
        async || match within(publish()).await.expect("POST").status().as_u16() {
            202 => Ok(()),
            503 => Err("the slot to come back".to_owned()),
            other => panic!("unexpected status {other}"),
        },
    )
    .await;
}
