//! wsgate's own OTLP span exporter, behind the SDK's `SpanExporter` trait: the
//! batch processor hands it `SpanData`, it encodes them straight to protobuf
//! bytes ([`encode`]) and sends them over gRPC ([`grpc`]) or HTTP ([`http_protobuf`]),
//! configured by the specification's variables ([`settings`]).
//!
//! Why not opentelemetry-otlp's exporter: with every message traced, its
//! conversion of each span into opentelemetry-proto's owned structs (a
//! `String` per attribute key and value, a `Vec` per id, and a clone of the
//! whole batch per export attempt) and their prost encoding were most of the
//! CPU a span cost (docs/performance.md has the callgrind breakdown). The
//! encoder writes the same bytes without an allocation per span; a property
//! test decodes them with opentelemetry-proto's types and compares them with
//! the library's conversion of the same random spans, field by field and byte
//! by byte.
//!
//! Retries follow the library's recommended policy: up to 3 after the first
//! attempt, 100 ms doubling to at most 1.6 s plus up to 100 ms of jitter, on
//! the failures the OTLP specification calls retryable, within the export
//! timeout.

pub(crate) mod encode;
mod grpc;
mod http_protobuf;
pub(crate) mod settings;
mod wire;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use prost::Message as _;

use encode::SpanEncoder;
use settings::{Protocol, Settings};

use super::warnings::WarnLimiter;

/// What wsgate calls itself to collectors.
const USER_AGENT: &str = concat!("wsgate/", env!("CARGO_PKG_VERSION"));

/// How often a collector's partial rejection is logged.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// A failed attempt: what to log, and whether another attempt may succeed.
#[derive(Debug)]
pub struct Failure {
    message: String,
    retry: bool,
}

impl Failure {
    fn permanent(message: String) -> Self {
        Self {
            message,
            retry: false,
        }
    }
}

/// An error and its sources, `: `-separated: what a failed attempt logs.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        message.push_str(&format!(": {cause}"));
        next = cause.source();
    }
    message
}

enum Sender {
    Grpc(grpc::GrpcSender),
    Http(http_protobuf::HttpSender),
}

/// The exporter the tracer provider's batch processor calls.
pub struct OtlpExporter {
    encoder: SpanEncoder,
    sender: Sender,
    timeout: Duration,
    /// The last request's size: the next buffer's capacity.
    last_len: AtomicUsize,
    shut_down: AtomicBool,
    rejections_log: WarnLimiter,
}

impl std::fmt::Debug for OtlpExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OtlpExporter")
    }
}

impl OtlpExporter {
    /// Builds the exporter for `settings`; `transport` gives the gRPC TLS
    /// configuration or the HTTP client.
    pub fn new(settings: &Settings, transport: Transport) -> Result<Self, String> {
        let sender = match (settings.protocol, transport) {
            (Protocol::Grpc, Transport::Grpc(tls)) => {
                Sender::Grpc(grpc::GrpcSender::new(settings, tls)?)
            }
            (Protocol::HttpProtobuf, Transport::Http(client)) => {
                Sender::Http(http_protobuf::HttpSender::new(settings, client))
            }
            _ => return Err("the transport does not match the protocol".to_owned()),
        };
        Ok(Self {
            encoder: SpanEncoder::default(),
            sender,
            timeout: settings.timeout,
            last_len: AtomicUsize::new(0),
            shut_down: AtomicBool::new(false),
            rejections_log: WarnLimiter::new(LOG_EVERY),
        })
    }

    async fn send(&self, body: Bytes) -> Result<Bytes, Failure> {
        match &self.sender {
            Sender::Grpc(sender) => sender.send(body).await,
            Sender::Http(sender) => sender.send(body),
        }
    }

    /// Sends `body`, retrying what may succeed later, within the timeout.
    async fn send_with_retries(&self, body: Bytes) -> Result<Bytes, Failure> {
        let deadline = Instant::now() + self.timeout;
        let mut delay = Duration::from_millis(100);
        for retries_left in (0..=3).rev() {
            match self.send(body.clone()).await {
                Ok(answer) => return Ok(answer),
                Err(failure) => {
                    let jitter = Duration::from_millis(rand::random_range(0..=100));
                    let wake = Instant::now() + delay + jitter;
                    if !failure.retry || retries_left == 0 || wake >= deadline {
                        return Err(failure);
                    }
                    // The batch processor's thread waits; it has nothing
                    // else to do until this batch is settled.
                    std::thread::sleep(delay + jitter);
                    delay = (delay * 2).min(Duration::from_millis(1600));
                }
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Logs, at most once a minute (with the count of those not logged), spans
    /// the collector took but rejected.
    fn check_partial_success(&self, answer: &[u8]) {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
        let Ok(response) = ExportTraceServiceResponse::decode(answer) else {
            return;
        };
        let Some(partial) = response.partial_success else {
            return;
        };
        if partial.rejected_spans == 0 && partial.error_message.is_empty() {
            return;
        }
        if let Some(suppressed) = self.rejections_log.admit() {
            tracing::warn!(
                rejected_spans = partial.rejected_spans,
                error = partial.error_message,
                suppressed,
                "the collector rejected part of a span batch (logged at most once a minute)"
            );
        }
    }
}

/// The transport half of the configuration, built by `tls.rs`.
pub enum Transport {
    /// The TLS configuration for an `https` endpoint.
    Grpc(Option<tonic::transport::ClientTlsConfig>),
    Http(otlp_reqwest::blocking::Client),
}

impl SpanExporter for OtlpExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        if self.shut_down.load(Ordering::Relaxed) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        let mut buf = Vec::with_capacity(self.last_len.load(Ordering::Relaxed));
        self.encoder.encode(&batch, &mut buf);
        drop(batch);
        self.last_len.store(buf.len(), Ordering::Relaxed);
        match self.send_with_retries(Bytes::from(buf)).await {
            Ok(answer) => {
                self.check_partial_success(&answer);
                Ok(())
            }
            Err(failure) => Err(OTelSdkError::InternalFailure(failure.message)),
        }
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        if self.shut_down.swap(true, Ordering::Relaxed) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.encoder = SpanEncoder::new(resource);
    }
}
