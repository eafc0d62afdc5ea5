//! A replayed message keeps its trace: the resuming subscribe is a `replay`
//! span, and each replayed message's `process` span links to the `send` span
//! that created it; the frame carries that `process` span's context.

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::json;

use crate::helpers::{Collector, Gateway};

#[tokio::test]
async fn a_replayed_message_links_to_the_publish_that_created_it() {
    let collector = Collector::grpc().await;
    let endpoint = collector.endpoint();
    let env = [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ];
    let gw = Gateway::start(&env, &["--history-size", "10"]).await;

    let mut reader = gw.connect().await;
    reader
        .send_json(json!({"type": "subscribe", "room": "r"}))
        .await;
    let subscribed = reader.expect("subscribed").await;
    let epoch = subscribed["epoch"].as_str().expect("epoch").to_owned();
    reader.close().await;

    let mut publisher = gw.connect().await;
    publisher
        .send_json(json!({"type": "publish", "room": "r", "data": 1, "id": "a"}))
        .await;
    assert_eq!(publisher.expect("ack").await["offset"], 1);

    let mut back = gw.connect().await;
    back.send_json(
        json!({"type": "subscribe", "room": "r", "since": {"offset": 0, "epoch": epoch}}),
    )
    .await;
    assert_eq!(back.expect("subscribed").await["recovered"], true);
    let message = back.expect("message").await;
    let traceparent = message["traceparent"].as_str().expect("a traceparent");
    let parts: Vec<&str> = traceparent.split('-').collect();
    let (trace, span) = (parts[1], parts[2]);

    let spans = collector
        .spans_when("the send, replay and replayed process spans", |s| {
            s.iter().any(|s| s.name == "send") && s.iter().any(|s| s.span_id == span)
        })
        .await;
    let send = spans.iter().find(|s| s.name == "send").expect("send");
    let replayed = spans
        .iter()
        .find(|s| s.span_id == span)
        .expect("the frame's span");
    assert_eq!(replayed.name, "process");
    assert_eq!(replayed.kind, SpanKind::Consumer);
    assert_eq!(replayed.attr("wsgate.replayed").as_deref(), Some("true"));
    assert_eq!(
        replayed.links,
        [(send.trace_id.clone(), send.span_id.clone())],
        "linked to the publish"
    );
    let replay = spans
        .iter()
        .find(|s| s.name == "replay")
        .expect("a replay span");
    assert_eq!(replay.trace_id, trace);
    assert_eq!(replayed.parent_span_id, replay.span_id);
    assert_eq!(replay.attr("wsgate.recovered").as_deref(), Some("true"));
    assert_eq!(
        replay.attr("messaging.batch.message_count").as_deref(),
        Some("1")
    );
    assert_eq!(
        replay.attr("messaging.destination.name").as_deref(),
        Some("r")
    );
    assert_ne!(send.trace_id, trace, "the replay is a trace of its own");
}
