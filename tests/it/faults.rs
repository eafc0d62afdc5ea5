//! Faults the gateway survives: a missing or hanging collector, a killed node,
//! SIGTERM under load, connection storms. And secrets stay out of telemetry.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{
    Closed, Collector, Gateway, NatsServer, hanging_collector, hs256_token, within,
};

const FAILED_EXPORTS: &str = "otel_sdk_exporter_span_exported_total{error_type=\"export_failed\"}";

/// Publishes `n` messages to a subscriber and checks every one arrives.
async fn traffic_flows(gw: &Gateway, n: u64) {
    let mut sub = gw.connect().await;
    sub.subscribe("t").await;
    let mut publisher = gw.connect().await;
    for seq in 0..n {
        publisher
            .send_json(json!({"type": "publish", "room": "t", "data": seq}))
            .await;
    }
    for seq in 0..n {
        assert_eq!(sub.expect("message").await["data"], seq);
    }
}

/// Runs traffic against a gateway exporting to `endpoint`, which fails, and
/// checks delivery is unaffected, failures are counted and logged once.
async fn survives_a_broken_collector(endpoint: &str) {
    let gw = Gateway::start(
        &[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "300"),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
        &[],
    )
    .await;
    let started = tokio::time::Instant::now();
    traffic_flows(&gw, 300).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "delivery must not wait on the collector"
    );
    // Several export batches fail...
    gw.metrics_when("several failed exports", |m| m.get(FAILED_EXPORTS) >= 3.0)
        .await;
    traffic_flows(&gw, 50).await;
    // ...but the log says so once (it repeats at most once a minute).
    let warnings = gw
        .logs()
        .iter()
        .filter(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.to_lowercase().contains("export"))
                && (l["level"] == "WARN" || l["level"] == "ERROR")
        })
        .count();
    assert_eq!(warnings, 1, "logs: {:#?}", gw.logs());
}

#[tokio::test]
async fn a_collector_that_is_down_costs_nothing_but_counted_spans() {
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    survives_a_broken_collector(&endpoint).await;
}

#[tokio::test]
async fn a_collector_that_hangs_costs_nothing_but_counted_spans() {
    // Accepts connections and never answers.
    let (endpoint, held) = hanging_collector().await;
    survives_a_broken_collector(&endpoint).await;
    held.abort();
}

/// The sum of the span processor's `otel_sdk_processor_span_processed_total`
/// series whose labels contain `labels`, and whether any series exists.
fn processed_spans(m: &crate::helpers::Metrics, labels: &str) -> (bool, f64) {
    let series: Vec<f64> =
        m.0.iter()
            .filter(|(k, _)| {
                k.starts_with("otel_sdk_processor_span_processed_total{") && k.contains(labels)
            })
            .map(|(_, v)| *v)
            .collect();
    (!series.is_empty(), series.iter().sum())
}

#[tokio::test]
async fn spans_dropped_by_a_full_span_queue_are_counted() {
    // A collector that never answers, and a span queue of 4: the exporter
    // blocks on its first batch while the queue overflows.
    let (endpoint, held) = hanging_collector().await;
    let gw = Gateway::start(
        &[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "20000"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "4"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4"),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
        &[],
    )
    .await;
    // The series exists at zero before any span is made.
    let (exists, dropped) = processed_spans(&gw.metrics().await, "error_type=\"queue_full\"");
    assert!(exists, "no queue_full series at start-up");
    assert_eq!(dropped, 0.0);
    // 3 spans per message: far more than the queue holds.
    traffic_flows(&gw, 50).await;
    gw.metrics_when("spans dropped by the full queue are counted", |m| {
        processed_spans(m, "error_type=\"queue_full\"").1 > 0.0
    })
    .await;
    held.abort();
}

#[tokio::test]
async fn killing_one_node_leaves_the_others_serving() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let url = nats.url();
    let start = |id: &'static str| {
        let url = url.clone();
        async move {
            Gateway::start(
                &[("OTEL_TRACES_EXPORTER", "none")],
                &["--nats-url", &url, "--node-id", id],
            )
            .await
        }
    };
    let (a, b, mut c) = (start("a").await, start("b").await, start("c").await);
    for gw in [&a, &b, &c] {
        gw.wait_ready().await;
    }
    let mut on_a = a.connect().await;
    let mut on_b = b.connect().await;
    let mut on_c = c.connect().await;
    for client in [&mut on_a, &mut on_b, &mut on_c] {
        client.subscribe("k").await;
    }
    c.kill();
    assert!(
        matches!(on_c.closed().await, Closed::Abrupt(_)),
        "node c is gone"
    );
    // No ids, so no acks: with NATS an ack may overtake the publisher's own copy.
    on_a.send_json(json!({"type": "publish", "room": "k", "data": "from a"}))
        .await;
    assert_eq!(on_b.expect("message").await["data"], "from a");
    on_b.send_json(json!({"type": "publish", "room": "k", "data": "from b"}))
        .await;
    assert_eq!(on_a.expect("message").await["data"], "from a");
    assert_eq!(on_a.expect("message").await["data"], "from b");
    assert_eq!(on_b.expect("message").await["data"], "from b");
    for gw in [&a, &b] {
        let status = within(reqwest::get(gw.url("/readyz")))
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
    }
}

#[tokio::test]
async fn sigterm_under_load_closes_everyone_with_1001_and_exits_0() {
    // Subscribers read as fast as they can; `drop` keeps one that falls behind
    // for a moment connected, so every close we see is the shutdown's.
    let gw = Gateway::start(
        &[("OTEL_TRACES_EXPORTER", "none")],
        &["--shutdown-grace", "5s", "--slow-consumer", "drop"],
    )
    .await;
    let mut readers = Vec::new();
    let (first_tx, mut first_rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..20 {
        let mut c = gw.connect().await;
        c.subscribe("busy").await;
        let first_tx = first_tx.clone();
        readers.push(tokio::spawn(async move {
            c.expect("message").await;
            let _ = first_tx.send(());
            c.closed().await
        }));
    }
    // Publishers flood until the server closes them.
    let mut publishers = Vec::new();
    for p in 0..4 {
        let mut c = gw.connect().await;
        publishers.push(tokio::spawn(async move {
            let mut seq = 0u64;
            loop {
                let frame =
                    json!({"type": "publish", "room": "busy", "data": [p, seq]}).to_string();
                let sent = futures_util::SinkExt::send(
                    &mut c.ws,
                    tokio_tungstenite::tungstenite::Message::text(frame),
                )
                .await;
                if sent.is_err() {
                    return c;
                }
                seq += 1;
                if seq.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    // Traffic is flowing through every subscriber when the signal comes.
    for _ in 0..20 {
        within(first_rx.recv()).await.expect("a first message");
    }
    gw.terminate();
    for reader in readers {
        assert_eq!(
            within(reader).await.expect("reader"),
            Closed::Frame(1001, "server shutting down".into())
        );
    }
    for p in publishers {
        let mut c = within(p).await.unwrap();
        assert!(matches!(
            c.closed().await,
            Closed::Frame(1001, _) | Closed::Abrupt(_)
        ));
    }
    let logs = gw.logs();
    let status = gw.wait().await;
    assert!(status.success(), "exit status {status:?}");
    assert!(
        !logs.iter().any(|l| l.to_string().contains("panicked")),
        "no panic in the logs"
    );
}

#[tokio::test]
async fn a_connection_storm_leaves_no_connection_and_no_memory_behind() {
    const STORM: usize = 5_000;
    const WAVE: usize = 500;
    let gw = Gateway::start(&[("OTEL_TRACES_EXPORTER", "none")], &[]).await;
    let storm = || async {
        for _ in 0..STORM / WAVE {
            let mut wave = Vec::with_capacity(WAVE);
            for _ in 0..WAVE {
                let url = format!("ws://{}/ws", gw.addr);
                wave.push(tokio::spawn(async move {
                    let (mut ws, _) = tokio_tungstenite::connect_async(url)
                        .await
                        .expect("connect");
                    futures_util::SinkExt::send(
                        &mut ws,
                        tokio_tungstenite::tungstenite::Message::text(
                            r#"{"type":"subscribe","room":"storm"}"#,
                        ),
                    )
                    .await
                    .expect("subscribe");
                    let _ = futures_util::StreamExt::next(&mut ws).await;
                    // Half leave politely, half just vanish.
                    if rand_bit() {
                        let _ = ws.close(None).await;
                    }
                }));
            }
            for task in wave {
                within(task).await.expect("client");
            }
        }
    };
    // The first storm warms up allocator pools and buffers; the second must
    // not grow memory beyond them: a leak grows with every connection.
    storm().await;
    gw.metrics_when("first storm drained", |m| {
        m.get("websocket_connections_active") == 0.0
    })
    .await;
    let first = gw.resident_bytes() as f64;
    storm().await;
    let after_second = gw
        .metrics_when("second storm drained", |m| {
            m.get("websocket_connections_active") == 0.0
        })
        .await;
    assert_eq!(
        after_second.get("websocket_connections_opened_total"),
        2.0 * STORM as f64
    );
    let second = gw.resident_bytes() as f64;
    let growth = second - first;
    assert!(
        growth < 8.0 * 1024.0 * 1024.0,
        "resident memory grew by {:.1} MiB over {STORM} more connections ({:.1} MiB → {:.1} MiB)",
        growth / 1048576.0,
        first / 1048576.0,
        second / 1048576.0
    );
}

fn rand_bit() -> bool {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::Relaxed).is_multiple_of(2)
}

#[tokio::test]
async fn tokens_and_keys_never_reach_logs_or_spans() {
    let collector = Collector::grpc().await;
    let endpoint = collector.endpoint();
    let secret = "jwt-secret-that-must-not-leak";
    let api_key = "api-key-that-must-not-leak";
    let gw = Gateway::start(
        &[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ("RUST_LOG", "trace"),
            ("WSGATE_JWT_SECRET", secret),
            ("WSGATE_API_KEY", api_key),
        ],
        &[],
    )
    .await;
    let claims = json!({"sub": "u", "exp": 4_000_000_000u64});
    let token = hs256_token(secret, &claims);
    let mut client = gw.connect_to(&format!("/ws?token={token}")).await;
    client
        .send_text(r#"{"type":"publish","room":"r","data":1,"id":"x"}"#)
        .await;
    let _ = within(futures_util::StreamExt::next(&mut client.ws)).await;
    let bad = format!("ws://{}/ws?token={token}tampered", gw.addr);
    assert!(tokio_tungstenite::connect_async(bad).await.is_err());
    let response = reqwest::Client::new()
        .post(gw.url("/api/publish"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {api_key}"))
        .body(r#"{"room":"r","data":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    collector
        .spans_when("the HTTP and WebSocket spans", |s| {
            s.iter().any(|x| x.name == "POST /api/publish") && s.iter().any(|x| x.name == "GET /ws")
        })
        .await;
    let spans = format!("{:?}", collector.spans());
    let logs = serde_json::to_string(&gw.logs()).unwrap();
    for needle in [secret, api_key, token.as_str()] {
        assert!(!spans.contains(needle), "a secret is in a span");
        assert!(!logs.contains(needle), "a secret is in the logs");
    }
    // The token's signature alone must not appear either.
    let signature = token.rsplit('.').next().unwrap();
    assert!(!spans.contains(signature) && !logs.contains(signature));
}
