//! Gateways of the real binary that join a NATS server, and what their logs
//! say when they cannot.

use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::helpers::{Gateway, NatsServer, Pki};
use crate::helpers::{poll_until, within};

/// A node of the real binary named `id`, with `args`, exporting no spans.
pub async fn node(id: &str, args: &[&str]) -> Gateway {
    let mut all = vec!["--node-id", id];
    all.extend_from_slice(args);
    Gateway::start(&[("OTEL_TRACES_EXPORTER", "none")], &all).await
}

/// Polls `gw`'s log until it says it cannot connect to NATS; returns the line.
pub async fn cannot_connect_line(gw: &Gateway) -> Value {
    poll_until(async || {
        gw.logs()
            .into_iter()
            .find(|l| {
                l["level"] == "WARN"
                    && l["fields"]["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("cannot connect to NATS"))
            })
            .ok_or_else(|| "a \"cannot connect to NATS\" line".to_owned())
    })
    .await
}

/// Checks that `gw` is not ready and says why: it never connected to NATS.
pub async fn refused(gw: &Gateway) -> Value {
    let line = cannot_connect_line(gw).await;
    assert_eq!(gw.readiness().await, 503, "not ready without NATS");
    let m = gw.metrics().await;
    assert_eq!(
        m.get("wsgate_broker_connected{messaging_system=\"nats\"}"),
        0.0
    );
    line
}

/// The node refused as `refused` checks, with a log message that contains
/// every one of `words`; returns the log line.
pub async fn refused_saying(gw: &Gateway, words: &[&str]) -> Value {
    let line = refused(gw).await;
    let message = line["fields"]["message"].as_str().unwrap_or_default();
    assert!(words.iter().all(|w| message.contains(w)), "{line}");
    line
}

/// Messages published on each node reach the subscribers on both.
pub async fn nodes_talk(a: &Gateway, b: &Gateway) {
    let mut on_a = a.connect().await;
    let mut on_b = b.connect().await;
    on_a.subscribe("tls").await;
    on_b.subscribe("tls").await;
    // No ids, so no acks: with NATS an ack may overtake the publisher's own copy.
    on_a.send_json(json!({"type": "publish", "room": "tls", "data": "from a"}))
        .await;
    assert_eq!(on_b.expect("message").await["data"], "from a");
    assert_eq!(on_a.expect("message").await["data"], "from a");
    on_b.send_json(json!({"type": "publish", "room": "tls", "data": "from b"}))
        .await;
    assert_eq!(on_a.expect("message").await["data"], "from b");
    assert_eq!(on_b.expect("message").await["data"], "from b");
}

/// Runs the binary with `args`, expecting it to refuse to start: returns
/// what it wrote to stderr.
pub async fn start_fails(args: &[&str]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wsgate"));
    for (key, _) in std::env::vars() {
        if key.starts_with("OTEL_") || key.starts_with("WSGATE_") {
            command.env_remove(key);
        }
    }
    command
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(args)
        .env("OTEL_TRACES_EXPORTER", "none")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let output = within(tokio::task::spawn_blocking(move || command.output()))
        .await
        .expect("the process is waited for")
        .expect("wsgate runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "{args:?} should not start; stderr: {stderr}"
    );
    stderr
}

/// A real nats-server with TLS, its certificates from a throwaway CA; with
/// `verify_clients`, it also demands a client certificate. `None` when
/// nats-server is missing outside CI.
pub async fn tls_nats(verify_clients: bool) -> Option<(Pki, NatsServer)> {
    let pki = Pki::new();
    let config = if verify_clients {
        pki.server_tls_verify()
    } else {
        pki.server_tls()
    };
    let nats = NatsServer::start_with(&config).await?;
    Some((pki, nats))
}
