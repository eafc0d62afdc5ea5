//! History and recovery on one node: offsets, resuming with `since`, the
//! `history` request, idempotent publish ids, and what a node without history
//! says.

use serde_json::{Value, json};

use crate::helpers::{Client, TestApp, spawn_app_with_args, within};

/// A gateway keeping `size` messages per room, with `extra` flags.
async fn with_history(size: u32, extra: &[&str]) -> TestApp {
    let size = size.to_string();
    let mut args = vec!["--history-size", size.as_str()];
    args.extend_from_slice(extra);
    spawn_app_with_args(&args).await
}

async fn subscribe(client: &mut Client, room: &str, since: Option<(u64, &str)>) -> Value {
    client.subscribe_since(room, since).await
}

async fn publish_n(client: &mut Client, room: &str, from: u64, n: u64) {
    client.publish_numbered(room, from, n).await;
}

async fn messages(client: &mut Client, n: usize) -> Vec<(u64, u64)> {
    client.numbered_messages(n).await
}

fn position(subscribed: &Value) -> (u64, String) {
    (
        subscribed["offset"].as_u64().expect("offset"),
        subscribed["epoch"].as_str().expect("epoch").to_owned(),
    )
}

#[tokio::test]
async fn a_resuming_subscriber_gets_exactly_what_it_missed_then_live_messages() {
    let app = with_history(100, &[]).await;
    let mut publisher = app.connect().await;
    publish_n(&mut publisher, "r", 1, 3).await;

    let mut reader = app.connect().await;
    let subscribed = subscribe(&mut reader, "r", None).await;
    let (offset, epoch) = position(&subscribed);
    assert_eq!(offset, 3, "the room's latest offset");
    assert!(subscribed.get("recovered").is_none(), "nothing was asked");
    publish_n(&mut publisher, "r", 4, 2).await;
    assert_eq!(messages(&mut reader, 2).await, [(4, 4), (5, 5)]);
    reader.close().await;

    publish_n(&mut publisher, "r", 6, 10).await;
    let mut back = app.connect().await;
    let resumed = subscribe(&mut back, "r", Some((5, &epoch))).await;
    assert_eq!(resumed["recovered"], true, "{resumed}");
    assert_eq!(position(&resumed), (15, epoch.clone()));
    let replayed = messages(&mut back, 10).await;
    assert_eq!(replayed, (6..=15).map(|i| (i, i)).collect::<Vec<_>>());
    publish_n(&mut publisher, "r", 16, 1).await;
    assert_eq!(messages(&mut back, 1).await, [(16, 16)], "then live");

    let metrics = app
        .metrics_when("the recovery counted", |m| {
            m.get_or_zero(r#"websocket_recoveries_total{result="recovered"}"#) == 1.0
        })
        .await;
    assert_eq!(metrics.get("websocket_recovered_messages_total"), 10.0);
    assert_eq!(metrics.get("wsgate_history_messages"), 16.0);
    assert!(metrics.get("wsgate_history_bytes") > 0.0);
}

#[tokio::test]
async fn resuming_past_trimmed_history_says_not_recovered() {
    let app = with_history(5, &[]).await;
    let mut publisher = app.connect().await;
    let mut reader = app.connect().await;
    let (_, epoch) = position(&subscribe(&mut reader, "r", None).await);
    reader.close().await;
    publish_n(&mut publisher, "r", 1, 8).await;

    let mut back = app.connect().await;
    let resumed = subscribe(&mut back, "r", Some((0, &epoch))).await;
    assert_eq!(
        resumed["recovered"], false,
        "offsets 1-3 were trimmed: {resumed}"
    );
    publish_n(&mut publisher, "r", 9, 1).await;
    assert_eq!(
        messages(&mut back, 1).await,
        [(9, 9)],
        "live messages only, no partial replay"
    );

    // Resuming from an offset still stored succeeds.
    let mut other = app.connect().await;
    let resumed = subscribe(&mut other, "r", Some((4, &epoch))).await;
    assert_eq!(resumed["recovered"], true, "{resumed}");
    assert_eq!(
        messages(&mut other, 5).await,
        (5..=9).map(|i| (i, i)).collect::<Vec<_>>()
    );

    let metrics = app.metrics().await;
    assert_eq!(
        metrics.get(r#"wsgate_history_trimmed_total{reason="size"}"#),
        4.0
    );
    assert_eq!(
        metrics.get(r#"websocket_recoveries_total{result="not_recovered"}"#),
        1.0
    );
}

#[tokio::test]
async fn an_epoch_from_before_a_restart_is_not_recovered() {
    let before = with_history(100, &[]).await;
    let mut client = before.connect().await;
    let (_, epoch) = position(&subscribe(&mut client, "r", None).await);
    publish_n(&mut client, "r", 1, 2).await;
    before.stop().await;

    let after = with_history(100, &[]).await;
    let mut client = after.connect().await;
    // Offset 2 exists again here, so only the epoch can tell it apart.
    publish_n(&mut client, "r", 1, 3).await;
    let resumed = subscribe(&mut client, "r", Some((2, &epoch))).await;
    assert_eq!(resumed["recovered"], false, "{resumed}");
    assert_ne!(resumed["epoch"], epoch.as_str(), "a new start, a new epoch");
}

/// A publisher keeps publishing while a subscriber resumes with a backlog far
/// larger than its send queue: every offset arrives once, in order, across
/// the seam between replay and live, and the replay never trips the
/// slow-consumer policy.
#[tokio::test]
async fn a_publish_racing_a_long_resume_leaves_no_gap_and_no_duplicate() {
    // The backlog (3,000) is three times the send queue (1,024 frames).
    let app = with_history(
        5_000,
        &["--send-queue", "1024", "--slow-consumer", "disconnect"],
    )
    .await;
    let mut reader = app.connect().await;
    let (_, epoch) = position(&subscribe(&mut reader, "r", None).await);
    reader.close().await;
    let mut publisher = app.connect().await;
    publish_n(&mut publisher, "r", 1, 3_000).await;

    let racing = tokio::spawn(async move {
        publish_n(&mut publisher, "r", 3_001, 1_000).await;
        publisher
    });
    let mut back = app.connect().await;
    let resumed = subscribe(&mut back, "r", Some((0, &epoch))).await;
    assert_eq!(resumed["recovered"], true, "{resumed}");
    let got = messages(&mut back, 4_000).await;
    let expected: Vec<(u64, u64)> = (1..=4_000).map(|i| (i, i)).collect();
    assert!(
        got == expected,
        "first difference: {:?}",
        got.iter().zip(&expected).find(|(a, b)| a != b)
    );
    within(racing).await.expect("publisher task");
    let metrics = app.metrics().await;
    assert_eq!(
        metrics.get_or_zero(r#"websocket_messages_dropped_total{reason="slow_consumer"}"#),
        0.0
    );
    assert_eq!(
        metrics.get_or_zero(r#"websocket_errors_total{error_type="slow_consumer"}"#),
        0.0
    );
}

#[tokio::test]
async fn a_retried_publish_id_is_acknowledged_again_and_delivered_once() {
    let app = with_history(100, &[]).await;
    let mut reader = app.connect().await;
    subscribe(&mut reader, "r", None).await;
    let mut publisher = app.connect().await;
    let frame = json!({"type": "publish", "room": "r", "data": {"n": 1}, "id": "once"});
    publisher.send_json(frame.clone()).await;
    let first = publisher.expect("ack").await;
    publisher.send_json(frame).await;
    let again = publisher.expect("ack").await;
    assert_eq!(first["offset"], 1);
    assert_eq!(again["offset"], 1, "the same message");
    publish_n(&mut publisher, "r", 2, 1).await;
    assert_eq!(
        messages(&mut reader, 2).await,
        [(1, 1), (2, 2)],
        "delivered once"
    );

    // The same id for other data is refused, not silently dropped.
    publisher
        .send_json(json!({"type": "publish", "room": "r", "data": {"n": 99}, "id": "once"}))
        .await;
    publisher.expect_error("id_conflict", Some("once")).await;

    // Another user's (here: the HTTP API's) ids are its own.
    let response = within(
        reqwest::Client::new()
            .post(app.http_url("/api/publish"))
            .header("content-type", "application/json")
            .body(r#"{"room":"r","data":{"n":3},"id":"once"}"#)
            .send(),
    )
    .await
    .expect("POST");
    assert_eq!(response.status(), 202);
    let body: Value = serde_json::from_str(&response.text().await.expect("body")).expect("JSON");
    assert_eq!(body["offset"], 3, "{body}");
    assert_eq!(messages(&mut reader, 1).await, [(3, 3)]);
}

#[tokio::test]
async fn history_requests_read_without_subscribing() {
    let app = with_history(100, &[]).await;
    let mut client = app.connect().await;
    publish_n(&mut client, "r", 1, 5).await;
    client
        .send_json(json!({"type": "history", "room": "r", "limit": 2}))
        .await;
    let newest = client.expect("history").await;
    assert_eq!(newest["offset"], 5);
    let epoch = newest["epoch"].as_str().expect("epoch").to_owned();
    let offsets = |frame: &Value| -> Vec<u64> {
        frame["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| m["offset"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(offsets(&newest), [4, 5], "the newest, oldest first");
    assert_eq!(newest["messages"][1]["data"], json!({"n": 5}));

    client
        .send_json(json!({"type": "history", "room": "r", "since": {"offset": 1, "epoch": epoch}, "limit": 3}))
        .await;
    assert_eq!(offsets(&client.expect("history").await), [2, 3, 4]);

    client
        .send_json(json!({"type": "history", "room": "empty"}))
        .await;
    let empty = client.expect("history").await;
    assert_eq!(empty["offset"], 0);
    assert_eq!(empty["messages"], json!([]));
}

#[tokio::test]
async fn without_history_there_are_no_offsets_and_since_is_not_recovered() {
    let app = spawn_app_with_args(&[]).await;
    let mut client = app.connect().await;
    let subscribed = subscribe(&mut client, "r", None).await;
    assert_eq!(subscribed, json!({"type": "subscribed", "room": "r"}));
    client
        .send_json(json!({"type": "publish", "room": "r", "data": 1, "id": "a"}))
        .await;
    let message = client.expect("message").await;
    assert!(message.get("offset").is_none(), "{message}");
    let ack = client.expect("ack").await;
    assert!(ack.get("offset").is_none(), "{ack}");

    let mut back = app.connect().await;
    let resumed = subscribe(&mut back, "r", Some((1, "anything"))).await;
    assert_eq!(
        resumed,
        json!({"type": "subscribed", "room": "r", "recovered": false})
    );
    back.send_json(json!({"type": "history", "room": "r"}))
        .await;
    assert_eq!(
        back.expect("history").await,
        json!({"type": "history", "room": "r", "messages": []})
    );
    let metrics = app.metrics().await;
    assert_eq!(
        metrics.get(r#"websocket_recoveries_total{result="not_recovered"}"#),
        1.0
    );
}
