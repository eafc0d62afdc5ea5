//! Start-up with NATS: a node opens its port before its first connection to
//! NATS. Requests that arrive meanwhile wait for that connection (up to
//! `--broker-connect-timeout`) instead of being refused; `/readyz` stays 503
//! until it is made.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{
    DEADLINE, NatsServer, TestApp, poll_until, post_publish, spawn_app_with, within,
};

async fn readiness(app: &TestApp) -> u16 {
    within(reqwest::get(app.http_url("/readyz")))
        .await
        .expect("readyz")
        .status()
        .as_u16()
}

#[tokio::test]
async fn requests_made_before_the_first_connection_wait_for_it() {
    let Some(mut nats) = NatsServer::unstarted() else {
        return;
    };
    // Nothing listens on the NATS port yet.
    let url = nats.url();
    let app = spawn_app_with(|c| {
        c.nats_url = Some(url.into());
        c.broker_connect_timeout = DEADLINE;
    })
    .await;
    assert_eq!(readiness(&app).await, 503, "not ready before NATS");
    let mut subscriber = app.connect().await;
    subscriber
        .send_json(json!({"type": "subscribe", "room": "early"}))
        .await;
    let mut publisher = app.connect().await;
    publisher
        .send_json(json!({"type": "publish", "room": "elsewhere", "data": 1, "id": "p1"}))
        .await;
    let http_publish = tokio::spawn(
        reqwest::Client::new()
            .post(app.http_url("/api/publish"))
            .header("content-type", "application/json")
            .body(r#"{"room":"elsewhere","data":2}"#)
            .send(),
    );
    // Both frames are answered only after NATS is up: the node is still
    // trying to reach it, and a refusal would arrive first.
    assert_eq!(readiness(&app).await, 503);

    nats.restart().await;
    let frame = subscriber.recv().await;
    assert_eq!(
        frame,
        json!({"type": "subscribed", "room": "early"}),
        "waited for NATS"
    );
    let ack = publisher.recv().await;
    assert_eq!(ack, json!({"type": "ack", "id": "p1", "room": "elsewhere"}));
    let response = within(http_publish)
        .await
        .expect("request task")
        .expect("POST");
    assert_eq!(response.status(), 202);
    poll_until(async || match readiness(&app).await {
        200 => Ok(()),
        other => Err(format!("/readyz to answer 200, not {other}")),
    })
    .await;
    // And the subscription is live: a publish now reaches the subscriber.
    publisher.publish_acked("early", json!("hello"), "p2").await;
    assert_eq!(subscriber.expect("message").await["data"], "hello");
}

#[tokio::test]
async fn past_the_connect_timeout_requests_are_refused_as_in_an_outage() {
    let Some(nats) = NatsServer::unstarted() else {
        return;
    };
    let url = nats.url();
    let app = spawn_app_with(|c| {
        c.nats_url = Some(url.into());
        c.broker_connect_timeout = Duration::from_millis(200);
    })
    .await;
    let mut client = app.connect().await;
    client
        .send_json(json!({"type": "subscribe", "room": "never"}))
        .await;
    client.expect_error("broker_unavailable", None).await;
    client
        .send_json(json!({"type": "publish", "room": "never", "data": 1, "id": "p1"}))
        .await;
    client.expect_error("broker_unavailable", Some("p1")).await;
    let status = post_publish(&app.http_url(""), r#"{"room":"never","data":2}"#, &[]).await;
    assert_eq!(status, 503);
    assert_eq!(readiness(&app).await, 503);
    let m = app.metrics().await;
    assert_eq!(
        m.get("wsgate_broker_rooms{messaging_system=\"nats\"}"),
        0.0,
        "the failed subscribe left nothing"
    );
}
