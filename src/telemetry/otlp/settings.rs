//! Where and how spans are sent, from the specification's `OTEL_EXPORTER_OTLP_*`
//! variables, resolved as opentelemetry-otlp 0.33 resolves them (its
//! `exporter/{tonic,http}/mod.rs`): the per-signal `TRACES_` variable first,
//! then the general one, then the default.

use std::time::Duration;

use http::{HeaderName, HeaderValue};

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// The variables that name an OTLP endpoint for traces, per-signal first.
pub const ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// The specification's default export timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{var}={value:?} is not supported (use `grpc` or `http/protobuf`)")]
    Protocol { var: &'static str, value: String },
    #[error("{var}={value:?} is not supported (use `gzip` or `none`)")]
    Compression { var: &'static str, value: String },
    #[error("{var}: {value:?} is not a valid endpoint URL: {reason}")]
    Endpoint {
        var: &'static str,
        value: String,
        reason: String,
    },
}

/// Everything the transport needs, read once at start.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub protocol: Protocol,
    /// gRPC: the collector's address; HTTP: the full URL spans are POSTed to.
    pub endpoint: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub gzip: bool,
    pub timeout: Duration,
}

impl Settings {
    /// Reads the settings through `var` (the environment, or a table in tests;
    /// values are trimmed, and empty ones count as unset).
    pub fn read(var: &impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let protocol = protocol(var)?;
        Ok(Self {
            protocol,
            endpoint: endpoint(protocol, var)?,
            headers: headers(var),
            gzip: gzip(var)?,
            timeout: timeout(var),
        })
    }

    /// Whether the endpoint is `https`, so TLS roots are needed.
    pub fn https(&self) -> bool {
        self.endpoint
            .get(..8)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
    }
}

/// Each setting's variables, per-signal first.
pub type Vars = [&'static str; 2];
const PROTOCOL: Vars = [
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
];
const HEADERS: Vars = [
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_HEADERS",
];
const COMPRESSION: Vars = [
    "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
];
const TIMEOUT: Vars = [
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
];
const INSECURE: Vars = [
    "OTEL_EXPORTER_OTLP_TRACES_INSECURE",
    "OTEL_EXPORTER_OTLP_INSECURE",
];

/// The first of `names` that is set, and its value.
pub fn either(
    var: &impl Fn(&str) -> Option<String>,
    names: Vars,
) -> Option<(&'static str, String)> {
    names
        .into_iter()
        .find_map(|name| var(name).map(|value| (name, value)))
}

/// `http/protobuf` unless told otherwise, as the specification says.
fn protocol(var: &impl Fn(&str) -> Option<String>) -> Result<Protocol, SettingsError> {
    match either(var, PROTOCOL) {
        None => Ok(Protocol::HttpProtobuf),
        Some((var, value)) => match value.to_ascii_lowercase().as_str() {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            _ => Err(SettingsError::Protocol { var, value }),
        },
    }
}

/// gRPC: the endpoint as given (a missing scheme is `https`, or `http` when
/// `INSECURE=true`), default `http://localhost:4317`. HTTP: the per-signal
/// URL as given, else the general one plus `/v1/traces`, default
/// `http://localhost:4318/v1/traces`.
fn endpoint(
    protocol: Protocol,
    var: &impl Fn(&str) -> Option<String>,
) -> Result<String, SettingsError> {
    let (traces, general) = (ENDPOINT_VARS[0], ENDPOINT_VARS[1]);
    let (source, endpoint) = match protocol {
        Protocol::Grpc => {
            let (source, endpoint) =
                either(var, ENDPOINT_VARS).unwrap_or((general, "http://localhost:4317".to_owned()));
            if has_scheme(&endpoint) {
                (source, endpoint)
            } else {
                let insecure =
                    either(var, INSECURE).is_some_and(|(_, v)| v.eq_ignore_ascii_case("true"));
                let scheme = if insecure { "http" } else { "https" };
                (source, format!("{scheme}://{endpoint}"))
            }
        }
        Protocol::HttpProtobuf => match (var(traces), var(general)) {
            (Some(url), _) => (traces, url),
            (None, Some(base)) => (general, join(&base, "/v1/traces")),
            (None, None) => (general, "http://localhost:4318/v1/traces".to_owned()),
        },
    };
    match endpoint.parse::<http::Uri>() {
        Ok(uri) if uri.scheme().is_some() && uri.host().is_some() => Ok(endpoint),
        Ok(_) => Err(SettingsError::Endpoint {
            var: source,
            value: endpoint,
            reason: "it needs a scheme and a host".to_owned(),
        }),
        Err(e) => Err(SettingsError::Endpoint {
            var: source,
            value: endpoint,
            reason: e.to_string(),
        }),
    }
}

fn has_scheme(endpoint: &str) -> bool {
    endpoint
        .split_once("://")
        .is_some_and(|(scheme, _)| !scheme.contains(['/', '?', '#']))
}

fn join(base: &str, path: &str) -> String {
    format!("{}{path}", base.strip_suffix('/').unwrap_or(base))
}

/// `key=value` pairs separated by commas, values percent-decoded; a pair that
/// is not a valid header is skipped, as the exporter skips it.
fn headers(var: &impl Fn(&str) -> Option<String>) -> Vec<(HeaderName, HeaderValue)> {
    let Some((_, list)) = either(var, HEADERS) else {
        return Vec::new();
    };
    list.split(',')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            let (key, value) = (key.trim(), value.trim());
            let value = percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .map_or_else(|_| value.to_owned(), |v| v.into_owned());
            if key.is_empty() || value.is_empty() {
                return None;
            }
            Some((
                HeaderName::try_from(key).ok()?,
                HeaderValue::try_from(value).ok()?,
            ))
        })
        .collect()
}

/// `gzip`, or `none` (the default). wsgate refuses other values at start;
/// the library exporter warned and sent uncompressed.
fn gzip(var: &impl Fn(&str) -> Option<String>) -> Result<bool, SettingsError> {
    match either(var, COMPRESSION) {
        None => Ok(false),
        Some((var, value)) => match value.to_ascii_lowercase().as_str() {
            "gzip" => Ok(true),
            "none" => Ok(false),
            _ => Err(SettingsError::Compression { var, value }),
        },
    }
}

/// Milliseconds; a value that does not parse is skipped, as the exporter
/// skips it.
fn timeout(var: &impl Fn(&str) -> Option<String>) -> Duration {
    TIMEOUT
        .iter()
        .find_map(|name| var(name)?.parse().ok())
        .map_or(DEFAULT_TIMEOUT, Duration::from_millis)
}

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;
