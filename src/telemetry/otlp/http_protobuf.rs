//! OTLP/HTTP with protobuf bodies: one `POST` per batch, gzip-compressed when
//! configured, through wsgate's TLS-aware blocking client (`tls.rs`). The batch
//! processor exports from a thread of its own, so blocking there is what the
//! library exporter did too.

use std::io::Write as _;

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE, USER_AGENT};
use otlp_reqwest::blocking::Client;

use super::settings::Settings;
use super::{Failure, error_chain};

pub struct HttpSender {
    client: Client,
    url: String,
    headers: http::HeaderMap,
    gzip: bool,
}

impl HttpSender {
    pub fn new(settings: &Settings, client: Client) -> Self {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-protobuf"),
        );
        headers.insert(
            USER_AGENT,
            http::HeaderValue::from_static(super::USER_AGENT),
        );
        if settings.gzip {
            headers.insert(CONTENT_ENCODING, http::HeaderValue::from_static("gzip"));
        }
        for (name, value) in &settings.headers {
            headers.insert(name.clone(), value.clone());
        }
        Self {
            client,
            url: settings.endpoint.clone(),
            headers,
            gzip: settings.gzip,
        }
    }

    /// Sends one encoded request and returns the answer's body.
    pub fn send(&self, body: Bytes) -> Result<Bytes, Failure> {
        let body = if self.gzip { gzip(&body)? } else { body };
        let response = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .body(body)
            .send()
            .map_err(|e| Failure {
                // Connection errors and timeouts: the collector may be back soon.
                message: error_chain(&e),
                retry: e.is_connect() || e.is_timeout() || e.is_request(),
            })?;
        let status = response.status().as_u16();
        if response.status().is_success() {
            return response.bytes().map_err(|e| Failure {
                message: format!("reading the collector's answer: {}", error_chain(&e)),
                retry: false,
            });
        }
        Err(Failure {
            message: format!("the collector answered HTTP {status}"),
            retry: matches!(status, 429 | 502 | 503 | 504),
        })
    }
}

fn gzip(body: &[u8]) -> Result<Bytes, Failure> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::default());
    encoder
        .write_all(body)
        .and_then(|()| encoder.finish())
        .map(Bytes::from)
        .map_err(|e| Failure::permanent(format!("compressing the request: {e}")))
}
