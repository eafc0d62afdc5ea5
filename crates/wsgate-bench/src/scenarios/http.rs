//! A minimal HTTP GET over a plain TCP socket, timed as `curl -w` timed it:
//! `/metrics` latency for the scrape scenario, and the exported-span counter
//! for the traced runs. HTTP/1.0, so the gateway answers with the whole body
//! and closes: no chunked encoding to undo.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpSocket;

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One answered GET.
#[derive(Debug)]
pub struct Response {
    pub body: String,
    /// From before the connect to the last byte (curl's `time_total`).
    pub total: Duration,
    /// From the established connection to the first byte of the answer
    /// (curl's `time_starttransfer - time_connect`): the gateway's own time.
    pub server: Duration,
}

/// `GET path` from `addr`, from the local address `from` if given; fails
/// unless the status is 200.
pub async fn get(addr: SocketAddr, path: &str, from: Option<IpAddr>) -> anyhow::Result<Response> {
    tokio::time::timeout(TIMEOUT, get_inner(addr, path, from))
        .await
        .with_context(|| format!("GET http://{addr}{path}: no answer in {TIMEOUT:?}"))?
}

async fn get_inner(addr: SocketAddr, path: &str, from: Option<IpAddr>) -> anyhow::Result<Response> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = from {
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("binding {ip}"))?;
    }
    let begin = Instant::now();
    let mut stream = socket
        .connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let connected = Instant::now();
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: */*\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::with_capacity(64 * 1024);
    let mut chunk = [0u8; 16 * 1024];
    let mut first_byte = None;
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        first_byte.get_or_insert_with(Instant::now);
        answer.extend_from_slice(&chunk[..n]);
    }
    let end = Instant::now();
    let Some(first_byte) = first_byte else {
        bail!("GET http://{addr}{path}: the connection closed without an answer");
    };
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET http://{addr}{path}: no end of headers"))?;
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        bail!("GET http://{addr}{path}: status {status}");
    }
    Ok(Response {
        body: body.to_owned(),
        total: end - begin,
        server: first_byte - connected,
    })
}

/// The spans the server exported successfully, from its Prometheus text:
/// every `otel_sdk_exporter_span_exported_total` series without an
/// `error_type` label, summed.
pub fn exported_spans(metrics: &str) -> u64 {
    const NAME: &str = "otel_sdk_exporter_span_exported_total";
    metrics
        .lines()
        .filter(|l| {
            l.strip_prefix(NAME)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter(|l| !l.contains("error_type"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_exported_spans_without_errors() {
        let text = "\
# HELP otel_sdk_exporter_span_exported_total Spans exported.
# TYPE otel_sdk_exporter_span_exported_total counter
otel_sdk_exporter_span_exported_total{otel_scope_name=\"wsgate\"} 120
otel_sdk_exporter_span_exported_total{error_type=\"export_failed\",otel_scope_name=\"wsgate\"} 7
otel_sdk_exporter_span_exported_total_other 1000
otel_sdk_exporter_span_exported_total 3
";
        assert_eq!(exported_spans(text), 123);
        assert_eq!(exported_spans(""), 0);
    }

    #[tokio::test]
    async fn gets_a_body_and_times_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"GET /metrics HTTP/1.0\r\n"));
            s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                .await
                .unwrap();
        });
        let r = get(addr, "/metrics", Some("127.0.0.2".parse().unwrap()))
            .await
            .unwrap();
        assert_eq!(r.body, "hello");
        assert!(r.total >= r.server);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_status_other_than_200_is_an_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await.unwrap();
            let _ = s.write_all(b"HTTP/1.0 404 Not Found\r\n\r\n").await;
        });
        let e = get(addr, "/nope", None).await.unwrap_err();
        assert!(e.to_string().contains("status 404"), "{e}");
    }
}
