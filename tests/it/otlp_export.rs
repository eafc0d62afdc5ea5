//! wsgate's own OTLP exporter against a collector that refuses: a batch the
//! collector may take later is tried again, one it will never take is not, on
//! both protocols. Batches hold exactly two spans (the batch size is 2 and the
//! schedule never fires), so [`one_message`] makes two batches: the two
//! connections' `GET /ws` spans, then the message's `process` and `send`.

use serde_json::json;

use crate::helpers::{Collector, Gateway};

const FAILED_EXPORTS: &str = "otel_sdk_exporter_span_exported_total{error_type=\"export_failed\"}";
const EXPORTED: &str = "otel_sdk_exporter_span_exported_total";

#[derive(Debug, Clone, Copy)]
enum Protocol {
    Grpc,
    Http,
}

async fn collector(protocol: Protocol) -> Collector {
    match protocol {
        Protocol::Grpc => Collector::grpc().await,
        Protocol::Http => Collector::http().await,
    }
}

async fn gateway(protocol: Protocol, collector: &Collector) -> Gateway {
    let endpoint = collector.endpoint();
    let protocol = match protocol {
        Protocol::Grpc => "grpc",
        Protocol::Http => "http/protobuf",
    };
    Gateway::start(
        &[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2"),
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ],
        &[],
    )
    .await
}

/// Two connections and one traced message, delivered: two batches.
async fn one_message(gw: &Gateway, n: u32) {
    let mut sub = gw.connect().await;
    sub.subscribe("r").await;
    let mut publisher = gw.connect().await;
    publisher
        .publish_acked("r", json!(n), &format!("m{n}"))
        .await;
    sub.expect("message").await;
}

#[tokio::test]
async fn a_batch_the_collector_refuses_for_now_is_sent_again() {
    for protocol in [Protocol::Grpc, Protocol::Http] {
        let collector = collector(protocol).await;
        // 503 over HTTP, UNAVAILABLE over gRPC: retryable, twice.
        collector.refuse_next(&[503, 503]);
        let gw = gateway(protocol, &collector).await;
        one_message(&gw, 1).await;
        collector
            .spans_when(&format!("{protocol:?}: the batch, on its third try"), |s| {
                s.iter().any(|x| x.name == "send") && s.iter().any(|x| x.name == "process")
            })
            .await;
        let names: Vec<_> = collector.spans().iter().map(|s| s.name.clone()).collect();
        assert_eq!(
            collector.attempts(),
            4,
            "{protocol:?}: the first batch refused twice and taken, the second taken: {names:?}"
        );
        assert_eq!(names.len(), 4, "{protocol:?}: every span once: {names:?}");
        let m = gw
            .metrics_when("the two spans counted as exported", |m| {
                m.get_or_zero(EXPORTED) >= 2.0
            })
            .await;
        assert_eq!(
            m.get_or_zero(FAILED_EXPORTS),
            0.0,
            "{protocol:?}: nothing lost"
        );
    }
}

#[tokio::test]
async fn a_batch_the_collector_will_never_take_is_not_sent_again_and_is_counted() {
    for protocol in [Protocol::Grpc, Protocol::Http] {
        let collector = collector(protocol).await;
        // 400 over HTTP, INVALID_ARGUMENT over gRPC: not retryable.
        collector.refuse_next(&[400]);
        let gw = gateway(protocol, &collector).await;
        one_message(&gw, 1).await;
        gw.metrics_when("the refused batch's two spans counted as failed", |m| {
            m.get_or_zero(FAILED_EXPORTS) >= 2.0
        })
        .await;
        // The exporter goes on with the next batch, and never went back.
        let spans = collector
            .spans_when(&format!("{protocol:?}: the message's batch"), |s| {
                s.iter().any(|x| x.name == "send")
            })
            .await;
        let names: Vec<_> = spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["process", "send"],
            "{protocol:?}: the refused batch is gone"
        );
        assert_eq!(
            collector.attempts(),
            2,
            "{protocol:?}: each batch tried once"
        );
    }
}
