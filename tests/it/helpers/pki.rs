//! A throwaway public-key infrastructure for the NATS TLS tests: a CA, a
//! server certificate for 127.0.0.1 and a client certificate, made in the
//! test and written as PEM files to a temporary directory.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// The files, deleted with it.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA, and a server and a client certificate it signs.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ca_key = KeyPair::generate().expect("a key");
        let mut ca = CertificateParams::default();
        ca.distinguished_name
            .push(DnType::CommonName, "wsgate test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca, ca_key).expect("the CA");
        let write = |name: &str, contents: &str| {
            std::fs::write(dir.path().join(name), contents).expect("a PEM file")
        };
        write("ca.pem", &ca.pem());

        let leaf = |name: &str, purpose: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().expect("a key");
            let mut params =
                CertificateParams::new(vec!["localhost".to_owned()]).expect("parameters");
            params
                .subject_alt_names
                .push(SanType::IpAddress([127, 0, 0, 1].into()));
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![purpose];
            let cert = params.signed_by(&key, &ca).expect("a certificate");
            write(&format!("{name}.pem"), &cert.pem());
            write(&format!("{name}-key.pem"), &key.serialize_pem());
        };
        leaf("server", ExtendedKeyUsagePurpose::ServerAuth);
        leaf("client", ExtendedKeyUsagePurpose::ClientAuth);
        Self { dir }
    }

    /// A file of this PKI: `ca.pem`, `server.pem`, `server-key.pem`,
    /// `client.pem`, `client-key.pem`, or any other name to write to.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `path(name)` as a command-line argument.
    pub fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// nats-server options for TLS with this PKI's server certificate.
    pub fn server_tls(&self) -> Vec<String> {
        vec![
            "--tls".into(),
            "--tlscert".into(),
            self.arg("server.pem"),
            "--tlskey".into(),
            self.arg("server-key.pem"),
        ]
    }

    /// nats-server options that also require client certificates signed by
    /// this PKI's CA.
    pub fn server_tls_verify(&self) -> Vec<String> {
        vec![
            "--tlsverify".into(),
            "--tlscert".into(),
            self.arg("server.pem"),
            "--tlskey".into(),
            self.arg("server-key.pem"),
            "--tlscacert".into(),
            self.arg("ca.pem"),
        ]
    }
}
