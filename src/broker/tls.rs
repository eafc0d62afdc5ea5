//! TLS to NATS: the trust roots (`--nats-ca`, or the system's), the client
//! certificate (`--nats-cert`, `--nats-key`), and notes on why the last
//! handshake went wrong.
//!
//! wsgate builds the rustls configuration itself, once, at start-up, rather
//! than handing async-nats the file names (which it would read again on each
//! connection attempt): a missing file, a PEM file without a certificate or a
//! key that does not match its certificate is then a start-up error naming
//! the flag, instead of a node that retries forever and never says why.
//!
//! The notes exist because async-nats reports a failed connection attempt as
//! a bare "IO error": with them the node's log line can say that the server's
//! certificate was refused and why (an unknown issuer, a name mismatch), or
//! that the server wants a client certificate and none was given.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_nats::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use async_nats::rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use async_nats::rustls::pki_types::pem::PemObject as _;
use async_nats::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use async_nats::rustls::sign::CertifiedKey;
use async_nats::rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::connect::SetupError;

/// A client certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientCert {
    /// `--nats-cert`: PEM, the certificate first, then any intermediates.
    pub(crate) cert: PathBuf,
    /// `--nats-key`: PEM, PKCS#8, PKCS#1 or SEC1.
    pub(crate) key: PathBuf,
}

/// What went wrong in a TLS handshake with NATS, as far as the client sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TlsTrouble {
    /// The server's certificate was refused, for this reason.
    CertRefused(String),
    /// The server asked for a client certificate and none was configured.
    ClientCertWanted,
}

/// The last [`TlsTrouble`] since the last look. Cheap to clone: one `Arc`.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsNotes(Arc<Mutex<Option<TlsTrouble>>>);

impl TlsNotes {
    pub(super) fn note(&self, trouble: TlsTrouble) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(trouble);
    }

    /// The last trouble noted, forgotten once taken.
    pub(crate) fn take(&self) -> Option<TlsTrouble> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// The client's TLS configuration: roots from `ca` or the system, a client
/// certificate when given.
pub(crate) fn client_config(
    ca: Option<&Path>,
    client: Option<&ClientCert>,
) -> Result<(ClientConfig, TlsNotes), SetupError> {
    let roots = match ca {
        Some(path) => roots_from(path)?,
        None => system_roots()?,
    };
    let webpki = WebPkiServerVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| SetupError::Tls(e.to_string()))?;
    let notes = TlsNotes::default();
    let verifier = Arc::new(Recording {
        inner: webpki,
        notes: notes.clone(),
    });
    // `dangerous` is the only way to give rustls a verifier of one's own;
    // this one changes nothing about verification, it delegates every check
    // to the standard WebPKI verifier and only notes its refusals.
    let builder = ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match client {
        None => builder.with_client_cert_resolver(Arc::new(NoClientCert(notes.clone()))),
        Some(client) => {
            let chain = certificates(&client.cert, "nats-cert")?;
            let bytes = read(&client.key, "nats-key")?;
            let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| SetupError::Invalid {
                flag: "nats-key",
                path: client.key.clone(),
                reason: format!("no usable PEM private key ({e})"),
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| SetupError::Invalid {
                    flag: "nats-key",
                    path: client.key.clone(),
                    reason: format!("cannot be used with --nats-cert: {e}"),
                })?
        }
    };
    Ok((config, notes))
}

fn read(path: &Path, flag: &'static str) -> Result<Vec<u8>, SetupError> {
    std::fs::read(path).map_err(|source| SetupError::Read {
        flag,
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in a PEM file; at least one.
fn certificates(
    path: &Path,
    flag: &'static str,
) -> Result<Vec<CertificateDer<'static>>, SetupError> {
    let invalid = |reason: String| SetupError::Invalid {
        flag,
        path: path.to_owned(),
        reason,
    };
    let bytes = read(path, flag)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("not a PEM file ({e})")))?;
    if certs.is_empty() {
        return Err(invalid("holds no PEM certificate".into()));
    }
    Ok(certs)
}

/// The CAs of `--nats-ca`, and only them.
fn roots_from(path: &Path) -> Result<RootCertStore, SetupError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path, "nats-ca")? {
        roots.add(cert).map_err(|e| SetupError::Invalid {
            flag: "nats-ca",
            path: path.to_owned(),
            reason: format!("holds a certificate that cannot be a CA: {e}"),
        })?;
    }
    Ok(roots)
}

/// The system's CAs. async-nats loads them again on every TLS connection
/// attempt and fails that attempt if any cannot be read, whatever the roots
/// wsgate gives it; so an unreadable store is a start-up error here too.
fn system_roots() -> Result<RootCertStore, SetupError> {
    let found = rustls_native_certs::load_native_certs();
    if let Some(error) = found.errors.first() {
        return Err(SetupError::SystemRoots(error.to_string()));
    }
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(SetupError::SystemRoots(
            "none found (install the ca-certificates package, or give the CA with --nats-ca)"
                .into(),
        ));
    }
    Ok(roots)
}

/// No client certificate, noting when a server asks for one.
#[derive(Debug)]
struct NoClientCert(TlsNotes);

impl ResolvesClientCert for NoClientCert {
    /// Called only when the server asks for a client certificate.
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.note(TlsTrouble::ClientCertWanted);
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}

/// The standard verifier, noting why it refused a certificate.
#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    notes: TlsNotes,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, async_nats::rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .inspect_err(|e| self.notes.note(TlsTrouble::CertRefused(e.to_string())))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, async_nats::rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, async_nats::rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
