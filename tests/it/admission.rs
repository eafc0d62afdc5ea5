//! Who may open a WebSocket: per-user caps, origins, and (through the
//! library's public API, since loopback has only `::1`) IPv6 per-IP keys.

use std::io::Read as _;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, Uri};
use serde_json::json;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use wsgate::admission::{Admission, Policy, Refusal};

use crate::helpers::{Client, TestApp, hs256_token, poll_until, spawn_app_with_args};

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an IP address")
}

#[test]
fn ipv6_peers_share_the_allowance_of_their_64_prefix() {
    let admission = Admission::new(
        None,
        Policy {
            max_per_ip: 1,
            max_connections: 100,
            ..Policy::default()
        },
    );
    let uri: Uri = "/ws".parse().unwrap();
    let headers = HeaderMap::new();
    let admit = |peer: &str| admission.admit(&uri, &headers, Some(ip(peer)));

    // One host can take any address of its /64: they are one client.
    let first = admit("2001:db8:1:2::1").expect("the first connection");
    assert_eq!(
        admit("2001:db8:1:2:ffff:ffff:ffff:fffe").unwrap_err(),
        Refusal::PerIpLimit,
        "another address in the same /64"
    );
    let _neighbour = admit("2001:db8:1:3::1").expect("another /64 has its own allowance");
    drop(first);
    let _again = admit("2001:db8:1:2::abcd").expect("the slot came back");

    // An IPv4 client seen through a dual-stack socket is still that IPv4 client.
    let _v4 = admit("192.0.2.7").expect("an IPv4 client");
    assert_eq!(
        admit("::ffff:192.0.2.7").unwrap_err(),
        Refusal::PerIpLimit,
        "the IPv4-mapped form of the same address"
    );
    let _other_v4 = admit("::ffff:192.0.2.8").expect("another IPv4 client");
}

const SECRET: &str = "admission-test-secret";

fn token(sub: &str, tenant: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        + 300;
    hs256_token(SECRET, &json!({"sub": sub, "tenant": tenant, "exp": exp}))
}

/// Connects with a token; `Err(status)` when the upgrade is refused.
async fn connect_as(app: &TestApp, sub: &str, tenant: &str) -> Result<Client, u16> {
    let path = format!("/ws?token={}", token(sub, tenant));
    match app.try_connect_with(&path, |_| {}).await {
        Ok(client) => Ok(client),
        Err(WsError::Http(response)) => Err(response.status().as_u16()),
        Err(other) => panic!("expected a connection or an HTTP refusal, got {other}"),
    }
}

#[tokio::test]
async fn a_user_gets_a_bounded_number_of_connections_per_tenant() {
    let app =
        spawn_app_with_args(&["--jwt-secret", SECRET, "--max-connections-per-user", "2"]).await;
    let first = connect_as(&app, "alice", "acme").await.expect("first");
    let _second = connect_as(&app, "alice", "acme").await.expect("second");
    assert_eq!(connect_as(&app, "alice", "acme").await.err(), Some(429));
    // Tenants are separate namespaces: another tenant's alice is someone else.
    let _elsewhere = connect_as(&app, "alice", "globex")
        .await
        .expect("alice of another tenant");
    let _bob = connect_as(&app, "bob", "acme").await.expect("another user");

    // A closed connection gives its slot back. The session lets go of it just
    // after it ends, so the first attempts may still be refused: count them.
    first.close().await;
    let mut refused = 1.0;
    let _again = poll_until(async || match connect_as(&app, "alice", "acme").await {
        Ok(client) => Ok(client),
        Err(429) => {
            refused += 1.0;
            Err("alice's slot to come back".to_owned())
        }
        Err(status) => panic!("unexpected status {status}"),
    })
    .await;
    let m = app.metrics().await;
    assert_eq!(
        m.get("websocket_connections_rejected_total{reason=\"per_user_limit\"}"),
        refused
    );
    assert_eq!(
        m.get("websocket_connections_rejected_total{reason=\"per_ip_limit\"}"),
        0.0
    );
}

/// Attempts an upgrade with these `Origin` and `Host` headers; the HTTP status
/// of the answer (101 when it connected).
async fn upgrade_status(app: &TestApp, origin: &str, host: Option<&str>) -> u16 {
    let result = app
        .try_connect_with("/ws", |request| {
            let headers = request.headers_mut();
            headers.insert("origin", HeaderValue::from_str(origin).expect("a header"));
            if let Some(host) = host {
                headers.insert("host", HeaderValue::from_str(host).expect("a header"));
            }
        })
        .await;
    match result {
        Ok(_) => 101,
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("expected a connection or an HTTP refusal, got {other}"),
    }
}

#[tokio::test]
async fn origins_compare_scheme_host_and_port_and_refuse_what_is_not_one() {
    let app = spawn_app_with_args(&[]).await;
    let own = format!("http://{}", app.addr);
    assert_eq!(upgrade_status(&app, &own, None).await, 101, "{own}");
    // A second port after the real one: not an origin, whatever a suffix
    // comparison with the Host header would say.
    let two_ports = format!("{own}:80");
    assert_eq!(
        upgrade_status(&app, &two_ports, None).await,
        403,
        "{two_ports}"
    );
    // https's default port is 443, not 80.
    assert_eq!(
        upgrade_status(&app, "https://gw.example", Some("gw.example:80")).await,
        403
    );
    let m = app.metrics().await;
    assert_eq!(
        m.get("websocket_connections_rejected_total{reason=\"origin\"}"),
        2.0
    );
}

#[tokio::test]
async fn with_an_origin_list_the_host_header_vouches_for_nothing() {
    let app = spawn_app_with_args(&[
        "--allowed-origins",
        "https://app.example.com",
        "--public-url",
        "https://chat.example.com/demo/",
    ])
    .await;
    // A DNS-rebinding page: its name now points at the gateway, so the
    // browser sends matching Origin and Host.
    assert_eq!(
        upgrade_status(&app, "http://rebound.example", Some("rebound.example")).await,
        403
    );
    let own_by_host = format!("http://{}", app.addr);
    assert_eq!(upgrade_status(&app, &own_by_host, None).await, 403);
    assert_eq!(
        upgrade_status(&app, "https://chat.example.com", Some("chat.example.com")).await,
        101,
        "--public-url's origin: the demo page"
    );
    assert_eq!(
        upgrade_status(&app, "https://app.example.com:443", None).await,
        101,
        "listed"
    );
    let m = app.metrics().await;
    assert_eq!(
        m.get("websocket_connections_rejected_total{reason=\"origin\"}"),
        2.0
    );
}

#[tokio::test]
async fn an_allowed_origin_that_is_not_an_origin_stops_the_start() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--allowed-origins",
            "https://app.example.com,http://host:8080:80",
        ])
        .env_remove("WSGATE_ALLOWED_ORIGINS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wsgate starts");
    let status = poll_until(async || {
        child
            .try_wait()
            .expect("wait")
            .ok_or_else(|| "wsgate to refuse its configuration and exit".to_owned())
    })
    .await;
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr text");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--allowed-origins")
            && stderr.contains("\"http://host:8080:80\" is not an origin")
            && stderr.contains("invalid port number"),
        "{stderr}"
    );
}
