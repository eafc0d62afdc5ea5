//! History in NATS JetStream: offsets and epochs shared by every node, a
//! client resuming on another node than the one it left, a node restart that
//! loses nothing, and a publish retried with the same id.

use serde_json::{Value, json};

use crate::helpers::{Client, Gateway, NatsServer, within};

/// A `nats-server -js` with its store in a fresh directory.
async fn jetstream() -> Option<(NatsServer, tempfile::TempDir)> {
    let store = tempfile::tempdir().expect("a temporary directory");
    let dir = store.path().to_str().expect("UTF-8 path").to_owned();
    let nats = NatsServer::start_with(&["-js", "-sd", &dir]).await?;
    Some((nats, store))
}

async fn node(nats: &NatsServer, id: &str) -> Gateway {
    node_with(nats, &["--node-id", id, "--history-size", "100"]).await
}

/// A node on `nats` with `flags` (the history flags among them), once ready.
async fn node_with(nats: &NatsServer, flags: &[&str]) -> Gateway {
    let url = nats.url();
    let mut args = vec!["--nats-url", url.as_str()];
    args.extend(flags);
    let gw = Gateway::start(&[("OTEL_TRACES_EXPORTER", "none")], &args).await;
    gw.readiness_becomes(200).await;
    gw
}

/// Publishes `data` straight onto a NATS `subject`, bypassing every gateway,
/// with `id` as its `Nats-Msg-Id`.
async fn publish_raw(raw: &async_nats::Client, subject: &str, id: &str, data: String) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    raw.publish_with_headers(subject.to_owned(), headers, data.into())
        .await
        .expect("publish to NATS");
}

async fn subscribe(client: &mut Client, room: &str, since: Option<(u64, &str)>) -> Value {
    client.subscribe_since(room, since).await
}

/// Publishes `n` messages numbered from `from`; returns their acks' offsets.
async fn publish_n(client: &mut Client, room: &str, from: u64, n: u64) -> Vec<u64> {
    let offsets = client.publish_numbered(room, from, n).await;
    offsets
        .into_iter()
        .map(|o| o.expect("an offset in the ack"))
        .collect()
}

async fn messages(client: &mut Client, n: usize) -> Vec<(u64, u64)> {
    client.numbered_messages(n).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_another_node_and_a_restart_loses_nothing() {
    let Some((nats, _store)) = jetstream().await else {
        return;
    };
    let a = node(&nats, "node-a").await;
    let b = node(&nats, "node-b").await;

    let mut reader = a.connect().await;
    let subscribed = subscribe(&mut reader, "r", None).await;
    let epoch = subscribed["epoch"].as_str().expect("an epoch").to_owned();
    let mut publisher = b.connect().await;
    let first = publish_n(&mut publisher, "r", 1, 3).await;
    let live = messages(&mut reader, 3).await;
    assert_eq!(
        live,
        first
            .iter()
            .zip(1..)
            .map(|(o, n)| (*o, n))
            .collect::<Vec<_>>(),
        "live frames carry the acks' offsets"
    );
    assert!(first.windows(2).all(|w| w[0] < w[1]), "{first:?}");
    let last_seen = live[2].0;
    reader.close().await;

    // Missed while away, published on node A itself.
    let mut other = a.connect().await;
    let missed = publish_n(&mut other, "r", 4, 5).await;

    // Resumes on node B.
    let mut back = b.connect().await;
    let resumed = subscribe(&mut back, "r", Some((last_seen, &epoch))).await;
    assert_eq!(resumed["recovered"], true, "{resumed}");
    assert_eq!(resumed["epoch"], epoch.as_str(), "one epoch for every node");
    let replayed = messages(&mut back, 5).await;
    assert_eq!(
        replayed,
        missed
            .iter()
            .zip(4..)
            .map(|(o, n)| (*o, n))
            .collect::<Vec<_>>()
    );
    let after = publish_n(&mut publisher, "r", 9, 1).await;
    assert_eq!(messages(&mut back, 1).await, [(after[0], 9)], "then live");

    // A restarted node keeps the stream's history and epoch.
    drop(b);
    let b = node(&nats, "node-b").await;
    let mut again = b.connect().await;
    let resumed = subscribe(&mut again, "r", Some((last_seen, &epoch))).await;
    assert_eq!(resumed["recovered"], true, "{resumed}");
    let everything: Vec<u64> = missed.iter().chain(&after).copied().collect();
    let replayed: Vec<u64> = messages(&mut again, 6).await.iter().map(|m| m.0).collect();
    assert_eq!(replayed, everything);

    // An epoch the stream never had is not recovered.
    let mut stale = a.connect().await;
    let resumed = subscribe(&mut stale, "r", Some((last_seen, "0"))).await;
    assert_eq!(resumed["recovered"], false, "{resumed}");
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_publish_is_stored_once_on_any_node() {
    let Some((nats, _store)) = jetstream().await else {
        return;
    };
    let a = node(&nats, "node-a").await;
    let b = node(&nats, "node-b").await;
    let mut reader = b.connect().await;
    subscribe(&mut reader, "r", None).await;
    let mut publisher = a.connect().await;
    let frame = json!({"type": "publish", "room": "r", "data": {"n": 1}, "id": "once"});
    publisher.send_json(frame.clone()).await;
    let first = publisher.expect("ack").await;
    publisher.send_json(frame).await;
    let again = publisher.expect("ack").await;
    assert_eq!(first["offset"], again["offset"], "the same message");
    publisher
        .send_json(json!({"type": "publish", "room": "r", "data": {"n": 2}, "id": "once"}))
        .await;
    publisher.expect_error("id_conflict", Some("once")).await;
    let next = publish_n(&mut publisher, "r", 3, 1).await;
    let got = messages(&mut reader, 2).await;
    assert_eq!(
        got,
        [(first["offset"].as_u64().unwrap(), 1), (next[0], 3)],
        "delivered once"
    );

    reader
        .send_json(json!({"type": "history", "room": "r", "limit": 10}))
        .await;
    let history = within(reader.expect("history")).await;
    let offsets: Vec<u64> = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [first["offset"].as_u64().unwrap(), next[0]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_past_what_the_stream_trimmed_is_not_recovered() {
    let Some((nats, _store)) = jetstream().await else {
        return;
    };
    let a = node_with(&nats, &["--node-id", "a", "--history-size", "3"]).await;
    let mut reader = a.connect().await;
    let epoch = subscribe(&mut reader, "r", None).await["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    let mut publisher = a.connect().await;
    // An older message of another room keeps the stream's first sequence
    // below `r`'s: the stream's front cannot show the per-room trim below,
    // only `r`'s own message at `first` being gone.
    publish_n(&mut publisher, "quiet", 1, 1).await;
    let first = publish_n(&mut publisher, "r", 1, 1).await[0];
    assert_eq!(messages(&mut reader, 1).await, [(first, 1)]);
    reader.close().await;
    let later = publish_n(&mut publisher, "r", 2, 2).await;

    // Offset `first` is still stored (3 per room): recovered.
    let mut back = a.connect().await;
    let resumed = subscribe(&mut back, "r", Some((first, &epoch))).await;
    assert_eq!(resumed["recovered"], true, "{resumed}");
    let replayed: Vec<u64> = messages(&mut back, 2).await.iter().map(|m| m.0).collect();
    assert_eq!(replayed, later);
    back.close().await;

    // Two more: offset `first` and the message after it are trimmed.
    publish_n(&mut publisher, "r", 4, 2).await;
    let mut late = a.connect().await;
    let resumed = subscribe(&mut late, "r", Some((first, &epoch))).await;
    assert_eq!(resumed["recovered"], false, "{resumed}");
    let metrics = a
        .metrics_when("both resumes counted", |m| {
            m.get_or_zero(r#"websocket_recoveries_total{result="not_recovered"}"#) == 1.0
        })
        .await;
    assert_eq!(
        metrics.get(r#"websocket_recoveries_total{result="recovered"}"#),
        1.0
    );
}

/// A publisher keeps publishing while a subscriber resumes, through
/// JetStream, with a backlog several times its send queue: the replay is
/// paced and the room's gate taken only for the last part, yet every message
/// arrives once, in order, across the seam, and no slow-consumer policy
/// trips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_racing_a_long_resume_through_jetstream_leaves_no_gap_and_no_duplicate() {
    let Some((nats, _store)) = jetstream().await else {
        return;
    };
    let flags = [
        "--node-id",
        "a",
        "--history-size",
        "5000",
        "--send-queue",
        "256",
        "--slow-consumer",
        "disconnect",
    ];
    let gw = node_with(&nats, &flags).await;
    let mut reader = gw.connect().await;
    let subscribed = subscribe(&mut reader, "r", None).await;
    let epoch = subscribed["epoch"].as_str().expect("an epoch").to_owned();
    let mut publisher = gw.connect().await;
    // The reader resumes from a message it got (from offset 0 it could not:
    // see `resuming_from_zero_is_never_recovered`).
    publish_n(&mut publisher, "r", 0, 1).await;
    let offset = messages(&mut reader, 1).await[0].0;
    reader.close().await;
    publish_n(&mut publisher, "r", 1, 1_500).await;

    let racing = tokio::spawn(async move {
        publish_n(&mut publisher, "r", 1_501, 500).await;
        publisher
    });
    let mut back = gw.connect().await;
    let resumed = subscribe(&mut back, "r", Some((offset, &epoch))).await;
    assert_eq!(resumed["recovered"], true, "{resumed}");
    let got = messages(&mut back, 2_000).await;
    let numbers: Vec<u64> = got.iter().map(|m| m.1).collect();
    let expected: Vec<u64> = (1..=2_000).collect();
    assert!(
        numbers == expected,
        "first difference: {:?}",
        numbers.iter().zip(&expected).find(|(a, b)| a != b)
    );
    assert!(
        got.windows(2).all(|w| w[0].0 < w[1].0),
        "offsets strictly increase"
    );
    within(racing).await.expect("publisher task");
    let metrics = gw.metrics().await;
    assert_eq!(
        metrics.get_or_zero(r#"websocket_errors_total{error_type="slow_consumer"}"#),
        0.0
    );
    assert_eq!(
        metrics.get(r#"websocket_recoveries_total{result="recovered"}"#),
        1.0
    );
}

/// NATS drops what a room's full subscription buffer cannot hold. With
/// history, the node sees the gap in the next message's `Nats-Last-Sequence`
/// and reads what it missed back from the stream: the subscriber gets every
/// message, in order, each once. (A gap at the very end shows only with the
/// room's next message: the test sends one after the burst.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_nats_dropped_are_read_back_from_the_stream() {
    const BURST: u64 = 2_000;
    let Some((nats, _store)) = jetstream().await else {
        return;
    };
    let flags = [
        "--node-id",
        "a",
        "--history-size",
        "5000",
        "--nats-subscription-buffer",
        "1",
        "--send-queue",
        "4096",
    ];
    let gw = node_with(&nats, &flags).await;
    let mut reader = gw.connect().await;
    subscribe(&mut reader, "r", None).await;
    // Straight onto the history subject, as fast as NATS takes it: the
    // stream republishes far faster than the node's one-message buffer drains.
    let raw = async_nats::connect(nats.url()).await.expect("raw client");
    let publish = async |n: u64| {
        let (id, data) = (format!("raw-{n}"), format!("{{\"n\":{n}}}"));
        publish_raw(&raw, "wsgate.default.hist.r", &id, data).await;
    };
    for n in 1..=BURST {
        publish(n).await;
    }
    raw.flush().await.expect("flush");
    gw.metrics_when("the burst overflowed the buffer", |m| {
        m.get_or_zero(r#"wsgate_warnings_total{kind="broker_slow_consumer"}"#) >= 1.0
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    publish(BURST + 1).await;
    raw.flush().await.expect("flush");

    let got = messages(&mut reader, BURST as usize + 1).await;
    let numbers: Vec<u64> = got.iter().map(|m| m.1).collect();
    let expected: Vec<u64> = (1..=BURST + 1).collect();
    assert!(
        numbers == expected,
        "first difference: {:?}",
        numbers.iter().zip(&expected).find(|(a, b)| a != b)
    );
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "offsets increase");
    let m = gw.metrics().await;
    assert!(m.get(r#"wsgate_warnings_total{kind="broker_gap_backfilled"}"#) >= 1.0);
}

const TOO_LARGE: &str = r#"messaging_client_consumed_messages_total{error_type="too_large",messaging_operation_name="process",messaging_system="nats"}"#;

/// A message on a history subject larger than `--max-message-bytes` is
/// dropped and counted, and the gate moves past it: the next message's
/// `Nats-Last-Sequence` names it, yet it is not read back and delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_dropped_as_too_large_is_not_read_back() {
    let Some((nats, _store)) = jetstream().await else {
        return;
    };
    let flags = ["--history-size", "100", "--max-message-bytes", "1024"];
    let gw = node_with(&nats, &flags).await;
    let mut reader = gw.connect().await;
    subscribe(&mut reader, "r", None).await;
    let raw = async_nats::connect(nats.url()).await.expect("raw client");
    for (id, data) in [
        (
            "big",
            format!("{{\"n\":1,\"pad\":\"{}\"}}", "x".repeat(2_000)),
        ),
        ("small", "{\"n\":2}".to_owned()),
    ] {
        publish_raw(&raw, "wsgate.default.hist.r", id, data).await;
    }
    raw.flush().await.expect("flush");
    let got = messages(&mut reader, 1).await;
    assert_eq!(got[0].1, 2, "only the small one: {got:?}");
    let m = gw
        .metrics_when("the large one counted", |m| m.get_or_zero(TOO_LARGE) == 1.0)
        .await;
    assert_eq!(
        m.get_or_zero(r#"wsgate_warnings_total{kind="broker_gap_backfilled"}"#),
        0.0
    );
    reader
        .send_json(serde_json::json!({"type": "ping", "id": "end"}))
        .await;
    assert_eq!(reader.recv().await["type"], "pong", "nothing else came");
}

/// With NATS, offsets are stream sequences that skip the other rooms', so a
/// client that saw none of a room's messages (offset 0) cannot be told apart
/// from one whose first messages were trimmed or purged: it is never
/// recovered, even when nothing was published (a node listening anew sees a
/// room whose messages all expired as empty too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_from_zero_is_never_recovered() {
    let Some((nats, _store)) = jetstream().await else {
        return;
    };
    let a = node(&nats, "a").await;
    let mut reader = a.connect().await;
    let subscribed = subscribe(&mut reader, "r", None).await;
    assert_eq!(subscribed["offset"], 0, "{subscribed}");
    let epoch = subscribed["epoch"].as_str().expect("an epoch").to_owned();
    reader.close().await;

    let mut quiet = a.connect().await;
    let resumed = subscribe(&mut quiet, "r", Some((0, &epoch))).await;
    assert_eq!(resumed["recovered"], false, "{resumed}");
    quiet.close().await;

    let mut publisher = a.connect().await;
    publish_n(&mut publisher, "r", 1, 1).await;
    let mut late = a.connect().await;
    let resumed = subscribe(&mut late, "r", Some((0, &epoch))).await;
    assert_eq!(resumed["recovered"], false, "{resumed}");
}

const INVALID: &str = r#"messaging_client_consumed_messages_total{error_type="invalid_message",messaging_operation_name="process",messaging_system="nats"}"#;

/// In a room with history, a message on the room's live subject that the
/// stream did not store (a node without history, a foreign publisher) has no
/// offset and no resume could replay it: dropped and counted, not delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_stream_did_not_store_is_dropped_in_a_room_with_history() {
    let Some((nats, _store)) = jetstream().await else {
        return;
    };
    let a = node(&nats, "a").await;
    let mut reader = a.connect().await;
    subscribe(&mut reader, "r", None).await;
    let raw = async_nats::connect(nats.url()).await.expect("raw client");
    let data = "{\"n\":1}".to_owned();
    publish_raw(&raw, "wsgate.default.room.r", "unstored", data).await;
    raw.flush().await.expect("flush");
    a.metrics_when("the unstored message counted", |m| {
        m.get_or_zero(INVALID) == 1.0
    })
    .await;
    let mut publisher = a.connect().await;
    let offset = publish_n(&mut publisher, "r", 2, 1).await[0];
    assert_eq!(
        messages(&mut reader, 1).await,
        [(offset, 2)],
        "only the stored one"
    );
}
