//! Trace export over TLS, on both OTLP protocols, configured by the
//! specification's variables: the collector is verified against
//! `OTEL_EXPORTER_OTLP_(TRACES_)CERTIFICATE`, else the system roots, and
//! `OTEL_EXPORTER_OTLP_(TRACES_)CLIENT_CERTIFICATE`/`_CLIENT_KEY` give mutual
//! TLS. The CAs are made here, per test, with rcgen.

use std::process::{Child, Command, Stdio};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde_json::json;

use crate::helpers::{Collector, Gateway, ServerTls, poll_until};

const FAILED_EXPORTS: &str = "otel_sdk_exporter_span_exported_total{error_type=\"export_failed\"}";

/// A certificate authority made for one test.
struct Ca(CertifiedIssuer<'static, KeyPair>);

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        Self(CertifiedIssuer::self_signed(params, key).expect("CA certificate"))
    }

    fn pem(&self) -> String {
        self.0.pem()
    }

    /// A certificate and key for `purpose`, valid for 127.0.0.1 and localhost.
    fn issue(&self, purpose: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, "wsgate test");
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.0).expect("leaf certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// A collector's TLS side with a certificate from this CA, requiring
    /// client certificates from `clients` when given.
    fn server(&self, clients: Option<&Ca>) -> ServerTls {
        let (cert_pem, key_pem) = self.issue(ExtendedKeyUsagePurpose::ServerAuth);
        ServerTls {
            cert_pem,
            key_pem,
            client_ca_pem: clients.map(Ca::pem),
        }
    }
}

/// Files the gateway reads, in a directory removed with the test.
struct Files(tempfile::TempDir);

impl Files {
    fn new() -> Self {
        Self(tempfile::tempdir().expect("temp dir"))
    }

    fn write(&self, name: &str, contents: &str) -> String {
        let path = self.0.path().join(name);
        std::fs::write(&path, contents).expect("write file");
        path.to_str().expect("UTF-8 path").to_owned()
    }
}

#[derive(Debug, Clone, Copy)]
enum Protocol {
    Grpc,
    Http,
}

const PROTOCOLS: [Protocol; 2] = [Protocol::Grpc, Protocol::Http];

impl Protocol {
    async fn collector(self, tls: &ServerTls) -> Collector {
        match self {
            Protocol::Grpc => Collector::grpc_tls(tls).await,
            Protocol::Http => Collector::http_tls(tls).await,
        }
    }

    /// The variables that point a gateway at `collector` with this protocol,
    /// exporting promptly and giving up on a batch within two seconds.
    fn env(self, collector: &Collector) -> Vec<(&'static str, String)> {
        let protocol = match self {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http/protobuf",
        };
        vec![
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.into()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50".into()),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000".into()),
        ]
    }
}

async fn start(env: &[(&'static str, String)]) -> Gateway {
    let env: Vec<_> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Gateway::start(&env, &[]).await
}

/// Publishes one message that a subscriber receives: two spans.
async fn traffic(gw: &Gateway) {
    let mut sub = gw.connect().await;
    sub.subscribe("tls").await;
    let mut publisher = gw.connect().await;
    publisher.publish_acked("tls", json!(1), "t-1").await;
    sub.expect("message").await;
}

async fn exports(protocol: Protocol, gw: &Gateway, collector: &Collector) {
    traffic(gw).await;
    collector
        .spans_when(&format!("spans over {protocol:?} with TLS"), |s| {
            s.iter().any(|x| x.name == "process")
        })
        .await;
}

/// The gateway tries, the collector's TLS refuses (or is refused), the
/// failure is counted and the collector has nothing.
async fn export_fails(gw: &Gateway, collector: &Collector) {
    traffic(gw).await;
    gw.metrics_when("a failed export is counted", |m| {
        m.get_or_zero(FAILED_EXPORTS) >= 1.0
    })
    .await;
    poll_until(async || match collector.failed_handshakes() {
        0 => Err("a failed TLS handshake at the collector".to_owned()),
        n => Ok(n),
    })
    .await;
    assert!(collector.spans().is_empty(), "no span got through");
}

#[tokio::test]
async fn both_protocols_export_over_tls_verified_by_the_configured_ca() {
    let (ca, files) = (Ca::new("collector CA"), Files::new());
    let ca_file = files.write("ca.pem", &ca.pem());
    for protocol in PROTOCOLS {
        let collector = protocol.collector(&ca.server(None)).await;
        let mut env = protocol.env(&collector);
        env.push(("OTEL_EXPORTER_OTLP_CERTIFICATE", ca_file.clone()));
        // Headers (percent-decoded) and compression apply on both protocols.
        env.push(("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=blue%20sky".into()));
        env.push(("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip".into()));
        let gw = start(&env).await;
        exports(protocol, &gw, &collector).await;
        let encoding = match protocol {
            Protocol::Http => "content-encoding",
            Protocol::Grpc => "grpc-encoding",
        };
        let headers = collector.headers();
        assert!(
            !headers.is_empty()
                && headers
                    .iter()
                    .all(|h| h["x-tenant"] == "blue sky" && h[encoding] == "gzip"),
            "{protocol:?}: {headers:#?}"
        );
    }
}

#[tokio::test]
async fn a_collector_the_ca_did_not_sign_gets_no_spans_and_the_failure_is_counted() {
    let (ca, rogue, files) = (Ca::new("collector CA"), Ca::new("rogue CA"), Files::new());
    let ca_file = files.write("ca.pem", &ca.pem());
    for protocol in PROTOCOLS {
        let collector = protocol.collector(&rogue.server(None)).await;
        let mut env = protocol.env(&collector);
        env.push(("OTEL_EXPORTER_OTLP_CERTIFICATE", ca_file.clone()));
        let gw = start(&env).await;
        export_fails(&gw, &collector).await;
    }
}

#[tokio::test]
async fn the_traces_certificate_wins_over_the_general_one() {
    let (ca, rogue, files) = (Ca::new("collector CA"), Ca::new("rogue CA"), Files::new());
    let ca_file = files.write("ca.pem", &ca.pem());
    let rogue_file = files.write("rogue.pem", &rogue.pem());
    for protocol in PROTOCOLS {
        let collector = protocol.collector(&ca.server(None)).await;
        let mut env = protocol.env(&collector);
        env.push(("OTEL_EXPORTER_OTLP_CERTIFICATE", rogue_file.clone()));
        env.push(("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", ca_file.clone()));
        let gw = start(&env).await;
        exports(protocol, &gw, &collector).await;
    }
}

#[tokio::test]
async fn without_a_certificate_variable_the_system_roots_verify_the_collector() {
    // SSL_CERT_FILE replaces where the system roots are read from, so the
    // test CA stands in for a public one.
    let (ca, files) = (Ca::new("system CA"), Files::new());
    let bundle = files.write("system-roots.pem", &ca.pem());
    for protocol in PROTOCOLS {
        let collector = protocol.collector(&ca.server(None)).await;
        let mut env = protocol.env(&collector);
        env.push(("SSL_CERT_FILE", bundle.clone()));
        let gw = start(&env).await;
        exports(protocol, &gw, &collector).await;
    }
}

#[tokio::test]
async fn mutual_tls_gets_spans_through_only_with_the_client_certificate() {
    let (ca, clients, files) = (Ca::new("collector CA"), Ca::new("client CA"), Files::new());
    let ca_file = files.write("ca.pem", &ca.pem());
    let (cert, key) = clients.issue(ExtendedKeyUsagePurpose::ClientAuth);
    let (cert_file, key_file) = (
        files.write("client.pem", &cert),
        files.write("client-key.pem", &key),
    );
    for protocol in PROTOCOLS {
        let collector = protocol.collector(&ca.server(Some(&clients))).await;
        let mut env = protocol.env(&collector);
        env.push(("OTEL_EXPORTER_OTLP_CERTIFICATE", ca_file.clone()));
        let without = start(&env).await;
        export_fails(&without, &collector).await;
        drop(without);

        // The general variables for gRPC, the per-signal ones for HTTP.
        let (cert_var, key_var) = match protocol {
            Protocol::Grpc => (
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                "OTEL_EXPORTER_OTLP_CLIENT_KEY",
            ),
            Protocol::Http => (
                "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
                "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
            ),
        };
        env.push((cert_var, cert_file.clone()));
        env.push((key_var, key_file.clone()));
        let with = start(&env).await;
        exports(protocol, &with, &collector).await;
    }
}

/// A child process killed when the test ends, whatever happened.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary with `env` (and no inherited `OTEL_*`), which must exit
/// with an error; returns its stderr.
async fn start_error(env: &[(&str, &str)]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wsgate"));
    for (key, _) in std::env::vars() {
        if key.starts_with("OTEL_") || key.starts_with("WSGATE_") {
            command.env_remove(key);
        }
    }
    let child = command
        .args(["--listen", "127.0.0.1:0"])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wsgate starts");
    let mut child = Killed(child);
    let status = poll_until(async || {
        child
            .0
            .try_wait()
            .expect("wait")
            .ok_or_else(|| "wsgate to refuse to start".to_owned())
    })
    .await;
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().expect("stderr"), &mut stderr)
        .expect("stderr");
    stderr
}

#[tokio::test]
async fn certificate_files_are_checked_at_start_and_errors_name_the_variable() {
    let (ca, other, files) = (Ca::new("collector CA"), Ca::new("other CA"), Files::new());
    let ca_file = files.write("ca.pem", &ca.pem());
    let not_pem = files.write("not.pem", "not a certificate\n");
    let (cert, _) = ca.issue(ExtendedKeyUsagePurpose::ClientAuth);
    let (_, other_key) = other.issue(ExtendedKeyUsagePurpose::ClientAuth);
    let cert_file = files.write("client.pem", &cert);
    let other_key_file = files.write("other-key.pem", &other_key);
    let missing = files.0.path().join("missing.pem");
    let missing = missing.to_str().expect("UTF-8 path");
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            vec![("OTEL_EXPORTER_OTLP_CERTIFICATE", missing)],
        ),
        (
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
            vec![
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca_file),
                ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", &not_pem),
            ],
        ),
        (
            "OTEL_EXPORTER_OTLP_CLIENT_KEY",
            vec![
                ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &cert_file),
                ("OTEL_EXPORTER_OTLP_CLIENT_KEY", missing),
            ],
        ),
        (
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
            vec![("OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", &cert_file)],
        ),
        (
            "OTEL_EXPORTER_OTLP_CLIENT_KEY",
            vec![
                ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &cert_file),
                ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &other_key_file),
            ],
        ),
    ];
    for protocol in ["grpc", "http/protobuf"] {
        for (var, settings) in &cases {
            let mut env = vec![
                ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://127.0.0.1:9"),
            ];
            env.extend(settings.iter().copied());
            let stderr = start_error(&env).await;
            assert!(stderr.contains(var), "{protocol}, {settings:?}: {stderr}");
        }
    }
}
