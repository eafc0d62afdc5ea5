//! Connections that fail before a request is read are counted by reason, so a
//! reconnect storm's casualties show; the listen backlog is the flag's.

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, require_tool, spawn_app_with_args, within};

const TIMEOUT: &str = "websocket_connections_rejected_total{reason=\"handshake_timeout\"}";
const MALFORMED: &str = "websocket_connections_rejected_total{reason=\"malformed_request\"}";

/// Writes `bytes` on a fresh connection and returns what the server sent
/// before it closed the connection.
async fn send_and_read_to_end(app: &TestApp, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut answer = Vec::new();
    within(stream.read_to_end(&mut answer))
        .await
        .expect("read until the server closes");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn failed_handshakes_are_counted_by_reason_and_idle_keep_alives_are_not() {
    let app = spawn_app_with_args(&["--handshake-timeout", "300ms"]).await;

    // A keep-alive connection that served a request and then idled past the
    // timeout is closed as it should be: not a failure.
    let idle = send_and_read_to_end(&app, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(idle.starts_with("HTTP/1.1 200"), "{idle}");
    // So is a connection that never sent a byte (a TCP health check).
    assert_eq!(send_and_read_to_end(&app, b"").await, "");

    // Half a handshake, then nothing: cut off at the deadline, and counted.
    let half = send_and_read_to_end(&app, b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: web").await;
    assert_eq!(half, "", "closed without an answer");
    app.metrics_when("the stalled handshake counted", |m| m.get(TIMEOUT) == 1.0)
        .await;

    // Not HTTP at all (here, a TLS ClientHello's first bytes): 400, counted.
    let garbage = send_and_read_to_end(
        &app,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    )
    .await;
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
    let m = app
        .metrics_when("the garbage counted", |m| m.get(MALFORMED) == 1.0)
        .await;
    assert_eq!(m.get(TIMEOUT), 1.0, "only the stalled handshake timed out");
    assert_eq!(
        m.get("websocket_connections_rejected_total{reason=\"bad_handshake\"}"),
        0.0
    );
}

#[tokio::test]
async fn the_listen_backlog_is_the_flags() {
    let Some(ss) = require_tool("ss") else {
        return;
    };
    let app = spawn_app_with_args(&["--listen-backlog", "777"]).await;
    // For a listening socket, `ss` shows the backlog in the Send-Q column.
    let output = std::process::Command::new(ss)
        .args(["-ltnH", &format!("sport = :{}", app.addr.port())])
        .output()
        .expect("ss runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let send_q: Vec<&str> = text
        .lines()
        .filter_map(|line| line.split_whitespace().nth(2))
        .collect();
    assert_eq!(send_q, ["777"], "{text}");
}
