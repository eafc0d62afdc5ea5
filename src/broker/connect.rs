//! How a node reaches NATS: which servers, over TLS or not, logged in how.
//! Everything is read and checked here, at start-up, so that a missing file
//! or an unusable key stops the node with a message naming the flag.
//!
//! TLS follows NATS 2.9: the server sends INFO in clear, then the client
//! upgrades (async-nats's default; its `tls_first` needs a 2.10 server
//! configured with `handshake_first`, so wsgate does not use it).

use std::path::PathBuf;

use async_nats::ConnectOptions;

use super::nats_url::{NatsServers, UrlCredentials};
use super::tls::{ClientCert, TlsNotes};

/// What `--nats-url`, `--nats-ca`, `--nats-cert`, `--nats-key` and
/// `--nats-creds` say.
#[derive(Debug, Clone)]
pub struct NatsAccess {
    pub(crate) servers: NatsServers,
    /// `--nats-ca`: the CAs that sign the servers' certificates, instead of
    /// the system's.
    pub(crate) ca: Option<PathBuf>,
    /// `--nats-cert` and `--nats-key`.
    pub(crate) client_cert: Option<ClientCert>,
    /// `--nats-creds`: a user JWT and its nkey seed.
    pub(crate) creds: Option<PathBuf>,
}

impl NatsAccess {
    /// Whether connections must be TLS: a `tls://` URL or any TLS flag asks
    /// for it. Required for every server then, those the cluster announces
    /// (as `nats://` addresses) included, so none is reached in clear.
    pub(crate) fn tls(&self) -> bool {
        self.servers.any_tls() || self.ca.is_some() || self.client_cert.is_some()
    }
}

/// Why the NATS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SetupError {
    #[error("--{flag} {}: {source}", path.display())]
    Read {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--{flag} {}: {reason}", path.display())]
    Invalid {
        flag: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("the system's CA certificates, to verify the NATS server: {0}")]
    SystemRoots(String),
    #[error("TLS to NATS: {0}")]
    Tls(String),
}

/// The client's options for `access`, and (with TLS) where troubles in its
/// handshakes are noted.
pub(crate) fn options(
    access: &NatsAccess,
) -> Result<(ConnectOptions, Option<TlsNotes>), SetupError> {
    let mut options = ConnectOptions::new();
    let mut tls_notes = None;
    if access.tls() {
        let (config, noted) =
            super::tls::client_config(access.ca.as_deref(), access.client_cert.as_ref())?;
        options = options.tls_client_config(config).require_tls(true);
        tls_notes = Some(noted);
    }
    match &access.servers.credentials {
        None => {}
        Some(UrlCredentials::UserPassword { user, password }) => {
            options = options.user_and_password(user.clone(), password.expose().to_owned());
        }
        Some(UrlCredentials::Token(token)) => {
            options = options.token(token.expose().to_owned());
        }
    }
    if let Some(path) = &access.creds {
        let read = |source| SetupError::Read {
            flag: "nats-creds",
            path: path.clone(),
            source,
        };
        let contents = std::fs::read_to_string(path).map_err(read)?;
        // async-nats's messages ("cannot parse nkey from the credentials
        // file") never quote the file.
        options = options
            .credentials(&contents)
            .map_err(|e| SetupError::Invalid {
                flag: "nats-creds",
                path: path.clone(),
                reason: e.to_string(),
            })?;
    }
    if access.servers.credentials.is_some() && !access.tls() {
        tracing::warn!(
            servers = %access.servers,
            "--nats-url carries credentials and TLS is not required: unless the server asks for \
             TLS they cross the network in clear (use tls://, or --nats-creds, which sends no \
             secret)"
        );
    }
    Ok((options, tls_notes))
}
