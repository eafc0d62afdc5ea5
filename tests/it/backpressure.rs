//! Slow consumers and silent peers: one bad client never holds up the others.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use wsgate::SlowConsumerPolicy;

use crate::helpers::{Client, SilentClient, TestApp, spawn_app_with, within};

const MESSAGES: usize = 400;
/// Large enough that MESSAGES of them overflow the kernel's socket buffers
/// (several MiB on loopback) of a client that never reads.
const PAYLOAD: usize = 48 * 1024;

/// A fast subscriber and a stalled one in one room; a publisher floods it.
/// Checks the fast one got everything in order; returns all three clients.
async fn flood_past_a_stalled_reader(app: &TestApp) -> (Client, Client, Client) {
    let mut fast = app.connect().await;
    fast.subscribe("flood").await;
    let mut stalled = app.connect().await;
    stalled.subscribe("flood").await;
    let mut publisher = app.connect().await;
    let filler = "x".repeat(PAYLOAD);
    let sender = tokio::spawn(async move {
        for seq in 0..MESSAGES {
            publisher
                .send_json(json!({"type": "publish", "room": "flood", "data": {"seq": seq, "fill": filler}}))
                .await;
        }
        publisher
    });
    for seq in 0..MESSAGES {
        let frame = fast.expect("message").await;
        assert_eq!(
            frame["data"]["seq"], seq,
            "the fast reader must get every message in order"
        );
    }
    let publisher = within(sender).await.expect("publisher");
    (fast, stalled, publisher)
}

#[tokio::test]
async fn disconnect_policy_closes_a_stalled_reader_and_spares_the_fast_one() {
    let app = spawn_app_with(|c| {
        c.send_queue = 16;
        c.slow_consumer = SlowConsumerPolicy::Disconnect;
    })
    .await;
    let (mut fast, _stalled, _publisher) = flood_past_a_stalled_reader(&app).await;
    let m = app
        .metrics_when("the stalled reader is disconnected", |m| {
            m.get("websocket_errors_total{error_type=\"slow_consumer\"}") == 1.0
                && m.get("websocket_connections_active") == 2.0
        })
        .await;
    assert_eq!(
        m.get("websocket_connection_duration_seconds_count{close_code=\"1008\",close_reason=\"slow_consumer\"}"),
        1.0
    );
    assert!(m.get("websocket_messages_dropped_total{reason=\"slow_consumer\"}") >= 1.0);
    assert_eq!(
        m.get("websocket_messages_dropped_total{reason=\"queue_full\"}"),
        0.0
    );
    // The fast reader is untouched.
    fast.send_json(json!({"type": "ping", "id": "still-here"}))
        .await;
    assert_eq!(
        fast.recv().await,
        json!({"type": "pong", "id": "still-here"})
    );
}

#[tokio::test]
async fn drop_policy_drops_and_counts_for_a_stalled_reader_and_keeps_it_connected() {
    let app = spawn_app_with(|c| {
        c.send_queue = 16;
        c.slow_consumer = SlowConsumerPolicy::Drop;
    })
    .await;
    let (_fast, mut stalled, _publisher) = flood_past_a_stalled_reader(&app).await;
    let m = app.metrics().await;
    let dropped = m.get("websocket_messages_dropped_total{reason=\"queue_full\"}");
    assert!(
        dropped >= 1.0,
        "a stalled reader must have dropped messages"
    );
    assert_eq!(
        m.get("websocket_errors_total{error_type=\"slow_consumer\"}"),
        0.0
    );
    assert_eq!(m.get("websocket_connections_active"), 3.0);
    // The stalled reader wakes up: it gets an in-order prefix with gaps, and what
    // it missed is exactly what was counted as dropped.
    let mut received = 0;
    let mut last = -1i64;
    loop {
        let frame = stalled.recv().await;
        let seq = frame["data"]["seq"].as_i64().expect("a message");
        assert!(seq > last, "order is kept even with gaps");
        last = seq;
        received += 1;
        if seq == MESSAGES as i64 - 1 || received + dropped as usize == MESSAGES {
            break;
        }
    }
    assert_eq!(
        received + dropped as usize,
        MESSAGES,
        "delivered + dropped = published"
    );
}

#[tokio::test]
async fn a_silent_peer_is_closed_after_the_heartbeat_timeout_while_a_live_one_stays() {
    let app = spawn_app_with(|c| {
        c.heartbeat_interval = Duration::from_millis(100);
        c.heartbeat_timeout = Duration::from_millis(500);
    })
    .await;
    // A live client: its library answers the server's pings while it reads.
    let live = app.connect().await;
    let (mut live_tx, mut live_rx) = live.ws.split();
    let (frames_tx, mut frames) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(message)) = live_rx.next().await {
            if let Message::Text(text) = message {
                let _ = frames_tx.send(text.to_string());
            }
        }
    });
    // A silent client: never writes, so never answers a ping.
    let silent = SilentClient::connect(app.addr).await;
    let connected_at = tokio::time::Instant::now();
    let m = app
        .metrics_when("the silent session times out and ends", |m| {
            m.get("websocket_connections_active") == 1.0
        })
        .await;
    assert!(connected_at.elapsed() >= Duration::from_millis(400));
    assert_eq!(
        m.get("websocket_errors_total{error_type=\"heartbeat_timeout\"}"),
        1.0
    );
    assert_eq!(
        m.get("websocket_connection_duration_seconds_count{close_code=\"1001\",close_reason=\"heartbeat_timeout\"}"),
        1.0
    );
    // What the server sent before it gave up: pings, then its close frame.
    let sent = silent.frames_until_eof().await;
    let (opcode, payload) = sent.last().expect("frames");
    assert_eq!(*opcode, 0x8, "the last frame is a close: {sent:?}");
    assert_eq!(&payload[..2], &1001u16.to_be_bytes());
    assert_eq!(&payload[2..], b"heartbeat timeout");
    assert!(
        sent[..sent.len() - 1].iter().all(|(op, _)| *op == 0x9),
        "pings before it"
    );
    // The live one has been idle far longer than the timeout and still works.
    within(live_tx.send(Message::text(r#"{"type":"ping","id":"alive"}"#)))
        .await
        .expect("send");
    let pong = within(frames.recv()).await.expect("pong");
    assert_eq!(pong, r#"{"type":"pong","id":"alive"}"#);
}
