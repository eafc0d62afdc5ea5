//! Subscribing, publishing and fan-out, as a client sees them.

use serde_json::json;

use crate::helpers::{Closed, spawn_app, within};

#[tokio::test]
async fn a_published_message_reaches_every_subscriber_and_the_publisher_gets_an_ack() {
    let app = spawn_app().await;
    let mut alice = app.connect().await;
    let mut bob = app.connect().await;
    let mut carol = app.connect().await;
    alice.subscribe("lobby").await;
    bob.subscribe("lobby").await;
    carol.subscribe("elsewhere").await;

    bob.send_json(json!({"type": "publish", "room": "lobby", "data": {"text": "hi", "n": [1, 2]}, "id": "c-17"}))
        .await;

    let at_alice = alice.expect("message").await;
    assert_eq!(at_alice["room"], "lobby");
    assert_eq!(at_alice["data"], json!({"text": "hi", "n": [1, 2]}));
    let id = at_alice["id"].as_str().expect("server message id");
    assert!(!id.is_empty());
    // The publisher is subscribed too, so it receives the message, then the ack.
    let at_bob = bob.expect("message").await;
    assert_eq!(at_bob["id"], id, "one message, one id, for every recipient");
    let ack = bob.expect("ack").await;
    assert_eq!(ack, json!({"type": "ack", "id": "c-17", "room": "lobby"}));

    // Carol, in another room, hears nothing: her next frame is her own pong.
    carol.send_json(json!({"type": "ping", "id": "p"})).await;
    assert_eq!(carol.recv().await, json!({"type": "pong", "id": "p"}));
}

#[tokio::test]
async fn data_is_relayed_byte_for_byte() {
    let app = spawn_app().await;
    let mut sub = app.connect().await;
    sub.subscribe("raw").await;
    let mut publisher = app.connect().await;
    // Odd spacing and key order survive: data is never re-encoded.
    publisher
        .send_text(r#"{"type":"publish","room":"raw","data":{ "b" :1,"a":[true, null]  }}"#)
        .await;
    let frame = within(futures_util::StreamExt::next(&mut sub.ws))
        .await
        .expect("a frame")
        .expect("no error");
    let text = frame.into_text().expect("text frame");
    assert!(
        text.contains(r#""data":{ "b" :1,"a":[true, null]  }"#),
        "data not verbatim: {text}"
    );
}

#[tokio::test]
async fn fan_out_to_many_clients_keeps_each_publishers_order() {
    const SUBSCRIBERS: usize = 25;
    const PUBLISHERS: usize = 3;
    const EACH: usize = 200;
    let app = spawn_app().await;
    let mut subscribers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut client = app.connect().await;
        client.subscribe("fan").await;
        subscribers.push(client);
    }
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let mut client = app.connect().await;
        publishers.push(tokio::spawn(async move {
            for seq in 0..EACH {
                client
                    .send_json(
                        json!({"type": "publish", "room": "fan", "data": {"p": p, "seq": seq}}),
                    )
                    .await;
            }
            client
        }));
    }
    for publisher in publishers {
        within(publisher).await.expect("publisher task");
    }
    for (i, subscriber) in subscribers.iter_mut().enumerate() {
        let mut next = [0u64; PUBLISHERS];
        for _ in 0..PUBLISHERS * EACH {
            let frame = subscriber.expect("message").await;
            let p = frame["data"]["p"].as_u64().expect("p") as usize;
            let seq = frame["data"]["seq"].as_u64().expect("seq");
            assert_eq!(seq, next[p], "subscriber {i}: publisher {p} out of order");
            next[p] += 1;
        }
        assert!(
            next.iter().all(|&n| n == EACH as u64),
            "subscriber {i} got {next:?}"
        );
    }
}

#[tokio::test]
async fn unsubscribe_stops_delivery_after_the_confirmation() {
    let app = spawn_app().await;
    let mut sub = app.connect().await;
    let mut publisher = app.connect().await;
    sub.subscribe("news").await;
    publisher.publish_acked("news", json!(1), "a").await;
    assert_eq!(sub.expect("message").await["data"], 1);
    sub.unsubscribe("news").await;
    publisher.publish_acked("news", json!(2), "b").await;
    // Nothing from the room arrives after "unsubscribed": the next frame is the pong.
    sub.send_json(json!({"type": "ping"})).await;
    assert_eq!(sub.recv().await, json!({"type": "pong"}));
}

#[tokio::test]
async fn subscribing_twice_is_idempotent_and_delivers_once() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.subscribe("twice").await;
    client.subscribe("twice").await;
    client.publish_acked("twice", json!("once"), "x").await;
    client.send_json(json!({"type": "ping", "id": "end"})).await;
    // publish_acked skipped the single copy; a duplicate would arrive before the pong.
    assert_eq!(client.recv().await, json!({"type": "pong", "id": "end"}));
}

#[tokio::test]
async fn ping_is_answered_with_pong_echoing_the_id() {
    let app = spawn_app().await;
    let mut client = app.connect().await;
    client.send_json(json!({"type": "ping", "id": "42"})).await;
    assert_eq!(client.recv().await, json!({"type": "pong", "id": "42"}));
    client.send_json(json!({"type": "ping"})).await;
    assert_eq!(client.recv().await, json!({"type": "pong"}));
    client.close().await;
}

#[tokio::test]
async fn publishing_without_subscribing_needs_no_subscription_and_reaches_nobody_else() {
    let app = spawn_app().await;
    let mut publisher = app.connect().await;
    publisher.publish_acked("empty-room", json!({}), "e").await;
}

#[tokio::test]
async fn an_invalid_traceparent_never_refuses_the_message() {
    let app = spawn_app().await;
    let mut sub = app.connect().await;
    sub.subscribe("t").await;
    let mut publisher = app.connect().await;
    for traceparent in [
        json!("garbage"),
        json!(42),
        json!("00-abc-def-01"),
        json!(null),
    ] {
        publisher
            .send_json(json!({"type": "publish", "room": "t", "data": 1, "id": "x", "traceparent": traceparent, "tracestate": {"bad": true}}))
            .await;
        publisher.expect("ack").await;
        assert_eq!(sub.expect("message").await["data"], 1);
    }
}

#[tokio::test]
async fn stopping_closes_every_session_with_1001_and_waits_for_them() {
    let app = spawn_app().await;
    let mut a = app.connect().await;
    let mut b = app.connect().await;
    a.subscribe("x").await;
    let addr = app.addr;
    let stopping = tokio::spawn(app.stop());
    assert_eq!(
        a.closed().await,
        Closed::Frame(1001, "server shutting down".into())
    );
    assert_eq!(
        b.closed().await,
        Closed::Frame(1001, "server shutting down".into())
    );
    within(stopping).await.expect("stopped");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no new connections after shutdown"
    );
}
