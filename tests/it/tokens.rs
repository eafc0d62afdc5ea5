//! A token is checked for its audience and issuer, and a connection lives no
//! longer than its token unless the client refreshes it.

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Error as WsError;

use crate::helpers::{Client, Closed, TestApp, hs256_token, spawn_app_with_args, unix_now};

const SECRET: &str = "token-lifetime-secret";

fn token(claims: Value) -> String {
    hs256_token(SECRET, &claims)
}

/// A token still accepted (the server allows 5 s of clock skew past `exp`)
/// that expires about a second from now.
fn expiring(sub: &str, extra: Value) -> String {
    let mut claims = json!({"sub": sub, "exp": unix_now() - 4});
    claims
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    token(claims)
}

async fn connect(app: &TestApp, token: &str) -> Result<Client, WsError> {
    app.try_connect_with(&format!("/ws?token={token}"), |_| {})
        .await
}

#[tokio::test]
async fn tokens_for_another_audience_or_issuer_are_refused() {
    let app = spawn_app_with_args(&[
        "--jwt-secret",
        SECRET,
        "--jwt-audience",
        "chat",
        "--jwt-issuer",
        "https://idp.example",
    ])
    .await;
    let exp = unix_now() + 300;
    for (what, claims) in [
        (
            "another audience",
            json!({"sub": "a", "exp": exp, "aud": "billing", "iss": "https://idp.example"}),
        ),
        (
            "another issuer",
            json!({"sub": "a", "exp": exp, "aud": "chat", "iss": "https://evil.example"}),
        ),
        (
            "no audience",
            json!({"sub": "a", "exp": exp, "iss": "https://idp.example"}),
        ),
        ("no issuer", json!({"sub": "a", "exp": exp, "aud": "chat"})),
    ] {
        match connect(&app, &token(claims)).await {
            Err(WsError::Http(response)) => assert_eq!(response.status(), 401, "{what}"),
            other => panic!("{what}: expected 401, got {:?}", other.map(|_| ())),
        }
    }
    let good = token(
        json!({"sub": "a", "exp": exp, "aud": ["chat", "other"], "iss": "https://idp.example"}),
    );
    let mut c = connect(&app, &good)
        .await
        .expect("the right audience and issuer");
    c.subscribe("lobby").await;
    let m = app.metrics().await;
    assert_eq!(
        m.get("websocket_connections_rejected_total{reason=\"unauthorized\"}"),
        4.0
    );
}

#[tokio::test]
async fn a_connection_is_closed_with_4001_when_its_token_expires_and_refreshed_ones_live_on() {
    let app = spawn_app_with_args(&["--jwt-secret", SECRET]).await;
    let first = expiring("alice", json!({}));
    let mut lapsing = connect(&app, &first).await.unwrap();
    let mut refreshing = connect(&app, &first).await.unwrap();
    lapsing.subscribe("lobby").await;
    refreshing.subscribe("lobby").await;
    let exp = unix_now() + 300;
    refreshing
        .send_json(json!({"type": "refresh", "token": token(json!({"sub": "alice", "exp": exp}))}))
        .await;
    assert_eq!(
        refreshing.recv().await,
        json!({"type": "refreshed", "exp": exp})
    );
    assert_eq!(
        lapsing.closed().await,
        Closed::Frame(4001, "token expired".into())
    );
    // The first token's expiry has passed: the refreshed connection still
    // works, and is still in its room.
    refreshing
        .publish_acked("lobby", json!("still here"), "after")
        .await;
    let m = app
        .metrics_when("the lapsed connection is counted", |m| {
            m.get_or_zero(
                "websocket_connection_duration_seconds_count{close_code=\"4xxx\",close_reason=\"token_expired\"}",
            ) == 1.0
        })
        .await;
    assert_eq!(m.get("websocket_connections_active"), 1.0);
    assert_eq!(
        m.get("websocket_messages_received_total{type=\"refresh\"}"),
        1.0
    );
    assert_eq!(
        m.get("websocket_messages_sent_total{type=\"refreshed\"}"),
        1.0
    );
}

#[tokio::test]
async fn a_refresh_that_no_longer_allows_a_room_ends_that_subscription() {
    let app = spawn_app_with_args(&["--jwt-secret", SECRET]).await;
    let exp = unix_now() + 300;
    let rooms = |subscribe: &[&str]| json!({"subscribe": subscribe, "publish": ["*"]});
    let mut c = connect(
        &app,
        &token(json!({"sub": "bob", "exp": exp, "rooms": rooms(&["a", "b"])})),
    )
    .await
    .unwrap();
    c.subscribe("a").await;
    c.subscribe("b").await;
    let narrower = token(json!({"sub": "bob", "exp": exp + 60, "rooms": rooms(&["a"])}));
    c.send_json(json!({"type": "refresh", "token": narrower}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "refreshed", "exp": exp + 60})
    );
    assert_eq!(c.recv().await, json!({"type": "unsubscribed", "room": "b"}));
    c.expect_error("forbidden", None).await;
    // Messages to "b" no longer arrive; "a" still does.
    c.publish_acked("b", json!("not for bob"), "to-b").await;
    c.publish_acked("a", json!("for bob"), "to-a").await;
    // A single node delivers before it acks: only "a"'s message was queued.
    let m = app.metrics().await;
    assert_eq!(
        m.get("websocket_messages_sent_total{type=\"message\"}"),
        1.0
    );
    c.send_json(json!({"type": "subscribe", "room": "b"})).await;
    c.expect_error("forbidden", None).await;
}

#[tokio::test]
async fn refreshes_are_refused_clearly() {
    let app = spawn_app_with_args(&["--jwt-secret", SECRET]).await;
    let exp = unix_now() + 300;
    let mut c = connect(&app, &token(json!({"sub": "carol", "exp": exp})))
        .await
        .unwrap();
    for (refresh, code) in [
        (
            hs256_token("wrong secret", &json!({"sub": "carol", "exp": exp})),
            "unauthorized",
        ),
        (
            token(json!({"sub": "carol", "exp": unix_now() - 60})),
            "unauthorized",
        ),
        (token(json!({"sub": "mallory", "exp": exp})), "forbidden"),
        (
            token(json!({"sub": "carol", "exp": exp, "tenant": "other"})),
            "forbidden",
        ),
    ] {
        c.send_json(json!({"type": "refresh", "token": refresh}))
            .await;
        c.expect_error(code, None).await;
    }
    let m = app.metrics().await;
    assert_eq!(
        m.get("websocket_errors_total{error_type=\"unauthorized\"}"),
        2.0
    );
    // Without tokens there is nothing to refresh.
    let open = spawn_app_with_args(&[]).await;
    let mut anonymous = open.connect().await;
    anonymous
        .send_json(json!({"type": "refresh", "token": "x.y.z"}))
        .await;
    anonymous.expect_error("invalid_message", None).await;
}
