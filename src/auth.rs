//! Who a connection is: JSON Web Tokens, checked before the WebSocket upgrade.
//!
//! With `--jwt-secret` (HS256) and/or `--jwt-public-key` (RS256 or ES256 PEM),
//! every upgrade must carry a token. The algorithm allowlist is explicit and per
//! key, so an HS256 token can never be checked against a public key (the
//! classic algorithm-confusion attack), and `alg: none` is never accepted.
//!
//! Claims:
//! - `sub` (required): the user; `exp` (required): a connection is closed when
//!   its token expires, unless the client sends a `refresh` with a new one;
//!   `nbf` (honoured if present).
//! - `aud` and `iss`: required and checked when `--jwt-audience` and
//!   `--jwt-issuer` are set, so a token an identity provider issued for another
//!   application is refused.
//! - `tenant` (optional, default `default`): the namespace of the user's rooms.
//! - `rooms` (optional): `{"subscribe": [patterns], "publish": [patterns]}`.
//!   Without it, the token may use every room of its tenant. With it, only the
//!   listed patterns; a missing list allows nothing. A pattern is a room name in
//!   which `*` matches any run of characters (`team:*`, `*`).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;

use wsgate_protocol::room::{RoomName, Tenant};

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 5;

/// The verified identity of a connection.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: Option<String>,
    pub tenant: Tenant,
    pub permissions: Permissions,
    /// The token's `exp` (Unix seconds); `None` when tokens are off.
    pub expires: Option<u64>,
}

impl Identity {
    /// Everyone, when tokens are off: the default tenant, every room.
    pub fn anonymous() -> Self {
        Self {
            user: None,
            tenant: Tenant::default_tenant(),
            permissions: Permissions::All,
            expires: None,
        }
    }

    /// Whether `other` names the same user in the same tenant: the only
    /// identity a connection's token may be refreshed to.
    pub fn same_subject(&self, other: &Identity) -> bool {
        self.user == other.user && self.tenant == other.tenant
    }
}

/// What a connection may do with rooms of its tenant.
#[derive(Debug, Clone)]
pub enum Permissions {
    All,
    /// Behind an `Arc`: every connection holds its permissions for life, and
    /// most have none listed, so the lists must not widen every session.
    Listed(Arc<RoomGrants>),
}

/// The room patterns a token's `rooms` claim lists.
#[derive(Debug)]
pub struct RoomGrants {
    pub subscribe: Vec<String>,
    pub publish: Vec<String>,
}

impl Permissions {
    pub fn may_subscribe(&self, room: &RoomName) -> bool {
        match self {
            Self::All => true,
            Self::Listed(grants) => grants.subscribe.iter().any(|p| matches(p, room.as_str())),
        }
    }

    pub fn may_publish(&self, room: &RoomName) -> bool {
        match self {
            Self::All => true,
            Self::Listed(grants) => grants.publish.iter().any(|p| matches(p, room.as_str())),
        }
    }
}

/// Glob matching where `*` matches any run of characters; nothing else is special.
fn matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Why a token was refused: the short reason of the 401 answer. Never contains
/// the token itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("invalid signature")]
    BadSignature,
    #[error("algorithm not allowed")]
    Algorithm,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token is for another audience")]
    Audience,
    #[error("token is from another issuer")]
    Issuer,
    #[error("invalid claims")]
    Claims,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    /// A JWT NumericDate may have a fraction; whole seconds are enough here.
    exp: f64,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    rooms: Option<RoomClaims>,
}

#[derive(Deserialize)]
struct RoomClaims {
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
}

/// The configured verification keys.
pub struct Verifier {
    secret: Option<DecodingKey>,
    public: Option<(DecodingKey, Algorithm)>,
    /// Expected `aud` and `iss`, when configured.
    audience: Option<String>,
    issuer: Option<String>,
}

/// A key that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is neither an RSA nor an EC (P-256) public key in PEM form")]
    Pem { path: String },
    #[error("the JWT secret is empty")]
    EmptySecret,
}

impl Verifier {
    /// `None` when neither a secret nor a public key is configured: tokens off.
    pub fn new(secret: Option<&[u8]>, public_key: Option<&Path>) -> Result<Option<Self>, KeyError> {
        Self::with_claims(secret, public_key, None, None)
    }

    /// Like [`new`](Self::new), also requiring `aud` and `iss` to match when given.
    pub fn with_claims(
        secret: Option<&[u8]>,
        public_key: Option<&Path>,
        audience: Option<&str>,
        issuer: Option<&str>,
    ) -> Result<Option<Self>, KeyError> {
        if secret.is_none() && public_key.is_none() {
            return Ok(None);
        }
        let secret = match secret {
            Some([]) => return Err(KeyError::EmptySecret),
            Some(s) => Some(DecodingKey::from_secret(s)),
            None => None,
        };
        let public = match public_key {
            None => None,
            Some(path) => {
                let shown = path.display().to_string();
                let pem = std::fs::read(path).map_err(|source| KeyError::Read {
                    path: shown.clone(),
                    source,
                })?;
                let key = DecodingKey::from_rsa_pem(&pem)
                    .map(|k| (k, Algorithm::RS256))
                    .or_else(|_| DecodingKey::from_ec_pem(&pem).map(|k| (k, Algorithm::ES256)))
                    .map_err(|_| KeyError::Pem { path: shown })?;
                Some(key)
            }
        };
        Ok(Some(Self {
            secret,
            public,
            audience: audience.map(str::to_owned),
            issuer: issuer.map(str::to_owned),
        }))
    }

    /// Verifies a token and returns who it names.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let (key, algorithm) = match header.alg {
            Algorithm::HS256 => (
                self.secret.as_ref().ok_or(AuthError::Algorithm)?,
                Algorithm::HS256,
            ),
            alg => match &self.public {
                Some((key, allowed)) if *allowed == alg => (key, alg),
                _ => return Err(AuthError::Algorithm),
            },
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| match e
            .kind()
        {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => AuthError::Algorithm,
            ErrorKind::InvalidAudience => AuthError::Audience,
            ErrorKind::InvalidIssuer => AuthError::Issuer,
            ErrorKind::MissingRequiredClaim(_)
            | ErrorKind::InvalidClaimFormat(_)
            | ErrorKind::Json(_) => AuthError::Claims,
            _ => AuthError::Malformed,
        })?;
        let claims = data.claims;
        let tenant = match claims.tenant.as_deref() {
            None => Tenant::default_tenant(),
            Some(t) => Tenant::parse(t).map_err(|_| AuthError::Claims)?,
        };
        let permissions = match claims.rooms {
            None => Permissions::All,
            Some(rooms) => Permissions::Listed(Arc::new(RoomGrants {
                subscribe: rooms.subscribe,
                publish: rooms.publish,
            })),
        };
        Ok(Identity {
            user: Some(claims.sub),
            tenant,
            permissions,
            expires: Some(claims.exp.max(0.0) as u64),
        })
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("Verifier")
            .field("hs256", &self.secret.is_some())
            .field("public", &self.public.as_ref().map(|(_, alg)| alg))
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .finish()
    }
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
