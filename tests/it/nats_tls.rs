//! TLS to NATS against a real `nats-server` with certificates made in the
//! test: `tls://` verified with `--nats-ca` (or the system's CAs, which do
//! not know a private CA), client certificates for servers that verify
//! clients, and settings that cannot work stopping the node at start-up.

use crate::helpers::{
    NatsServer, Pki, node, nodes_talk, refused, refused_saying, start_fails, tls_nats,
};

#[tokio::test]
async fn nodes_verify_the_server_with_nats_ca_and_talk_over_tls() {
    let Some((pki, nats)) = tls_nats(false).await else {
        return;
    };
    let (url, ca) = (nats.tls_url(), pki.arg("ca.pem"));
    let a = node("tls-a", &["--nats-url", &url, "--nats-ca", &ca]).await;
    let b = node("tls-b", &["--nats-url", &url, "--nats-ca", &ca]).await;
    a.wait_ready().await;
    b.wait_ready().await;
    for name in ["wsgate tls-a", "wsgate tls-b"] {
        assert_eq!(nats.tls_version_of(name).await.as_deref(), Some("1.3"));
    }
    nodes_talk(&a, &b).await;
}

#[tokio::test]
async fn the_system_roots_do_not_vouch_for_a_private_ca() {
    let Some((_pki, nats)) = tls_nats(false).await else {
        return;
    };
    // No --nats-ca: the system's CAs, which never signed this server.
    let gw = node("no-ca", &["--nats-url", &nats.tls_url()]).await;
    let line = refused_saying(&gw, &["certificate was refused", "--nats-ca"]).await;
    let error = line["fields"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("UnknownIssuer"), "{line}");
}

#[tokio::test]
async fn nats_ca_makes_tls_required_even_for_a_nats_url() {
    let pki = Pki::new();
    // A server without TLS: a node that was given a CA must not talk to it
    // in clear.
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let ca = pki.arg("ca.pem");
    let gw = node("must-tls", &["--nats-url", &nats.url(), "--nats-ca", &ca]).await;
    refused(&gw).await;
}

#[tokio::test]
async fn a_server_that_verifies_clients_admits_only_nodes_with_a_certificate() {
    let Some((pki, nats)) = tls_nats(true).await else {
        return;
    };
    let (url, ca) = (nats.tls_url(), pki.arg("ca.pem"));
    let (cert, key) = (pki.arg("client.pem"), pki.arg("client-key.pem"));
    let with = |id: &'static str| {
        let args = [
            "--nats-url",
            url.as_str(),
            "--nats-ca",
            ca.as_str(),
            "--nats-cert",
            cert.as_str(),
            "--nats-key",
            key.as_str(),
        ];
        async move { node(id, &args).await }
    };
    let (a, b) = (with("cert-a").await, with("cert-b").await);
    a.wait_ready().await;
    b.wait_ready().await;
    nodes_talk(&a, &b).await;

    let without = node("no-cert", &["--nats-url", &url, "--nats-ca", &ca]).await;
    refused_saying(&without, &["wants a client certificate", "--nats-cert"]).await;
}

#[tokio::test]
async fn unusable_tls_settings_stop_the_node_naming_the_flag() {
    let pki = Pki::new();
    let missing = pki.arg("missing.pem");
    std::fs::write(pki.path("empty.pem"), "not PEM at all\n").unwrap();
    let empty = pki.arg("empty.pem");
    let (ca, cert, key) = (
        pki.arg("ca.pem"),
        pki.arg("client.pem"),
        pki.arg("client-key.pem"),
    );
    let other_key = pki.arg("server-key.pem");
    let url = "tls://127.0.0.1:1";
    for (args, expected) in [
        (
            vec!["--nats-url", url, "--nats-ca", &missing],
            format!("--nats-ca {missing}: No such file"),
        ),
        (
            vec!["--nats-url", url, "--nats-ca", &empty],
            format!("--nats-ca {empty}: holds no PEM certificate"),
        ),
        (
            vec!["--nats-url", url, "--nats-ca", &ca, "--nats-cert", &cert],
            "--nats-cert needs --nats-key".into(),
        ),
        (
            vec!["--nats-url", url, "--nats-key", &key],
            "--nats-key needs --nats-cert".into(),
        ),
        (
            vec![
                "--nats-url",
                url,
                "--nats-cert",
                &missing,
                "--nats-key",
                &key,
            ],
            format!("--nats-cert {missing}: No such file"),
        ),
        (
            vec![
                "--nats-url",
                url,
                "--nats-cert",
                &cert,
                "--nats-key",
                &empty,
            ],
            format!("--nats-key {empty}: no usable PEM private key"),
        ),
        (
            vec![
                "--nats-url",
                url,
                "--nats-cert",
                &cert,
                "--nats-key",
                &other_key,
            ],
            format!("--nats-key {other_key}: cannot be used with --nats-cert"),
        ),
        (
            vec!["--nats-ca", &ca],
            "--nats-ca is for NATS: it needs --nats-url".into(),
        ),
    ] {
        let stderr = start_fails(&args).await;
        assert!(stderr.contains(&expected), "{args:?}: {stderr}");
    }
}

#[test]
fn the_image_carries_the_system_roots() {
    // Without --nats-ca, tls:// is verified against the system's CAs, which
    // debian:bookworm-slim does not have until ca-certificates is installed.
    let dockerfile = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile"))
        .expect("the Dockerfile");
    let runtime = dockerfile
        .rsplit("\nFROM ")
        .next()
        .expect("a runtime stage");
    assert!(
        runtime.lines().any(|l| l.starts_with("RUN ")
            && l.contains("apt-get install")
            && l.contains("ca-certificates")),
        "the runtime stage installs ca-certificates:\n{runtime}"
    );
}
