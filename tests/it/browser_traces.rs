//! The demo page traces in the browser: one trace from the click in one
//! browser, through two gateways and NATS, to another browser's screen. The
//! pages export their spans over OTLP/HTTP (`--demo-otlp-endpoint`) to the
//! same test collector the gateways export to.

use crate::browser::Browser;
use crate::helpers::{Collector, Gateway, NatsServer, Span};

const ROOM: &str = "traced";

fn by_id<'a>(spans: &'a [Span], span_id: &str) -> Option<&'a Span> {
    spans.iter().find(|s| s.span_id == span_id)
}

fn service(span: &Span) -> String {
    span.resource_attr("service.name").unwrap_or_default()
}

#[tokio::test]
async fn one_trace_runs_from_one_browser_through_both_gateways_to_another_browser() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let collector = Collector::http().await;
    let endpoint = collector.endpoint();
    let env = [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ];
    let nats_url = nats.url();
    let node = |id: &'static str| {
        let (nats_url, endpoint) = (nats_url.clone(), endpoint.clone());
        async move {
            Gateway::start(
                &env,
                &[
                    "--node-id",
                    id,
                    "--nats-url",
                    &nats_url,
                    "--demo-otlp-endpoint",
                    &endpoint,
                ],
            )
            .await
        }
    };
    let (a, b) = (node("node-a").await, node("node-b").await);

    // The receiving browser first, on node B, and subscribed before anyone publishes.
    let Some(mut receiver) = Browser::open(&format!("http://{}/?room={ROOM}", b.addr)).await else {
        return;
    };
    receiver
        .eval_until(
            "the receiving page subscribed",
            "document.getElementById('room-label').textContent",
            |v| v == &serde_json::json!(format!("room: {ROOM}")),
        )
        .await;
    let Some(_sender) = Browser::open(&format!(
        "http://{}/?room={ROOM}&autopublish=traced%20hello",
        a.addr
    ))
    .await
    else {
        return;
    };
    let shown = receiver
        .eval_until(
            "the receiving page shows the message with its trace id",
            "document.getElementById('log').innerText",
            |v| {
                v.as_str()
                    .is_some_and(|t| t.contains("traced hello") && t.contains("trace "))
            },
        )
        .await;
    let trace = shown
        .as_str()
        .and_then(|t| t.split("trace ").nth(1))
        .map(|t| t.chars().take(32).collect::<String>())
        .expect("a trace id on the page");

    // The receiving browser's process span is exported last: wait for it.
    let spans = collector
        .spans_when("the receiving browser's process span", |spans| {
            spans.iter().any(|s| {
                s.trace_id == trace
                    && s.name == "process"
                    && service(s) == "wsgate-demo"
                    && by_id(spans, &s.parent_span_id).and_then(|p| p.attr("wsgate.node.id"))
                        == Some("node-b".to_owned())
            })
        })
        .await;
    let in_trace: Vec<&Span> = spans.iter().filter(|s| s.trace_id == trace).collect();
    let describe = || {
        in_trace
            .iter()
            .map(|s| format!("{} {} ({})", service(s), s.name, s.span_id))
            .collect::<Vec<_>>()
            .join(", ")
    };

    // The sending browser's send span starts the trace.
    let browser_send = in_trace
        .iter()
        .find(|s| s.name == "send" && service(s) == "wsgate-demo")
        .unwrap_or_else(|| panic!("the browser's send span; trace: {}", describe()));
    assert!(browser_send.parent_span_id.is_empty(), "a root span");
    assert_eq!(
        browser_send.attr("messaging.destination.name").as_deref(),
        Some(ROOM)
    );
    assert_eq!(
        browser_send.attr("messaging.system").as_deref(),
        Some("wsgate")
    );

    // Node A's send span is its child.
    let gateway_send = in_trace
        .iter()
        .find(|s| s.name == "send" && s.attr("wsgate.node.id").as_deref() == Some("node-a"))
        .unwrap_or_else(|| panic!("node A's send span; trace: {}", describe()));
    assert_eq!(gateway_send.parent_span_id, browser_send.span_id);

    // Node B's process span continues it through NATS, and the receiving
    // browser's process span is that span's child.
    let node_b_process = in_trace
        .iter()
        .find(|s| s.name == "process" && s.attr("wsgate.node.id").as_deref() == Some("node-b"))
        .unwrap_or_else(|| panic!("node B's process span; trace: {}", describe()));
    assert_eq!(node_b_process.parent_span_id, gateway_send.span_id);
    let browser_process = in_trace
        .iter()
        .find(|s| {
            s.name == "process"
                && service(s) == "wsgate-demo"
                && s.parent_span_id == node_b_process.span_id
        })
        .unwrap_or_else(|| {
            panic!(
                "the receiving browser's process span; trace: {}",
                describe()
            )
        });
    assert_eq!(
        browser_process.kind,
        opentelemetry_proto::tonic::trace::v1::span::SpanKind::Consumer
    );
    assert_eq!(
        browser_process
            .attr("messaging.destination.name")
            .as_deref(),
        Some(ROOM)
    );
}
