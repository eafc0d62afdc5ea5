//! A SIGTERM costs one grace period, whatever the clients and the collector
//! are doing.

use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt as _;
use tokio::time::Instant;

use crate::helpers::{Closed, Gateway, hanging_collector, within};

#[tokio::test]
async fn sigterm_exits_within_the_grace_period_plus_a_second_whatever_is_stuck() {
    const GRACE: Duration = Duration::from_secs(2);
    let (collector, held) = hanging_collector().await;
    let gw = Gateway::start(
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.as_str()),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "30000"),
        ],
        &[
            "--shutdown-grace",
            "2s",
            "--send-queue-bytes",
            "64000000",
            "--write-timeout",
            "60s",
        ],
    )
    .await;
    // A healthy subscriber, and one that stopped reading with megabytes
    // queued for it: its writer is stuck on a full socket.
    let mut healthy = gw.connect().await;
    healthy.subscribe("news").await;
    let mut stuck = gw.connect().await;
    stuck.subscribe("big").await;
    let mut publisher = gw.connect().await;
    let fill = "x".repeat(60_000);
    for i in 0..200 {
        publisher
            .publish_acked("big", json!({"seq": i, "fill": fill}), &format!("b{i}"))
            .await;
    }
    // A backend whose request body stalls after a few bytes.
    let mut stalled_post = within(tokio::net::TcpStream::connect(gw.addr))
        .await
        .unwrap();
    let head = format!(
        "POST /api/publish HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: 60000\r\n\r\n{{\"room\":",
        gw.addr
    );
    stalled_post.write_all(head.as_bytes()).await.unwrap();
    // Spans are queued for a collector that will never answer.
    publisher.publish_acked("news", json!("traced"), "t").await;
    assert_eq!(healthy.expect("message").await["data"], "traced");

    let signalled = Instant::now();
    gw.terminate();
    assert_eq!(
        healthy.closed().await,
        Closed::Frame(1001, "server shutting down".into()),
        "a healthy client gets its 1001"
    );
    let status = gw.wait().await;
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        took < GRACE + Duration::from_secs(1),
        "exited {took:?} after SIGTERM with a {GRACE:?} grace period"
    );
    held.abort();
    drop((stuck, stalled_post));
}
