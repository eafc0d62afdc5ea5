//! With no OTLP endpoint configured, wsgate makes no spans and tries no export:
//! a new user sees one INFO line on how to turn traces on, not a stream of
//! export warnings. Configuring an endpoint is all it takes to export.

use serde_json::{Value, json};

use crate::helpers::{Collector, Gateway, Metrics, post_publish};

/// Every `otel_sdk_exporter_span_exported_total` series: they exist exactly
/// when an OTLP exporter was built.
fn export_series(m: &Metrics) -> Vec<(&String, &f64)> {
    m.0.iter()
        .filter(|(k, _)| k.starts_with("otel_sdk_exporter_span_exported_total"))
        .collect()
}

/// The INFO lines that say traces are off and how to turn them on.
fn traces_off_lines(gw: &Gateway) -> Vec<Value> {
    gw.logs()
        .into_iter()
        .filter(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("OTEL_EXPORTER_OTLP_ENDPOINT"))
        })
        .collect()
}

#[tokio::test]
async fn without_any_otel_variable_no_span_is_made_and_no_export_tried() {
    let gw = Gateway::start(&[], &[]).await;
    let mut sub = gw.connect().await;
    sub.subscribe("quiet").await;
    let mut publisher = gw.connect().await;
    for n in 0..20 {
        publisher
            .publish_acked("quiet", json!(n), &format!("q{n}"))
            .await;
        let frame = sub.expect("message").await;
        assert!(
            frame.get("traceparent").is_none(),
            "no span, so no trace context on a frame: {frame}"
        );
    }
    let status = post_publish(&gw.url(""), r#"{"room":"quiet","data":1}"#, &[]).await;
    assert_eq!(status, 202);
    sub.expect("message").await;

    // Metrics stay on. A frame is counted once its write has returned, which
    // may be just after the subscriber has read it.
    let m = gw
        .metrics_when("the 21 messages counted as sent", |m| {
            m.get_or_zero("websocket_messages_sent_total{type=\"message\"}") >= 21.0
        })
        .await;
    assert!(
        export_series(&m).is_empty(),
        "no exporter, so no export counts (and no failures): {:?}",
        export_series(&m)
    );
    let lines = traces_off_lines(&gw);
    assert_eq!(lines.len(), 1, "one line says how to turn traces on");
    assert_eq!(lines[0]["level"], "INFO", "{}", lines[0]);
    let warnings: Vec<_> = gw
        .logs()
        .into_iter()
        .filter(|l| l["level"] == "WARN" || l["level"] == "ERROR")
        .collect();
    assert!(warnings.is_empty(), "a quiet start: {warnings:#?}");
}

#[tokio::test]
async fn the_traces_endpoint_alone_turns_export_on() {
    let collector = Collector::http().await;
    let endpoint = format!("{}/v1/traces", collector.endpoint());
    let gw = Gateway::start(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &endpoint)], &[]).await;
    let mut sub = gw.connect().await;
    sub.subscribe("on").await;
    let mut publisher = gw.connect().await;
    publisher.publish_acked("on", json!(1), "on-1").await;
    let frame = sub.expect("message").await;
    assert!(frame.get("traceparent").is_some(), "traced: {frame}");
    assert!(traces_off_lines(&gw).is_empty());
    // The shutdown flush delivers the spans without waiting for the batch
    // processor's schedule.
    gw.terminate();
    assert!(gw.wait().await.success());
    let spans = collector.spans();
    for name in ["send", "process"] {
        assert!(spans.iter().any(|s| s.name == name), "{name}: {spans:#?}");
    }
}

#[tokio::test]
async fn otel_traces_exporter_otlp_alone_builds_the_exporter() {
    let gw = Gateway::start(&[("OTEL_TRACES_EXPORTER", "otlp")], &[]).await;
    let m = gw.metrics().await;
    assert!(
        !export_series(&m).is_empty(),
        "the user asked for OTLP export (to the default endpoint)"
    );
    assert!(traces_off_lines(&gw).is_empty());
}
