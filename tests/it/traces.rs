//! Spans follow a message from the client's traceparent to the delivered frame,
//! and reach a real OTLP receiver over gRPC or HTTP.

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::json;

use crate::helpers::{Closed, Collector, Gateway, Span, post_publish, within};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn grpc_env(collector: &Collector) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50".into()),
        ("RUST_LOG", "info,wsgate=debug".into()),
    ]
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn one<'a>(spans: &'a [Span], name: &str, trace: &str) -> &'a Span {
    let found: Vec<_> = spans
        .iter()
        .filter(|s| s.name == name && s.trace_id == trace)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one {name} span in trace {trace}: {found:#?}"
    );
    found[0]
}

/// The trace id and span id of a `traceparent`.
fn ids(traceparent: &str) -> (String, String) {
    let parts: Vec<_> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    (parts[1].to_owned(), parts[2].to_owned())
}

#[tokio::test]
async fn a_message_is_one_connected_trace_from_client_to_delivered_frame() {
    let collector = Collector::grpc().await;
    let env = grpc_env(&collector);
    let gw = Gateway::start(&env_refs(&env), &["--node-id", "node-a"]).await;
    let mut sub = gw.connect().await;
    sub.subscribe("lobby").await;
    let mut publisher = gw.connect().await;
    publisher
        .send_json(json!({
            "type": "publish", "room": "lobby", "data": "hello", "id": "c-1",
            "traceparent": format!("00-{TRACE}-{CLIENT_SPAN}-01"),
            "tracestate": "vendor=1",
        }))
        .await;
    publisher.expect("ack").await;
    let delivered = sub.expect("message").await;
    let (delivered_trace, delivered_span) = ids(delivered["traceparent"]
        .as_str()
        .expect("the frame carries a traceparent"));
    assert_eq!(
        delivered_trace, TRACE,
        "the delivered frame continues the client's trace"
    );

    let spans = collector
        .spans_when("send and process", |s| {
            ["send", "process"]
                .iter()
                .all(|n| s.iter().any(|x| x.name == *n && x.trace_id == TRACE))
        })
        .await;
    let send = one(&spans, "send", TRACE);
    let process = one(&spans, "process", TRACE);
    assert_eq!(
        spans.iter().filter(|s| s.trace_id == TRACE).count(),
        2,
        "a publish frame's handling is its send span: two spans per message on one node"
    );

    assert_eq!(send.kind, SpanKind::Producer);
    assert_eq!(
        send.parent_span_id, CLIENT_SPAN,
        "child of the client's span"
    );
    assert_eq!(process.kind, SpanKind::Consumer);
    assert_eq!(process.parent_span_id, send.span_id);
    assert_eq!(
        process.span_id, delivered_span,
        "the frame carries the process span"
    );

    let message_id = delivered["id"].as_str().expect("id");
    for span in [send, process] {
        assert_eq!(span.attr("messaging.system").as_deref(), Some("wsgate"));
        assert_eq!(
            span.attr("messaging.destination.name").as_deref(),
            Some("lobby")
        );
        assert_eq!(
            span.attr("messaging.message.id").as_deref(),
            Some(message_id)
        );
        assert_eq!(span.attr("wsgate.node.id").as_deref(), Some("node-a"));
    }
    assert_eq!(
        send.attr("messaging.operation.type").as_deref(),
        Some("send")
    );
    assert_eq!(
        process.attr("messaging.operation.type").as_deref(),
        Some("process")
    );
    assert_eq!(process.attr("wsgate.recipients").as_deref(), Some("1"));
    assert!(send.attr("websocket.connection.id").is_some());
    assert_eq!(
        send.attr("network.protocol.name").as_deref(),
        Some("websocket")
    );
    assert_eq!(
        send.attr("messaging.message.body.size").as_deref(),
        Some("7")
    );
    assert!(process.attr("websocket.connection.id").is_none());
    for span in [send, process] {
        assert_eq!(
            span.resource_attr("service.name").as_deref(),
            Some("wsgate")
        );
        assert_eq!(
            span.resource_attr("service.instance.id").as_deref(),
            Some("node-a")
        );
        assert!(span.attr("room").is_none() && !span.name.contains("lobby"));
    }

    // The log line written while handling the publish carries the trace.
    let logged = gw
        .logs()
        .into_iter()
        .find(|l| l["fields"]["message"] == "message published")
        .expect("a debug line for the publish");
    assert_eq!(logged["trace_id"], TRACE);
}

#[tokio::test]
async fn an_invalid_traceparent_starts_a_new_root_trace() {
    let collector = Collector::grpc().await;
    let env = grpc_env(&collector);
    let gw = Gateway::start(&env_refs(&env), &[]).await;
    let mut sub = gw.connect().await;
    sub.subscribe("r").await;
    // Looks almost right, but the trace id is 16 hex digits: invalid per W3C.
    sub.send_json(json!({"type": "publish", "room": "r", "data": 1,
        "traceparent": format!("00-{}-{CLIENT_SPAN}-01", &TRACE[..16])}))
        .await;
    let delivered = sub.expect("message").await;
    let (trace, _) = ids(delivered["traceparent"].as_str().expect("traceparent"));
    assert_ne!(trace, TRACE);
    assert!(!trace.starts_with(&TRACE[..16]));
    let spans = collector
        .spans_when("a new root", |s| {
            s.iter().any(|x| x.name == "send" && x.trace_id == trace)
        })
        .await;
    let send = one(&spans, "send", &trace);
    assert_eq!(send.parent_span_id, "", "a new root has no parent");
}

#[tokio::test]
async fn http_requests_get_server_spans_that_continue_the_callers_trace() {
    let collector = Collector::grpc().await;
    let env = grpc_env(&collector);
    let gw = Gateway::start(&env_refs(&env), &[]).await;
    let response = publish_over_http(&gw, Some(&format!("00-{TRACE}-{CLIENT_SPAN}-01"))).await;
    assert_eq!(response, 202);
    let spans = collector
        .spans_when("the HTTP span and its send span", |s| {
            ["POST /api/publish", "send"]
                .iter()
                .all(|n| s.iter().any(|x| x.trace_id == TRACE && x.name == *n))
        })
        .await;
    let span = one(&spans, "POST /api/publish", TRACE);
    let send = one(&spans, "send", TRACE);
    assert_eq!(send.kind, SpanKind::Producer);
    assert_eq!(send.parent_span_id, span.span_id, "the request's child");
    assert!(send.attr("websocket.connection.id").is_none());
    assert!(send.attr("network.protocol.name").is_none());
    assert_eq!(span.kind, SpanKind::Server);
    assert_eq!(span.parent_span_id, CLIENT_SPAN);
    assert_eq!(span.attr("http.route").as_deref(), Some("/api/publish"));
    assert_eq!(span.attr("url.scheme").as_deref(), Some("http"));
    assert_eq!(
        span.attr("http.response.status_code").as_deref(),
        Some("202")
    );
}

/// `POST /api/publish` with a small message, optionally continuing a trace;
/// returns the status.
async fn publish_over_http(gw: &Gateway, traceparent: Option<&str>) -> u16 {
    let headers: Vec<(&str, &str)> = traceparent
        .map(|t| ("traceparent", t))
        .into_iter()
        .collect();
    post_publish(&gw.url(""), r#"{"room":"api","data":1}"#, &headers).await
}

#[tokio::test]
async fn scrapes_and_probes_make_no_spans_on_either_listener() {
    let collector = Collector::grpc().await;
    let env = grpc_env(&collector);
    let gw = Gateway::start(&env_refs(&env), &["--admin-listen", "127.0.0.1:0"]).await;
    let admin = gw.admin_addr.expect("an admin listener");
    let public = gw.addr;
    for addr in [public, admin] {
        for path in ["/healthz", "/readyz", "/metrics"] {
            // The public listener has no /metrics beside an admin listener:
            // its 404 is no scrape, and still a request that gets a span.
            let status = within(reqwest::get(format!("http://{addr}{path}")))
                .await
                .expect("GET")
                .status();
            let expected = if addr == public && path == "/metrics" {
                404
            } else {
                200
            };
            assert_eq!(status.as_u16(), expected, "GET {addr}{path}");
        }
    }
    // Spans are exported in the order they end, so once the publish's span is
    // in, any span of the earlier probes would be too.
    assert_eq!(publish_over_http(&gw, None).await, 202);
    let spans = collector
        .spans_when("the publish request's span", |s| {
            s.iter().any(|x| x.name == "POST /api/publish")
        })
        .await;
    let server: Vec<_> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server)
        .map(|s| s.name.as_str())
        .collect();
    for probe in ["GET /healthz", "GET /readyz", "GET /metrics"] {
        assert!(!server.contains(&probe), "a span for {probe}: {server:?}");
    }
    assert!(
        server.contains(&"GET"),
        "the unrouted 404 still has its span: {server:?}"
    );
}

#[tokio::test]
async fn sigterm_closes_every_client_with_1001_flushes_spans_and_exits_0() {
    let collector = Collector::grpc().await;
    let mut env = grpc_env(&collector);
    // Only the shutdown flush can deliver these spans.
    env.push(("OTEL_BSP_SCHEDULE_DELAY", "600000".into()));
    let gw = Gateway::start(&env_refs(&env), &["--shutdown-grace", "5s"]).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        let mut c = gw.connect().await;
        c.subscribe("bye").await;
        clients.push(c);
    }
    clients[0]
        .send_json(json!({"type": "publish", "room": "bye", "data": 1, "traceparent": format!("00-{TRACE}-{CLIENT_SPAN}-01")}))
        .await;
    for c in &mut clients {
        c.expect("message").await;
    }
    assert!(
        collector.spans().is_empty(),
        "nothing exported before shutdown"
    );

    gw.terminate();
    for c in &mut clients {
        assert_eq!(
            c.closed().await,
            Closed::Frame(1001, "server shutting down".into())
        );
    }
    let status = gw.wait().await;
    assert!(status.success(), "exit status {status:?}");
    let spans = collector.spans();
    for name in ["send", "process"] {
        one(&spans, name, TRACE);
    }
}

#[tokio::test]
async fn http_protobuf_is_the_default_protocol_and_works() {
    let collector = Collector::http().await;
    let endpoint = collector.endpoint();
    let gw = Gateway::start(
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
        &[],
    )
    .await;
    let mut c = gw.connect().await;
    c.send_json(json!({"type": "publish", "room": "h", "data": 1,
        "traceparent": format!("00-{TRACE}-{CLIENT_SPAN}-01")}))
        .await;
    collector
        .spans_when("spans over OTLP/HTTP", |s| {
            s.iter().any(|x| x.name == "process" && x.trace_id == TRACE)
        })
        .await;
}

#[tokio::test]
async fn otel_sdk_disabled_means_no_otel_series_and_no_spans() {
    let collector = Collector::grpc().await;
    let mut env = grpc_env(&collector);
    env.push(("OTEL_SDK_DISABLED", "true".into()));
    let gw = Gateway::start(&env_refs(&env), &[]).await;
    let mut c = gw.connect().await;
    c.subscribe("quiet").await;
    c.publish_acked("quiet", json!(1), "q").await;
    let text = reqwest::get(gw.url("/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    assert!(!text.contains("websocket_"), "no OTel series: {text}");
    assert!(!text.contains("target_info"));
    assert!(
        text.contains("process_cpu_seconds_total"),
        "process metrics remain"
    );
    gw.terminate();
    assert!(gw.wait().await.success());
    assert!(collector.spans().is_empty(), "no spans at all");
}

#[tokio::test]
async fn traces_exporter_none_still_propagates_the_trace_onto_frames() {
    let gw = Gateway::start(&[("OTEL_TRACES_EXPORTER", "none")], &[]).await;
    let mut c = gw.connect().await;
    c.subscribe("n").await;
    c.send_json(json!({"type": "publish", "room": "n", "data": 1,
        "traceparent": format!("00-{TRACE}-{CLIENT_SPAN}-01")}))
        .await;
    let frame = c.expect("message").await;
    assert_eq!(
        ids(frame["traceparent"].as_str().expect("traceparent")).0,
        TRACE
    );
}

#[tokio::test]
async fn an_unsupported_exporter_setting_is_refused_at_start_up() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .args(["--listen", "127.0.0.1:0"])
        .env("OTEL_TRACES_EXPORTER", "zipkin")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("OTEL_TRACES_EXPORTER"), "{stderr}");
}

#[tokio::test]
async fn the_sdks_own_variables_set_service_resource_and_sampler() {
    let collector = Collector::grpc().await;
    let mut env = grpc_env(&collector);
    env.push(("OTEL_SERVICE_NAME", "chat-gateway".into()));
    env.push((
        "OTEL_RESOURCE_ATTRIBUTES",
        "deployment.environment.name=ci,service.instance.id=from-env".into(),
    ));
    let gw = Gateway::start(&env_refs(&env), &["--node-id", "node-a"]).await;
    let mut c = gw.connect().await;
    c.send_json(json!({"type": "publish", "room": "s", "data": 1,
        "traceparent": format!("00-{TRACE}-{CLIENT_SPAN}-01")}))
        .await;
    let spans = collector
        .spans_when("the send span", |s| {
            s.iter().any(|x| x.trace_id == TRACE && x.name == "send")
        })
        .await;
    let span = one(&spans, "send", TRACE);
    assert_eq!(
        span.resource_attr("service.name").as_deref(),
        Some("chat-gateway")
    );
    assert_eq!(
        span.resource_attr("deployment.environment.name").as_deref(),
        Some("ci")
    );
    assert_eq!(
        span.resource_attr("service.instance.id").as_deref(),
        Some("from-env"),
        "what the user set wins over the node id"
    );

    // always_off: nothing is recorded or exported. A publisher's own trace
    // context is still passed through to subscribers; without one, frames carry
    // none.
    let quiet = Collector::grpc().await;
    let mut env = grpc_env(&quiet);
    env.push(("OTEL_TRACES_SAMPLER", "always_off".into()));
    let gw = Gateway::start(&env_refs(&env), &[]).await;
    let mut c = gw.connect().await;
    c.subscribe("q").await;
    c.send_json(json!({"type": "publish", "room": "q", "data": 1}))
        .await;
    let frame = c.expect("message").await;
    assert!(
        frame.get("traceparent").is_none(),
        "an untraced message carries no context: {frame}"
    );
    let client = format!("00-{TRACE}-{CLIENT_SPAN}-01");
    c.send_json(json!({"type": "publish", "room": "q", "data": 2, "traceparent": client}))
        .await;
    let frame = c.expect("message").await;
    assert_eq!(
        frame["traceparent"], client,
        "the publisher's context passes through"
    );
    gw.terminate();
    let status = gw.wait().await;
    assert!(status.success(), "a clean exit: {status:?}");
    assert!(quiet.spans().is_empty(), "always_off exports nothing");
}

#[tokio::test]
async fn a_ratio_sampler_samples_that_share_of_messages_once() {
    const MESSAGES: usize = 400;
    let collector = Collector::grpc().await;
    let mut env = grpc_env(&collector);
    env.push(("OTEL_TRACES_SAMPLER", "traceidratio".into()));
    env.push(("OTEL_TRACES_SAMPLER_ARG", "0.5".into()));
    let gw = Gateway::start(&env_refs(&env), &[]).await;
    let mut c = gw.connect().await;
    c.subscribe("ratio").await;
    for n in 0..MESSAGES {
        c.send_json(json!({"type": "publish", "room": "ratio", "data": n}))
            .await;
    }
    let mut traced = std::collections::HashSet::new();
    for _ in 0..MESSAGES {
        let frame = c.expect("message").await;
        if let Some(tp) = frame["traceparent"].as_str() {
            traced.insert(ids(tp).0);
        }
    }
    // Binomial(400, 0.5): 200 ± 10; sampling twice (the pre-check and the SDK
    // each deciding) would give about 100.
    assert!(
        (150..=250).contains(&traced.len()),
        "{} of {MESSAGES} traced",
        traced.len()
    );
    gw.terminate();
    assert!(gw.wait().await.success());
    // Every traced message, and only those, has its two spans exported.
    let spans = collector.spans();
    for name in ["send", "process"] {
        let traces: std::collections::HashSet<String> = spans
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.trace_id.clone())
            .collect();
        assert_eq!(traces, traced, "{name} spans match the traced frames");
    }
}
