//! NATS decentralised authentication, made offline as `nsc` makes it: an
//! operator, an account it signs, users the account signs, and a
//! nats-server configuration that trusts the operator and knows the account
//! (the memory resolver). Each user gets a credentials file (its JWT and
//! nkey seed) for `--nats-creds`.
//!
//! The JWTs follow nats-io/jwt v2: an `ed25519-nkey` signature over
//! `header.claims`, and a `jti` that is the base32 SHA-256 of the claims
//! without it.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// An operator and one account, whose users can log in.
pub struct Trust {
    operator_jwt: String,
    account: KeyPair,
    account_jwt: String,
}

impl Trust {
    pub fn new() -> Self {
        let operator = KeyPair::new_operator();
        let operator_jwt = encode(
            &operator,
            &operator.public_key(),
            "wsgate-test",
            json!({"type": "operator", "version": 2}),
        );
        let account = KeyPair::new_account();
        // -1 is "no limit"; a limit left out would be 0: no connection at all.
        let account_jwt = encode(
            &operator,
            &account.public_key(),
            "wsgate",
            json!({
                "limits": {
                    "subs": -1, "data": -1, "payload": -1, "imports": -1,
                    "exports": -1, "wildcards": true, "conn": -1, "leaf": -1
                },
                "default_permissions": {"pub": {}, "sub": {}},
                "type": "account",
                "version": 2
            }),
        );
        Self {
            operator_jwt,
            account,
            account_jwt,
        }
    }

    /// Writes the nats-server configuration that trusts this operator and
    /// its account; returns its path.
    pub fn server_config(&self, dir: &Path) -> PathBuf {
        let path = dir.join("operator.conf");
        let config = format!(
            "operator: \"{}\"\nresolver: MEMORY\nresolver_preload: {{\n  {}: \"{}\"\n}}\n",
            self.operator_jwt,
            self.account.public_key(),
            self.account_jwt
        );
        std::fs::write(&path, config).expect("the server configuration");
        path
    }

    /// Writes a credentials file for a new user of the account; returns its
    /// path and the user's seed (which must stay secret).
    pub fn user_creds(&self, dir: &Path, name: &str) -> (PathBuf, String) {
        user_creds(&self.account, dir, name)
    }
}

/// A credentials file for a user signed by `account`, which the server may or
/// may not trust.
pub fn user_creds(account: &KeyPair, dir: &Path, name: &str) -> (PathBuf, String) {
    let user = KeyPair::new_user();
    let jwt = encode(
        account,
        &user.public_key(),
        name,
        json!({
            "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2
        }),
    );
    let seed = user.seed().expect("a user seed");
    // The layout `nsc generate creds` writes.
    let creds = format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    );
    let path = dir.join(format!("{name}.creds"));
    std::fs::write(&path, creds).expect("a credentials file");
    (path, seed)
}

/// A JWT for `subject`, issued and signed by `issuer`.
fn encode(issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> String {
    let header = json!({"typ": "JWT", "alg": "ed25519-nkey"});
    let issued_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let mut claims = json!({
        "jti": "",
        "iat": issued_at,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let hash = Sha256::digest(serde_json::to_vec(&claims).expect("claims"));
    claims["jti"] = data_encoding::BASE32_NOPAD.encode(&hash).into();
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = issuer.sign(signed.as_bytes()).expect("a signature");
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}
