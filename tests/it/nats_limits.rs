//! What a node holds for NATS is bounded, and abuse through NATS costs a
//! counter add, not memory or a log line: failed subscribes leave nothing
//! behind, messages from NATS obey `--max-message-bytes`, and each room's
//! subscription buffer is bounded, its overflow counted.

use std::time::Instant;

use async_nats::HeaderMap;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::helpers::{Gateway, NatsServer, TestApp, poll_until, spawn_app_with};

const ROOMS: &str = "wsgate_broker_rooms{messaging_system=\"nats\"}";
const SUBSCRIBE_FAILED: &str = "wsgate_warnings_total{kind=\"broker_subscribe_failed\"}";
/// Everything the NATS client read, reported or not.
const RECEIVED: &str = "wsgate_broker_received_messages_total{messaging_system=\"nats\"}";

fn consumed(error_type: Option<&str>) -> String {
    let error = error_type.map_or(String::new(), |e| format!("error_type=\"{e}\","));
    format!(
        "messaging_client_consumed_messages_total{{{error}messaging_operation_name=\"process\",messaging_system=\"nats\"}}"
    )
}

/// The "subscribe failed" log lines so far: (count, sum of their `suppressed`).
fn subscribe_failed_lines(gw: &Gateway) -> (u64, u64) {
    let lines: Vec<Value> = gw
        .logs()
        .into_iter()
        .filter(|l| l["fields"]["message"] == "subscribe failed")
        .collect();
    for line in &lines {
        assert_eq!(line["level"], "WARN", "{line}");
    }
    let suppressed = lines
        .iter()
        .map(|l| {
            l["fields"]["suppressed"]
                .as_u64()
                .expect("a suppressed count")
        })
        .sum();
    (lines.len() as u64, suppressed)
}

#[tokio::test]
async fn failed_subscribes_leave_no_rooms_behind_and_log_a_line_per_interval() {
    const FAILURES: u64 = 2_000;
    const INTERVAL_MS: u64 = 100;
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    let gw = Gateway::start(
        &[("OTEL_TRACES_EXPORTER", "none")],
        &[
            "--nats-url",
            &nats.url(),
            "--warning-log-interval",
            &format!("{INTERVAL_MS}ms"),
        ],
    )
    .await;
    gw.wait_ready().await;
    let mut kept = gw.connect().await;
    kept.subscribe("kept").await;
    assert_eq!(gw.metrics().await.get(ROOMS), 1.0);

    nats.stop();
    gw.readiness_becomes(503).await;
    let started = Instant::now();
    let mut client = gw.connect().await;
    let mut sent = 0;
    // In batches, so the error frames never fill the client's send queue.
    while sent < FAILURES {
        let batch = 250.min(FAILURES - sent);
        for i in sent..sent + batch {
            client
                .send_json(json!({"type": "subscribe", "room": format!("new-{i}")}))
                .await;
        }
        for _ in 0..batch {
            client.expect_error("broker_unavailable", None).await;
        }
        sent += batch;
    }
    // Failures keep coming until a line reports every one suppressed before
    // it: then the log accounts for each failure, as a line or in a count.
    poll_until(async || {
        client
            .send_json(json!({"type": "subscribe", "room": format!("new-{sent}")}))
            .await;
        client.expect_error("broker_unavailable", None).await;
        sent += 1;
        match subscribe_failed_lines(&gw) {
            (lines, suppressed) if lines + suppressed == sent => Ok(()),
            (lines, suppressed) => Err(format!(
                "{lines} lines + {suppressed} suppressed to account for {sent} failures"
            )),
        }
    })
    .await;
    let elapsed = started.elapsed();
    let (lines, suppressed) = subscribe_failed_lines(&gw);
    let most = 1 + elapsed.as_millis() as u64 / INTERVAL_MS;
    assert!(
        lines <= most,
        "{lines} lines for {sent} failures in {elapsed:?}: at most {most}"
    );
    assert!(suppressed > 0, "the lines say how many were left out");
    let during = gw.metrics().await;
    assert_eq!(during.get(SUBSCRIBE_FAILED), sent as f64, "all counted");
    assert_eq!(during.get(ROOMS), 1.0, "failed subscribes left nothing");

    nats.restart().await;
    gw.readiness_becomes(200).await;
    nats.subscriptions_become(1).await;
    assert_eq!(gw.metrics().await.get(ROOMS), 1.0, "only the room in use");
    // The room in use still works, and a room that failed can be subscribed.
    client.subscribe("new-0").await;
    assert_eq!(gw.metrics().await.get(ROOMS), 2.0);
    kept.publish_acked("kept", json!("after"), "k1").await;
    assert_eq!(kept.expect("message").await["data"], "after");
}

/// A node on `nats` with `configure` applied, in this process, ready.
async fn node(nats: &NatsServer, configure: impl FnOnce(&mut wsgate::Config)) -> TestApp {
    let url = nats.url();
    let app = spawn_app_with(|c| {
        c.nats_url = Some(url.into());
        configure(c);
    })
    .await;
    poll_until(async || {
        let status = reqwest::get(app.http_url("/readyz"))
            .await
            .map_err(|e| e.to_string())?
            .status();
        if status == 200 {
            Ok(())
        } else {
            Err(format!("/readyz to answer 200, not {status}"))
        }
    })
    .await;
    app
}

/// A message as a gateway publishes it: `data` as the payload, the id header.
async fn publish_raw(client: &async_nats::Client, room: &str, id: &str, data: Bytes) {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    client
        .publish_with_headers(format!("wsgate.default.room.{room}"), headers, data)
        .await
        .expect("publish to NATS");
}

#[tokio::test]
async fn a_message_from_nats_larger_than_max_message_bytes_is_dropped_and_counted() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let app = node(&nats, |c| c.max_message_bytes = 1024).await;
    let before = app.metrics().await;
    assert_eq!(
        before.get(&consumed(Some("too_large"))),
        0.0,
        "from start-up"
    );
    let mut subscriber = app.connect().await;
    subscriber.subscribe("big").await;

    // Anything that can publish on the subject, bypassing every gateway.
    let raw = async_nats::connect(nats.url()).await.expect("raw client");
    let oversize = format!("\"{}\"", "x".repeat(2000));
    publish_raw(&raw, "big", "big-1", oversize.into()).await;
    publish_raw(&raw, "big", "small-1", Bytes::from_static(b"\"fits\"")).await;
    raw.flush().await.expect("flush");

    // NATS keeps one publisher's order, so had the large one been delivered,
    // it would have come first.
    let frame = subscriber.expect("message").await;
    assert_eq!(frame["id"], "small-1");
    assert_eq!(frame["data"], "fits");
    let after = app
        .metrics_when("the large message counted", |m| {
            m.get(&consumed(Some("too_large"))) == 1.0
        })
        .await;
    assert_eq!(after.get(&consumed(None)), 1.0, "the small one delivered");
    assert_eq!(
        after.get("wsgate_warnings_total{kind=\"broker_message_too_large\"}"),
        1.0
    );
}

/// Deterministic: this test's thread runs the node (a current-thread
/// runtime). The burst is published from another thread, which waits until
/// NATS has written all of it to the node's socket; meanwhile the node cannot
/// run at all. Then its NATS client reads the whole burst in one go, before
/// the room's listener can take anything: with a buffer of one message, the
/// first is buffered and every other one dropped.
#[tokio::test]
async fn a_full_subscription_buffer_drops_and_counts_the_overflow() {
    const BURST: u64 = 100;
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let app = node(&nats, |c| {
        c.nats_subscription_buffer = 1;
        c.node_id = Some("overflow".into());
    })
    .await;
    let mut subscriber = app.connect().await;
    subscriber.subscribe("burst").await;
    let received = app.metrics().await.get(RECEIVED);
    burst_while_the_node_waits(&nats, "wsgate overflow", BURST).await;

    let slow = consumed(Some("slow_consumer"));
    let m = app
        .metrics_when("the burst accounted for", |m| {
            m.get(&consumed(None)) + m.get(&slow) == BURST as f64
        })
        .await;
    assert_eq!(m.get(&consumed(None)), 1.0, "one fits in the buffer");
    assert_eq!(m.get(&slow), (BURST - 1) as f64, "the rest overflowed");
    assert_eq!(m.get(RECEIVED) - received, BURST as f64);
    assert_eq!(
        m.get("wsgate_warnings_total{kind=\"broker_slow_consumer\"}"),
        (BURST - 1) as f64
    );
    let frame = subscriber.expect("message").await;
    assert_eq!(frame["id"], "m0");
    subscriber
        .send_json(json!({"type": "ping", "id": "end"}))
        .await;
    assert_eq!(
        subscriber.recv().await,
        json!({"type": "pong", "id": "end"})
    );
}

/// A flood that overflows a room's buffer costs counter adds, not log lines:
/// the node logs one line per interval, and the NATS client library (which
/// logs each of its events at INFO) none per dropped message.
#[tokio::test]
async fn an_overflowing_room_logs_a_line_per_interval_not_per_drop() {
    const BURST: u64 = 2_000;
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let gw = Gateway::start(
        &[("OTEL_TRACES_EXPORTER", "none")],
        &[
            "--nats-url",
            &nats.url(),
            "--nats-subscription-buffer",
            "1",
            "--warning-log-interval",
            "1h",
        ],
    )
    .await;
    gw.wait_ready().await;
    let mut subscriber = gw.connect().await;
    subscriber.subscribe("flood").await;
    let raw = async_nats::connect(nats.url()).await.expect("raw client");
    for seq in 0..BURST {
        publish_raw(&raw, "flood", &format!("m{seq}"), seq.to_string().into()).await;
    }
    raw.flush().await.expect("flush");

    let ours = |logs: &[Value]| {
        logs.iter()
            .filter(|l| {
                l["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("buffer was full"))
            })
            .count()
    };
    // async-nats logs an event before it calls wsgate's handler, which logs
    // this line: once it is here, the library's line for the same drop would be.
    let logs = poll_until(async || {
        let logs = gw.logs();
        if ours(&logs) > 0 {
            Ok(logs)
        } else {
            Err("the node to log that a buffer was full".to_owned())
        }
    })
    .await;
    let library = logs
        .iter()
        .filter(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("slow consumer"))
        })
        .count();
    assert_eq!(library, 0, "no line per dropped message");
    // Every drop is counted twice, as a message and as a warning; once the
    // flood has passed, the two agree.
    let m = gw
        .metrics_when("drops counted as messages and as warnings", |m| {
            m.get(&consumed(Some("slow_consumer")))
                == m.get("wsgate_warnings_total{kind=\"broker_slow_consumer\"}")
        })
        .await;
    let dropped = m.get(&consumed(Some("slow_consumer")));
    assert!(dropped >= 1.0);
    assert_eq!(ours(&gw.logs()), 1, "{dropped} drops, one line an hour");
}

/// async-nats reports events through a 128-slot channel it fills without
/// waiting, so a flood of drops fills it and the events after are lost: the
/// node must not learn of an outage from them. Deterministic like the
/// overflow test: the burst is written and the server stopped while this
/// thread, which runs the node, is blocked; then the node reads the burst
/// (127 drops more than the channel holds) and the end of the connection in
/// one go, before its event handler can run.
#[tokio::test]
async fn a_flood_of_drops_does_not_hide_an_outage() {
    const BURST: u64 = 300;
    const CONNECTED: &str = "wsgate_broker_connected{messaging_system=\"nats\"}";
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    let app = node(&nats, |c| {
        c.nats_subscription_buffer = 1;
        c.node_id = Some("flooded".into());
    })
    .await;
    let mut subscriber = app.connect().await;
    subscriber.subscribe("burst").await;
    let before = app.metrics().await;
    assert_eq!(before.get(CONNECTED), 1.0);
    burst_while_the_node_waits(&nats, "wsgate flooded", BURST).await;
    // Still before this thread lets the node run again.
    nats.stop();

    let m = app
        .metrics_when("the outage seen", |m| m.get(CONNECTED) == 0.0)
        .await;
    let reported = m.get(&consumed(None)) + m.get(&consumed(Some("slow_consumer")));
    assert!(
        reported < BURST as f64,
        "some drop reports were lost ({reported} of {BURST}), so the disconnection's could be"
    );
    assert_eq!(
        m.get(RECEIVED) - before.get(RECEIVED),
        BURST as f64,
        "what the client read is counted exactly"
    );
    nats.restart().await;
    app.metrics_when("reconnected", |m| {
        m.get(CONNECTED) == 1.0
            && m.get("wsgate_broker_reconnects_total{messaging_system=\"nats\"}") == 1.0
    })
    .await;
}

/// Publishes `burst` messages to the room `burst` from another thread, which
/// waits until NATS has written all of them to the connection named `client`.
/// Meanwhile this thread, which runs the node (a current-thread runtime), is
/// blocked: the node cannot read any of it until this returns.
async fn burst_while_the_node_waits(nats: &NatsServer, client: &str, burst: u64) {
    let baseline = nats.delivered_to(client).await;
    let url = nats.url();
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async {
                    let raw = async_nats::connect(url).await.expect("raw client");
                    for seq in 0..burst {
                        let data = Bytes::from(seq.to_string());
                        publish_raw(&raw, "burst", &format!("m{seq}"), data).await;
                    }
                    raw.flush().await.expect("flush");
                    poll_until(async || {
                        let now = nats.delivered_to(client).await;
                        if now.messages >= baseline.messages + burst && now.pending_bytes == 0 {
                            Ok(())
                        } else {
                            Err(format!("NATS to write the burst to the node: {now:?}"))
                        }
                    })
                    .await;
                });
            })
            .join()
            .expect("publisher thread");
    });
}
