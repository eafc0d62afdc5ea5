//! `--admin-listen`: `/metrics` on an address of its own, kept off the public one.

use crate::helpers::{Gateway, spawn_app_with_args, within};

async fn status(url: &str) -> u16 {
    within(reqwest::get(url))
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .status()
        .as_u16()
}

#[tokio::test]
async fn metrics_move_to_the_admin_listener_and_probes_answer_on_both() {
    let app = spawn_app_with_args(&["--admin-listen", "127.0.0.1:0"]).await;
    let admin = app.admin_addr.expect("the admin listener's address");
    assert_ne!(admin, app.addr);
    assert_eq!(
        status(&app.http_url("/metrics")).await,
        404,
        "public /metrics"
    );
    let text = within(reqwest::get(app.admin_url("/metrics")))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    assert!(text.contains("websocket_connections_active"), "{text}");
    for path in ["/healthz", "/readyz"] {
        assert_eq!(status(&app.http_url(path)).await, 200, "public {path}");
        assert_eq!(status(&app.admin_url(path)).await, 200, "admin {path}");
    }
    // The admin listener serves nothing a client uses.
    assert_eq!(status(&app.admin_url("/")).await, 404, "admin /");
    // The public listener still serves WebSockets.
    app.connect().await.subscribe("lobby").await;
    app.stop().await;
}

#[tokio::test]
async fn the_binary_logs_its_admin_address() {
    let gateway = Gateway::start(&[], &["--admin-listen", "127.0.0.1:0"]).await;
    let admin = gateway
        .admin_addr
        .expect("`wsgate listening` names admin_addr");
    assert_eq!(status(&format!("http://{admin}/metrics")).await, 200);
    assert_eq!(status(&gateway.url("/metrics")).await, 404);
    gateway.wait_ready().await;
}
