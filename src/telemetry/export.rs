//! Trace export: the OTLP exporter chosen from `OTEL_*`, wrapped so failures are
//! counted and logged at most once a minute instead of once per batch.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

use super::otlp::settings::{ENDPOINT_VARS, Protocol, Settings, SettingsError};
use super::otlp::{OtlpExporter, Transport};
use super::tls;
use super::warnings::WarnLimiter;

/// How often an ongoing export failure is logged.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Which trace exporter the environment asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TracesExporter {
    Otlp,
    /// `OTEL_TRACES_EXPORTER=none`: the user turned traces off.
    None,
    /// Nothing says where spans should go: traces stay off, and a line at
    /// start says how to turn them on.
    NotConfigured,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportConfigError {
    #[error("OTEL_TRACES_EXPORTER={0:?} is not supported (use `otlp` or `none`)")]
    Exporter(String),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Tls(#[from] tls::TlsConfigError),
    #[error("building the OTLP exporter: {0}")]
    Build(String),
}

/// Reads `OTEL_TRACES_EXPORTER`, which the SDK itself ignores. Unset, traces
/// are exported only when an OTLP endpoint is configured: the specification's
/// default (`otlp` to `localhost`) makes every gateway without a collector
/// beside it log export failures and fire the traces-lost alert, and traces
/// every message, which nobody wants by accident.
pub fn traces_exporter() -> Result<TracesExporter, ExportConfigError> {
    match env("OTEL_TRACES_EXPORTER").as_deref() {
        Some("otlp") => Ok(TracesExporter::Otlp),
        Some("none") => Ok(TracesExporter::None),
        Some(other) => Err(ExportConfigError::Exporter(other.to_owned())),
        None if ENDPOINT_VARS.iter().any(|var| env(var).is_some()) => Ok(TracesExporter::Otlp),
        None => Ok(TracesExporter::NotConfigured),
    }
}

/// Builds wsgate's OTLP span exporter ([`super::otlp`]) from the standard
/// variables: protocol, endpoint, headers, compression and timeout
/// ([`Settings`]), and TLS ([`tls`]).
pub fn otlp_exporter() -> Result<OtlpExporter, ExportConfigError> {
    let settings = Settings::read(&env)?;
    let tls = tls::TlsSettings::from_env()?;
    let transport = match settings.protocol {
        Protocol::Grpc if settings.https() => Transport::Grpc(Some(tls.grpc()?)),
        Protocol::Grpc => Transport::Grpc(None),
        Protocol::HttpProtobuf => {
            Transport::Http(tls.http_client(settings.https(), settings.timeout)?)
        }
    };
    OtlpExporter::new(&settings, transport).map_err(ExportConfigError::Build)
}

pub(super) fn env(var: &str) -> Option<String> {
    std::env::var(var)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// A span exporter that counts what it exported and what it failed to, and
/// rate-limits the failure log: a collector that is down must not flood logs.
#[derive(Debug)]
pub struct CountingExporter<E> {
    inner: E,
    spans: Counter<u64>,
    log: WarnLimiter,
}

impl<E> CountingExporter<E> {
    pub fn new(inner: E, spans: Counter<u64>) -> Self {
        Self {
            inner,
            spans,
            log: WarnLimiter::new(LOG_EVERY),
        }
    }
}

/// The `error.type` of spans that could not be exported.
pub const EXPORT_FAILED: &str = "export_failed";

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => self.spans.add(n, &[]),
            Err(e) => {
                self.spans
                    .add(n, &[KeyValue::new("error.type", EXPORT_FAILED)]);
                if let Some(suppressed) = self.log.admit() {
                    tracing::warn!(
                        error = %e,
                        spans = n,
                        suppressed,
                        "trace export failed; spans are dropped (logged at most once a minute, \
                         counted in otel_sdk_exporter_span_exported_total)"
                    );
                }
            }
        }
        // Reported as success: the failure is counted and logged above, and the
        // SDK would otherwise log every failed batch again.
        Ok(())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        // The provider hands the resource down through here; without it the
        // exported spans would carry no service.name.
        self.inner.set_resource(resource);
    }
}

/// The resource: the SDK's detectors (`OTEL_SERVICE_NAME`,
/// `OTEL_RESOURCE_ATTRIBUTES`), with `service.name` defaulting to `wsgate` and
/// `service.instance.id` to the node id when the user set neither.
pub fn resource(node_id: &str) -> Resource {
    use opentelemetry::Key;
    use opentelemetry_sdk::resource::{EnvResourceDetector, ResourceDetector as _};

    let from_env = EnvResourceDetector::new().detect();
    let name_set = env("OTEL_SERVICE_NAME").is_some()
        || from_env
            .get(&Key::from_static_str("service.name"))
            .is_some();
    let mut builder = Resource::builder();
    if !name_set {
        builder = builder.with_service_name("wsgate");
    }
    if from_env
        .get(&Key::from_static_str("service.instance.id"))
        .is_none()
    {
        builder = builder.with_attribute(KeyValue::new("service.instance.id", node_id.to_owned()));
    }
    builder.build()
}
