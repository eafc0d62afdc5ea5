//! Scale-out: gateway processes sharing rooms through a real `nats-server`.

use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::json;

use crate::helpers::{Collector, DEADLINE, Gateway, NatsServer, hs256_token};
// The helper lives in its own module; other test modules import it from here.

async fn node(nats: &NatsServer, id: &str, collector: Option<&Collector>) -> Gateway {
    let url = nats.url();
    let mut env = vec![("OTEL_BSP_SCHEDULE_DELAY", "50".to_owned())];
    match collector {
        Some(c) => {
            env.push(("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()));
            env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", c.endpoint()));
        }
        None => env.push(("OTEL_TRACES_EXPORTER", "none".into())),
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Gateway::start(&env, &["--nats-url", &url, "--node-id", id]).await
}

/// Nodes "node-a" and "node-b" on `nats`, without trace export, both ready.
async fn two_ready_nodes(nats: &NatsServer) -> (Gateway, Gateway) {
    let a = node(nats, "node-a", None).await;
    let b = node(nats, "node-b", None).await;
    a.readiness_becomes(200).await;
    b.readiness_becomes(200).await;
    (a, b)
}

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";

#[tokio::test]
async fn an_http_publish_on_one_node_reaches_the_other_in_one_trace() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let collector = Collector::grpc().await;
    let a = node(&nats, "node-a", Some(&collector)).await;
    let b = node(&nats, "node-b", Some(&collector)).await;
    a.readiness_becomes(200).await;
    b.readiness_becomes(200).await;
    let mut sub = b.connect().await;
    sub.subscribe("across").await;

    let response = reqwest::Client::new()
        .post(a.url("/api/publish"))
        .header("content-type", "application/json")
        .header("traceparent", format!("00-{TRACE}-{CALLER_SPAN}-01"))
        .body(r#"{"room":"across","data":{"from":"backend"}}"#)
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 202);
    let body: serde_json::Value =
        serde_json::from_str(&response.text().await.expect("body")).expect("json");
    let id = body["id"].as_str().expect("id").to_owned();

    let frame = sub.expect("message").await;
    assert_eq!(frame["id"], id.as_str());
    assert_eq!(frame["data"], json!({"from": "backend"}));
    let traceparent = frame["traceparent"].as_str().expect("traceparent");
    assert_eq!(traceparent.split('-').nth(1), Some(TRACE));

    let spans = collector
        .spans_when("spans from both nodes", |s| {
            s.iter().any(|x| x.name == "process" && x.trace_id == TRACE)
                && s.iter()
                    .any(|x| x.name == "POST /api/publish" && x.trace_id == TRACE)
        })
        .await;
    let in_trace: Vec<_> = spans.iter().filter(|s| s.trace_id == TRACE).collect();
    let find = |name: &str| {
        let found: Vec<_> = in_trace.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "one {name}: {in_trace:#?}");
        *found[0]
    };
    let http = find("POST /api/publish");
    let send = find("send");
    let process = find("process");
    assert_eq!(http.kind, SpanKind::Server);
    assert_eq!(http.parent_span_id, CALLER_SPAN, "under the caller's span");
    assert_eq!(send.kind, SpanKind::Producer);
    assert_eq!(send.parent_span_id, http.span_id);
    assert_eq!(process.kind, SpanKind::Consumer);
    assert_eq!(process.parent_span_id, send.span_id);
    assert_eq!(
        traceparent.split('-').nth(2),
        Some(process.span_id.as_str())
    );
    assert_eq!(
        http.resource_attr("service.instance.id").as_deref(),
        Some("node-a")
    );
    assert_eq!(
        send.resource_attr("service.instance.id").as_deref(),
        Some("node-a")
    );
    assert_eq!(
        process.resource_attr("service.instance.id").as_deref(),
        Some("node-b")
    );
    for span in [send, process] {
        assert_eq!(span.attr("messaging.system").as_deref(), Some("nats"));
        assert_eq!(
            span.attr("messaging.destination.name").as_deref(),
            Some("across")
        );
        assert_eq!(
            span.attr("messaging.message.id").as_deref(),
            Some(id.as_str())
        );
    }
}

#[tokio::test]
async fn every_subscriber_on_every_node_gets_each_message_once_in_order() {
    const MESSAGES: u64 = 1000;
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let (a, b) = two_ready_nodes(&nats).await;
    let mut subscribers = Vec::new();
    for gw in [&a, &a, &b, &b] {
        let mut c = gw.connect().await;
        c.subscribe("many").await;
        subscribers.push(c);
    }
    let mut publisher = a.connect().await;
    for seq in 0..MESSAGES {
        publisher
            .send_json(
                json!({"type": "publish", "room": "many", "data": seq, "id": seq.to_string()}),
            )
            .await;
    }
    for seq in 0..MESSAGES {
        let ack = publisher.expect("ack").await;
        assert_eq!(ack["id"], seq.to_string());
    }
    for (i, sub) in subscribers.iter_mut().enumerate() {
        for seq in 0..MESSAGES {
            let frame = sub.expect("message").await;
            assert_eq!(
                frame["data"], seq,
                "subscriber {i}: a gap, a duplicate or disorder"
            );
        }
        // Nothing more: the next frame is the reply to this ping.
        sub.send_json(json!({"type": "ping", "id": "end"})).await;
        assert_eq!(
            sub.recv().await,
            json!({"type": "pong", "id": "end"}),
            "subscriber {i}"
        );
    }
    let (ma, mb) = (a.metrics().await, b.metrics().await);
    let sent = "messaging_client_sent_messages_total{messaging_operation_name=\"publish\",messaging_system=\"nats\"}";
    assert_eq!(ma.get(sent), MESSAGES as f64);
    let consumed = "messaging_client_consumed_messages_total{messaging_operation_name=\"process\",messaging_system=\"nats\"}";
    assert_eq!(
        ma.get(consumed),
        MESSAGES as f64,
        "node A: one copy per message"
    );
    assert_eq!(
        mb.get(consumed),
        MESSAGES as f64,
        "node B: one copy per message"
    );
    assert_eq!(
        ma.get("websocket_messages_sent_total{type=\"message\"}"),
        2.0 * MESSAGES as f64
    );
    assert_eq!(
        mb.get("websocket_messages_sent_total{type=\"message\"}"),
        2.0 * MESSAGES as f64
    );
}

#[tokio::test]
async fn a_nats_outage_refuses_publishes_flips_readiness_and_recovers() {
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    let (a, b) = two_ready_nodes(&nats).await;
    let mut sub = b.connect().await;
    sub.subscribe("outage").await;
    let mut publisher = a.connect().await;
    publisher
        .publish_acked("outage", json!("before"), "p0")
        .await;
    assert_eq!(sub.expect("message").await["data"], "before");

    nats.stop();
    a.readiness_becomes(503).await;
    b.readiness_becomes(503).await;
    publisher
        .send_json(json!({"type": "publish", "room": "outage", "data": "during", "id": "p1"}))
        .await;
    publisher
        .expect_error("broker_unavailable", Some("p1"))
        .await;
    let during = a.metrics().await;
    assert_eq!(
        during.get("wsgate_broker_connected{messaging_system=\"nats\"}"),
        0.0
    );
    assert_eq!(
        during.get("websocket_errors_total{error_type=\"broker_unavailable\"}"),
        1.0
    );
    assert_eq!(
        during.get("messaging_client_sent_messages_total{error_type=\"broker_unavailable\",messaging_operation_name=\"publish\",messaging_system=\"nats\"}"),
        1.0
    );

    nats.restart().await;
    let restarted = tokio::time::Instant::now();
    // Publish until B delivers again: B's subscription must come back by itself.
    let mut attempt = 0;
    let resumed = loop {
        attempt += 1;
        let id = format!("r{attempt}");
        publisher
            .send_json(json!({"type": "publish", "room": "outage", "data": "after", "id": id}))
            .await;
        let reply = publisher.recv().await;
        if reply["type"] == "ack"
            && let Ok(frame) = tokio::time::timeout(Duration::from_millis(200), sub.recv()).await
        {
            assert_eq!(frame["data"], "after");
            break restarted.elapsed();
        }
        assert!(restarted.elapsed() < DEADLINE, "delivery never resumed");
    };
    assert!(
        resumed <= Duration::from_secs(5),
        "delivery resumed after {resumed:?}"
    );
    a.readiness_becomes(200).await;
    b.readiness_becomes(200).await;
    for gw in [&a, &b] {
        let m = gw.metrics().await;
        assert_eq!(
            m.get("wsgate_broker_connected{messaging_system=\"nats\"}"),
            1.0
        );
        assert!(m.get("wsgate_broker_reconnects_total{messaging_system=\"nats\"}") >= 1.0);
    }
}

#[tokio::test]
async fn a_room_is_live_on_every_node_once_subscribed_arrives() {
    // "subscribed" promises that a message published anywhere afterwards is
    // delivered. Each round subscribes on B to a room nobody has used, then
    // publishes on A at once: a SUB the NATS server has not processed yet
    // would lose the message (a flushed SUB is only written to the socket).
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let (a, b) = two_ready_nodes(&nats).await;
    let mut subscriber = b.connect().await;
    let mut publisher = a.connect().await;
    // Busy threads on both cores widen the window in which the NATS server
    // has not yet read a SUB its client already wrote.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let burners: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    for round in 0..200 {
        let room = format!("fresh-{round}");
        subscriber.subscribe(&room).await;
        publisher
            .publish_acked(&room, json!(round), &format!("p{round}"))
            .await;
        let frame = subscriber.expect("message").await;
        assert_eq!(frame["room"], room.as_str());
        assert_eq!(frame["data"], round);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for burner in burners {
        burner.join().expect("burner");
    }
}

#[tokio::test]
async fn a_node_listens_to_a_room_only_while_it_has_local_subscribers() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let a = node(&nats, "node-a", None).await;
    a.readiness_becomes(200).await;
    nats.subscriptions_become(0).await;
    let mut first = a.connect().await;
    first.subscribe("shared").await;
    // Confirmed before "subscribed" was sent, so no polling is needed here.
    assert_eq!(nats.subscriptions().await, 1);
    let mut second = a.connect().await;
    second.subscribe("shared").await;
    let mut other = a.connect().await;
    other.subscribe("other.room").await;
    assert_eq!(
        nats.subscriptions().await,
        2,
        "one per room per node, not per client"
    );
    first.unsubscribe("shared").await;
    second.subscribe("shared").await;
    assert_eq!(
        nats.subscriptions().await,
        2,
        "still one local subscriber to shared"
    );
    second.close().await;
    nats.subscriptions_become(1).await;
    drop(other);
    nats.subscriptions_become(0).await;
}

#[tokio::test]
async fn tenants_stay_apart_across_nodes() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let secret = "tenants-over-nats";
    let url = nats.url();
    let start = |id: &'static str| {
        let url = url.clone();
        async move {
            Gateway::start(
                &[
                    ("OTEL_TRACES_EXPORTER", "none"),
                    ("WSGATE_JWT_SECRET", secret),
                ],
                &["--nats-url", &url, "--node-id", id],
            )
            .await
        }
    };
    let (a, b) = (start("node-a").await, start("node-b").await);
    a.wait_ready().await;
    b.wait_ready().await;
    let connect = async |gw: &Gateway, tenant: &str| {
        let claims = json!({"sub": "u", "exp": 4_000_000_000u64, "tenant": tenant});
        let token = hs256_token(secret, &claims);
        gw.connect_to(&format!("/ws?token={token}")).await
    };
    let mut acme_on_a = connect(&a, "acme").await;
    let mut acme_on_b = connect(&b, "acme").await;
    let mut globex_on_b = connect(&b, "globex").await;
    for c in [&mut acme_on_a, &mut acme_on_b, &mut globex_on_b] {
        c.subscribe("lobby").await;
    }
    acme_on_a
        .send_json(json!({"type": "publish", "room": "lobby", "data": "acme news"}))
        .await;
    assert_eq!(acme_on_b.expect("message").await["data"], "acme news");
    globex_on_b
        .send_json(json!({"type": "publish", "room": "lobby", "data": "globex news"}))
        .await;
    assert_eq!(
        globex_on_b.expect("message").await["data"],
        "globex news",
        "its own, not acme's"
    );
    // acme on node A got its own message and nothing of globex's.
    assert_eq!(acme_on_a.expect("message").await["data"], "acme news");
    acme_on_a
        .send_json(json!({"type": "ping", "id": "end"}))
        .await;
    assert_eq!(acme_on_a.recv().await, json!({"type": "pong", "id": "end"}));
}
