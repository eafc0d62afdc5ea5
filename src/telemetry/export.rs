//! Trace export: the OTLP exporter chosen from `OTEL_*`, wrapped so failures are
//! counted and logged at most once a minute instead of once per batch.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;
use opentelemetry_otlp::{
    Protocol, WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

use super::tls;

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

/// The variables that name an OTLP endpoint for traces.
const ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

#[derive(Debug, thiserror::Error)]
pub enum ExportConfigError {
    #[error("OTEL_TRACES_EXPORTER={0:?} is not supported (use `otlp` or `none`)")]
    Exporter(String),
    #[error("{var}={value:?} is not supported (use `grpc` or `http/protobuf`)")]
    Protocol { var: &'static str, value: String },
    #[error(transparent)]
    Tls(#[from] tls::TlsConfigError),
    #[error("building the OTLP exporter: {0}")]
    Build(#[from] opentelemetry_otlp::ExporterBuildError),
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

/// The OTLP protocol, from `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, then
/// `OTEL_EXPORTER_OTLP_PROTOCOL`, defaulting to `http/protobuf` as the OTel
/// specification says. wsgate chooses it itself: with both transports compiled
/// in, the exporter's own default depends on which features the build enabled.
pub fn protocol() -> Result<Protocol, ExportConfigError> {
    for var in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(value) = env(var) {
            return match value.to_ascii_lowercase().as_str() {
                "grpc" => Ok(Protocol::Grpc),
                "http/protobuf" => Ok(Protocol::HttpBinary),
                _ => Err(ExportConfigError::Protocol { var, value }),
            };
        }
    }
    Ok(Protocol::HttpBinary)
}

/// Builds the OTLP span exporter. Endpoint, headers and compression come from
/// the standard variables, read by the exporter itself; TLS and, for HTTP, the
/// timeout are wsgate's ([`tls`]). Must run inside the tokio runtime: the gRPC
/// channel spawns its worker there.
pub fn otlp_exporter(
    protocol: Protocol,
) -> Result<opentelemetry_otlp::SpanExporter, ExportConfigError> {
    let tls = tls::TlsSettings::from_env()?;
    let https = endpoint_is_https(protocol, env);
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let exporter = match protocol {
        Protocol::Grpc if https => builder.with_tonic().with_tls_config(tls.grpc()?).build()?,
        Protocol::Grpc => builder.with_tonic().build()?,
        _ => builder
            .with_http()
            .with_protocol(protocol)
            // A client of wsgate's own: the exporter's default one has no TLS.
            // The exporter still applies headers and compression to each
            // request, but the timeout is the client's.
            .with_http_client(tls.http_client(https, timeout())?)
            .build()?,
    };
    Ok(exporter)
}

/// Whether the traces endpoint the exporter will use is `https`, by the
/// exporter's own rules: the per-signal variable, then the general one, then
/// the default (plain HTTP on localhost). A gRPC endpoint without a scheme is
/// `https` unless `OTEL_EXPORTER_OTLP_(TRACES_)INSECURE=true`. `var` reads a
/// variable (the environment, or a table in tests).
fn endpoint_is_https(protocol: Protocol, var: impl Fn(&str) -> Option<String>) -> bool {
    let Some(endpoint) = ENDPOINT_VARS.iter().find_map(|name| var(name)) else {
        return false;
    };
    match endpoint.split_once("://") {
        Some((scheme, _)) if !scheme.contains(['/', '?', '#']) => {
            scheme.eq_ignore_ascii_case("https")
        }
        _ => {
            let insecure = [
                "OTEL_EXPORTER_OTLP_TRACES_INSECURE",
                "OTEL_EXPORTER_OTLP_INSECURE",
            ]
            .iter()
            .find_map(|name| var(name))
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
            protocol == Protocol::Grpc && !insecure
        }
    }
}

/// The export timeout, as the exporter reads it: milliseconds in
/// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, then `OTEL_EXPORTER_OTLP_TIMEOUT`
/// (a value that does not parse is skipped), else 10 s.
fn timeout() -> Duration {
    [
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ]
    .iter()
    .find_map(|var| std::env::var(var).ok()?.parse().ok())
    .map_or(DEFAULT_TIMEOUT, Duration::from_millis)
}

/// The specification's default export timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

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
    last_log: Mutex<Option<Instant>>,
}

impl<E> CountingExporter<E> {
    pub fn new(inner: E, spans: Counter<u64>) -> Self {
        Self {
            inner,
            spans,
            last_log: Mutex::new(None),
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
                let mut last = self.last_log.lock().unwrap_or_else(|p| p.into_inner());
                if last.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
                    *last = Some(Instant::now());
                    tracing::warn!(
                        error = %e,
                        spans = n,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_scheme_decides_tls_as_the_exporter_does() {
        use Protocol::{Grpc, HttpBinary as Http};
        const T: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
        const G: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
        const INSECURE: &str = "OTEL_EXPORTER_OTLP_INSECURE";
        /// The protocol, the variables set, and whether the endpoint is https.
        type Case = (Protocol, &'static [(&'static str, &'static str)], bool);
        let cases: &[Case] = &[
            (Grpc, &[], false),
            (Http, &[], false),
            (Grpc, &[(G, "http://c:4317")], false),
            (Grpc, &[(G, "https://c:4317")], true),
            (Http, &[(G, "HTTPS://c:4318")], true),
            (
                Http,
                &[(T, "https://c/v1/traces"), (G, "http://c:4318")],
                true,
            ),
            (Grpc, &[(T, "http://c:4317"), (G, "https://c:4317")], false),
            // No scheme: gRPC is secure unless told otherwise; HTTP cannot be.
            (Grpc, &[(G, "c:4317")], true),
            (Grpc, &[(G, "c:4317"), (INSECURE, "true")], false),
            (Grpc, &[(G, "https://c:4317"), (INSECURE, "true")], true),
            (Grpc, &[(G, "c:4317/p://q")], true),
            (Http, &[(G, "c:4318")], false),
        ];
        for (protocol, vars, https) in cases {
            let var = |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            };
            assert_eq!(
                endpoint_is_https(*protocol, var),
                *https,
                "{protocol:?} {vars:?}"
            );
        }
    }
}
