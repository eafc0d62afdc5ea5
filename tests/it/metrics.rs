//! `/metrics` tells the exact truth about what clients did, in names that pass
//! `promtool check metrics`.

use serde_json::json;

use crate::helpers::{
    Metrics, NatsServer, TestApp, poll_until, require_tool, spawn_app, spawn_app_with_args, within,
};

/// A small, fully known session: two clients, every frame type, clean closes.
async fn scripted_session(app: &TestApp) {
    let mut a = app.connect().await;
    let mut b = app.connect().await;
    a.subscribe("m").await;
    b.subscribe("m").await;
    for n in 0..3 {
        a.publish_acked("m", json!(n), &format!("a-{n}")).await;
    }
    for n in 0..3 {
        assert_eq!(b.expect("message").await["data"], n);
    }
    b.send_text("{oops").await;
    b.expect_error("invalid_message", None).await;
    a.send_json(json!({"type": "ping", "id": "p"})).await;
    a.expect("pong").await;
    b.unsubscribe("m").await;
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn metrics_equal_exactly_what_the_clients_did() {
    let app = spawn_app().await;
    let before = app.metrics().await;
    // Bounded counters exist at zero before anything happens.
    for series in [
        "websocket_connections_active",
        "websocket_connections_opened_total",
        "websocket_errors_total{error_type=\"heartbeat_timeout\"}",
        "websocket_errors_total{error_type=\"too_large\"}",
        "websocket_messages_received_total{type=\"publish\"}",
        "websocket_messages_sent_total{type=\"message\"}",
        "websocket_messages_dropped_total{reason=\"queue_full\"}",
    ] {
        assert_eq!(before.get(series), 0.0, "{series} at start-up");
    }
    // The handling histogram is bound per frame type at start-up.
    for kind in ["subscribe", "unsubscribe", "publish", "ping", "invalid"] {
        let series =
            format!("websocket_message_handling_duration_seconds_count{{type=\"{kind}\"}}");
        assert_eq!(before.get(&series), 0.0, "{series} at start-up");
    }

    scripted_session(&app).await;

    let m = app
        .metrics_when("both sessions ended and were recorded", |m| {
            m.get("websocket_connections_active") == 0.0
                && m.get_or_zero(
                    "websocket_connection_duration_seconds_count{close_code=\"1000\",close_reason=\"client_close\"}",
                ) == 2.0
        })
        .await;
    let expect = |series: &str, value: f64| {
        assert_eq!(m.get(series), value, "{series}");
    };
    expect("websocket_connections_opened_total", 2.0);
    expect("websocket_connections_active", 0.0);
    for (kind, n) in [
        ("subscribe", 2.0),
        ("unsubscribe", 1.0),
        ("publish", 3.0),
        ("ping", 1.0),
        ("invalid", 1.0),
    ] {
        expect(
            &format!("websocket_messages_received_total{{type=\"{kind}\"}}"),
            n,
        );
        expect(
            &format!("websocket_message_handling_duration_seconds_count{{type=\"{kind}\"}}"),
            n,
        );
    }
    for (kind, n) in [
        ("message", 6.0),
        ("ack", 3.0),
        ("subscribed", 2.0),
        ("unsubscribed", 1.0),
        ("pong", 1.0),
        ("error", 1.0),
    ] {
        expect(
            &format!("websocket_messages_sent_total{{type=\"{kind}\"}}"),
            n,
        );
    }
    // One delivery observation per message frame written: 3 messages × 2 subscribers.
    expect("websocket_message_delivery_duration_seconds_count", 6.0);
    expect(
        "websocket_message_delivery_duration_seconds_bucket{le=\"+Inf\"}",
        6.0,
    );
    expect(
        "websocket_errors_total{error_type=\"invalid_message\"}",
        1.0,
    );
    let other_errors: f64 = m
        .0
        .iter()
        .filter(|(k, _)| k.starts_with("websocket_errors_total{") && !k.contains("invalid_message"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(other_errors, 0.0, "no other error happened");
    let dropped: f64 =
        m.0.iter()
            .filter(|(k, _)| k.starts_with("websocket_messages_dropped_total"))
            .map(|(_, v)| v)
            .sum();
    assert_eq!(dropped, 0.0);
    assert_no_forbidden_labels(&m);
}

#[tokio::test]
async fn http_requests_are_measured_by_route_and_upgrades_are_not() {
    let app = spawn_app().await;
    let client = app.connect().await;
    client.close().await;
    for path in ["/healthz", "/readyz", "/nowhere"] {
        within(reqwest::get(app.http_url(path))).await.expect("GET");
    }
    let m = app.metrics().await;
    let count = |labels: &str| {
        m.get_or_zero(&format!(
            "http_server_request_duration_seconds_count{{{labels}}}"
        ))
    };
    assert_eq!(
        count(
            "http_request_method=\"GET\",http_response_status_code=\"200\",http_route=\"/healthz\",url_scheme=\"http\""
        ),
        1.0
    );
    assert_eq!(
        count(
            "http_request_method=\"GET\",http_response_status_code=\"200\",http_route=\"/readyz\",url_scheme=\"http\""
        ),
        1.0
    );
    assert_eq!(
        count("http_request_method=\"GET\",http_response_status_code=\"404\",url_scheme=\"http\""),
        1.0
    );
    let upgrades: f64 =
        m.0.iter()
            .filter(|(k, _)| {
                k.starts_with("http_server_request_duration_seconds_count") && k.contains("/ws")
            })
            .map(|(_, v)| v)
            .sum();
    assert_eq!(
        upgrades, 0.0,
        "WebSocket upgrades are not HTTP request latencies"
    );
}

#[tokio::test]
async fn probes_answer() {
    let app = spawn_app().await;
    for (path, body) in [("/healthz", "ok\n"), ("/readyz", "ready\n")] {
        let response = within(reqwest::get(app.http_url(path))).await.expect("GET");
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.text().await.expect("body"), body);
    }
}

#[tokio::test]
async fn the_exposition_passes_promtool_check_metrics() {
    let app = spawn_app().await;
    scripted_session(&app).await;
    let text = app.metrics_text().await;
    assert!(text.contains("# HELP websocket_message_delivery_duration_seconds "));
    assert!(
        text.contains("process_resident_memory_bytes"),
        "process collector registered"
    );
    let Some(promtool) = require_tool("promtool") else {
        return;
    };
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write metrics");
    let out = child.wait_with_output().expect("promtool finishes");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool: {report}"
    );
}

/// The revision `wsgate_build_info` must carry: the commit checked out here,
/// or `unknown` where git cannot say (a tree without `.git`).
fn checked_out_revision() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--verify", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The series the capacity alerts divide by, and the build identity, carry the
/// configured values; the state gauges next to them count what clients hold.
#[tokio::test]
async fn capacity_series_carry_the_configured_limit_and_the_build() {
    let app = spawn_app_with_args(&["--max-connections", "2"]).await;
    let m = app.metrics().await;
    assert_eq!(m.get("wsgate_connections_limit"), 2.0);
    let build_info = format!(
        "wsgate_build_info{{revision=\"{}\",version=\"{}\"}}",
        checked_out_revision(),
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(m.get(&build_info), 1.0, "{build_info}");
    assert_eq!(m.get("websocket_rooms_active"), 0.0);
    assert_eq!(m.get("websocket_subscriptions_active"), 0.0);

    // Fill the node: the third upgrade is refused for capacity.
    let mut a = app.connect().await;
    let mut b = app.connect().await;
    a.subscribe("x").await;
    a.subscribe("y").await;
    b.subscribe("x").await;
    let refused = app.try_connect_with("/ws", |_| {}).await;
    assert!(refused.is_err(), "a third connection is refused");
    let m = app.metrics().await;
    assert_eq!(m.get("websocket_connections_active"), 2.0);
    assert_eq!(m.get("wsgate_connections_limit"), 2.0);
    assert_eq!(
        m.get("websocket_connections_rejected_total{reason=\"capacity\"}"),
        1.0
    );
    assert_eq!(m.get("websocket_rooms_active"), 2.0);
    assert_eq!(m.get("websocket_subscriptions_active"), 3.0);
    a.close().await;
    b.close().await;
}

/// No metric may carry a label that identifies a room, user, connection or message.
fn assert_no_forbidden_labels(m: &Metrics) {
    for series in m.0.keys() {
        for forbidden in [
            "room",
            "user",
            "conn",
            "connection_id",
            "message_id",
            "node",
        ] {
            assert!(
                !series.contains(&format!("{forbidden}=\"")),
                "{series} carries a per-entity label"
            );
        }
    }
}

/// The README's metrics table is the contract; `/metrics` is what the code
/// does. On a node that shares its rooms through a real nats-server (the
/// broker rows exist only there), after a session that touches every part of
/// the message path, every family the gateway exposes is in the table, and
/// every row of the table is exposed, except the SDK's span counters, which
/// exist only while traces are exported (tests/it/traces.rs and faults.rs read
/// them).
#[tokio::test]
async fn the_readme_metrics_table_is_what_metrics_exposes() {
    let readme = include_str!("../../README.md");
    let table = readme
        .split("\n## Metrics\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README.md has a Metrics section");
    let rows: Vec<&str> = table
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .collect();
    assert!(rows.len() > 20, "the table was read: {rows:?}");
    // A row `name_*` stands for the series of a histogram or a group
    // (`name_bucket`, `name_sum`, ...): its families begin with `name_`.
    let covers = |row: &str, family: &str| match row.strip_suffix('*') {
        Some(prefix) => format!("{family}_").starts_with(prefix),
        None => family == row,
    };
    let documented = |family: &str| rows.iter().any(|row| covers(row, family));

    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let app = spawn_app_with_args(&["--nats-url", &nats.url()]).await;
    // Every frame type, a refusal, and closes; the publisher is not a
    // subscriber, so its ack and the delivery cannot interleave.
    let mut subscriber = app.connect().await;
    let mut publisher = app.connect().await;
    subscriber.subscribe("m").await;
    publisher.publish_acked("m", json!(1), "p-1").await;
    assert_eq!(subscriber.expect("message").await["data"], 1);
    publisher.send_text("{oops").await;
    publisher.expect_error("invalid_message", None).await;
    publisher
        .send_json(json!({"type": "ping", "id": "p"}))
        .await;
    publisher.expect("pong").await;
    subscriber.unsubscribe("m").await;
    subscriber.close().await;
    publisher.close().await;
    // Closed connections are recorded as their sessions end: wait for every
    // row to be exposed, then check the other direction on that scrape.
    let exposition = poll_until(async || {
        let exposition = app.metrics_text().await;
        let families = families(&exposition);
        match rows
            .iter()
            .filter(|row| !row.starts_with("otel_sdk_"))
            .find(|row| !families.iter().any(|family| covers(row, family)))
        {
            Some(row) => Err(format!(
                "README.md's metrics table lists {row}, which /metrics does not expose"
            )),
            None => Ok(exposition),
        }
    })
    .await;
    for family in families(&exposition) {
        assert!(
            documented(family),
            "{family} is exposed but not in README.md's metrics table"
        );
    }
}

/// The metric families an exposition declares (`# TYPE <family> <type>`).
fn families(exposition: &str) -> std::collections::BTreeSet<&str> {
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split(' ').next())
        .collect()
}
