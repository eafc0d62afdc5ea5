//! TLS for trace export, from the OpenTelemetry specification's variables,
//! which opentelemetry-otlp 0.33 does not read itself:
//!
//! | variable (the `OTEL_EXPORTER_OTLP_TRACES_*` form of each wins) | effect |
//! |---|---|
//! | `OTEL_EXPORTER_OTLP_CERTIFICATE` | PEM CA certificates that verify the collector, instead of the system roots |
//! | `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`, `OTEL_EXPORTER_OTLP_CLIENT_KEY` | PEM certificate chain and private key wsgate presents (mutual TLS) |
//!
//! Both transports trust the same roots and present the same identity: gRPC
//! through tonic's `ClientTlsConfig` (which, left to itself, trusts no root at
//! all), HTTP through a rustls `ClientConfig` in wsgate's own reqwest client.
//! Every file is read and checked at start, so a wrong path or a key that does
//! not fit its certificate stops the start with the variable's name, instead of
//! every export failing later.

use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{ClientTlsConfig, Identity};

use super::otlp::settings::{Vars, either};

const CERTIFICATE: Vars = [
    "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CERTIFICATE",
];
const CLIENT_CERTIFICATE: Vars = [
    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
];
const CLIENT_KEY: Vars = [
    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
    "OTEL_EXPORTER_OTLP_CLIENT_KEY",
];

#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("{var}={path:?}: cannot read the file")]
    Read {
        var: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{var}={path:?}: {what}")]
    Content {
        var: &'static str,
        path: String,
        what: String,
    },
    #[error("{set} is set but {missing} is not: mutual TLS needs both")]
    HalfIdentity {
        set: &'static str,
        missing: &'static str,
    },
    #[error("{cert_var} and {key_var}: {source}")]
    Identity {
        cert_var: &'static str,
        key_var: &'static str,
        source: rustls::Error,
    },
    #[error(
        "the OTLP endpoint uses https but the system has no root certificates to verify it \
         with; set OTEL_EXPORTER_OTLP_CERTIFICATE to the collector's CA"
    )]
    NoSystemRoots,
    #[error("building the OTLP/HTTP client: {0}")]
    HttpClient(String),
}

/// One PEM file named by a variable, read at start.
struct PemFile {
    var: &'static str,
    path: String,
    pem: Vec<u8>,
}

impl PemFile {
    /// The first of `vars` that is set (the per-signal one wins), read.
    fn from_env(vars: Vars) -> Result<Option<Self>, TlsConfigError> {
        let Some((var, path)) = either(&super::export::env, vars) else {
            return Ok(None);
        };
        match std::fs::read(&path) {
            Ok(pem) => Ok(Some(Self { var, path, pem })),
            Err(source) => Err(TlsConfigError::Read { var, path, source }),
        }
    }

    fn error(&self, what: impl Into<String>) -> TlsConfigError {
        TlsConfigError::Content {
            var: self.var,
            path: self.path.clone(),
            what: what.into(),
        }
    }

    fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
        let certs = CertificateDer::pem_slice_iter(&self.pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.error(format!("not PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err(self.error("no PEM certificate in the file"));
        }
        Ok(certs)
    }

    fn private_key(&self) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
        PrivateKeyDer::from_pem_slice(&self.pem)
            .map_err(|e| self.error(format!("no PEM private key in the file: {e}")))
    }
}

/// The client certificate and key for mutual TLS.
struct ClientIdentity {
    cert: PemFile,
    key: PemFile,
    chain: Vec<CertificateDer<'static>>,
    private_key: PrivateKeyDer<'static>,
}

/// TLS settings for trace export, read from the environment.
pub struct TlsSettings {
    /// The CA certificates that replace the system roots, when set.
    ca: Option<(PemFile, Vec<CertificateDer<'static>>)>,
    identity: Option<ClientIdentity>,
}

impl TlsSettings {
    /// Reads and checks every file the variables name.
    pub fn from_env() -> Result<Self, TlsConfigError> {
        let ca = match PemFile::from_env(CERTIFICATE)? {
            Some(file) => {
                let certs = file.certificates()?;
                Some((file, certs))
            }
            None => None,
        };
        let identity = match (
            PemFile::from_env(CLIENT_CERTIFICATE)?,
            PemFile::from_env(CLIENT_KEY)?,
        ) {
            (None, None) => None,
            (Some(cert), None) => {
                return Err(TlsConfigError::HalfIdentity {
                    set: cert.var,
                    missing: "OTEL_EXPORTER_OTLP_(TRACES_)CLIENT_KEY",
                });
            }
            (None, Some(key)) => {
                return Err(TlsConfigError::HalfIdentity {
                    set: key.var,
                    missing: "OTEL_EXPORTER_OTLP_(TRACES_)CLIENT_CERTIFICATE",
                });
            }
            (Some(cert), Some(key)) => {
                let chain = cert.certificates()?;
                let private_key = key.private_key()?;
                Some(ClientIdentity {
                    cert,
                    key,
                    chain,
                    private_key,
                })
            }
        };
        let settings = Self { ca, identity };
        // Building a configuration checks that the key is usable and fits
        // its certificate, so a mismatch is a start-up error too.
        settings.rustls_config(RootCertStore::empty())?;
        Ok(settings)
    }

    /// The roots that verify the collector: the configured CA, else the
    /// system's (`SSL_CERT_FILE` and `SSL_CERT_DIR` override where those are
    /// looked for). Only read for an `https` endpoint, so a plain-HTTP set-up
    /// needs no CA bundle on the machine.
    fn roots(&self) -> Result<RootCertStore, TlsConfigError> {
        let mut roots = RootCertStore::empty();
        if let Some((file, certs)) = &self.ca {
            let (_, ignored) = roots.add_parsable_certificates(certs.iter().cloned());
            if roots.is_empty() {
                return Err(file.error(format!(
                    "none of its {ignored} certificates is a usable CA certificate"
                )));
            }
            return Ok(roots);
        }
        let found = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(found.certs);
        if roots.is_empty() {
            return Err(TlsConfigError::NoSystemRoots);
        }
        Ok(roots)
    }

    /// tonic's configuration for an `https` gRPC endpoint.
    pub fn grpc(&self) -> Result<ClientTlsConfig, TlsConfigError> {
        let config = ClientTlsConfig::new().trust_anchors(self.roots()?.roots);
        Ok(match &self.identity {
            Some(identity) => {
                config.identity(Identity::from_pem(&identity.cert.pem, &identity.key.pem))
            }
            None => config,
        })
    }

    /// A blocking reqwest client for OTLP/HTTP, whose requests time out after
    /// `timeout`. `https` says whether the endpoint needs the roots at all.
    pub fn http_client(
        &self,
        https: bool,
        timeout: Duration,
    ) -> Result<otlp_reqwest::blocking::Client, TlsConfigError> {
        let roots = if https {
            self.roots()?
        } else {
            RootCertStore::empty()
        };
        let tls = self.rustls_config(roots)?;
        let builder = otlp_reqwest::blocking::Client::builder()
            .timeout(timeout)
            .tls_backend_preconfigured(tls);
        // The blocking client starts a runtime on a thread of its own and
        // waits for it, which reqwest refuses to do on a runtime's thread.
        std::thread::scope(|scope| scope.spawn(|| builder.build()).join())
            .map_err(|_| TlsConfigError::HttpClient("its builder panicked".to_owned()))?
            .map_err(|e| TlsConfigError::HttpClient(e.to_string()))
    }

    /// The rustls configuration, always with ring: a second provider compiled
    /// in would make rustls refuse to pick one by itself.
    fn rustls_config(&self, roots: RootCertStore) -> Result<rustls::ClientConfig, TlsConfigError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsConfigError::HttpClient(e.to_string()))?
            .with_root_certificates(roots);
        match &self.identity {
            None => Ok(builder.with_no_client_auth()),
            Some(identity) => builder
                .with_client_auth_cert(identity.chain.clone(), identity.private_key.clone_key())
                .map_err(|source| TlsConfigError::Identity {
                    cert_var: identity.cert.var,
                    key_var: identity.key.var,
                    source,
                }),
        }
    }
}
