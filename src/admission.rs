//! Who may open a WebSocket, decided before the `101 Switching Protocols`:
//! the browser origin, the token, and the per-IP, per-user and total
//! connection caps.
//!
//! Every refusal is an HTTP status with a short reason, counted in
//! `websocket_connections_rejected_total{reason}`. Nothing secret (a token, a
//! key) ever appears in a reason.

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, Uri, header};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::{AuthError, Identity, Verifier};
use crate::telemetry::RejectReason;

mod api_access;
mod origin;
mod slots;

pub(crate) use api_access::ApiAccess;
pub use origin::{Origin, OriginError};
use slots::{ClientKey, Slot, Slots, UserKey};

/// The subprotocol a client may offer (with `wsgate.token.<JWT>`), and that
/// the server then selects.
pub const SUBPROTOCOL: &str = "wsgate.v1";
const TOKEN_SUBPROTOCOL_PREFIX: &str = "wsgate.token.";

/// Why an upgrade was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("origin not allowed")]
    Origin,
    #[error("{0}")]
    Unauthorized(AuthError),
    #[error("too many connections from this address")]
    PerIpLimit,
    #[error("too many connections for this user")]
    PerUserLimit,
    #[error("server is at its connection limit")]
    Capacity,
}

impl Refusal {
    pub fn reason(self) -> RejectReason {
        match self {
            Self::Origin => RejectReason::Origin,
            Self::Unauthorized(_) => RejectReason::Unauthorized,
            Self::PerIpLimit => RejectReason::PerIpLimit,
            Self::PerUserLimit => RejectReason::PerUserLimit,
            Self::Capacity => RejectReason::Capacity,
        }
    }
}

/// A connection that was let in, holding its slots for as long as it lives.
#[derive(Debug)]
pub struct Admitted {
    pub identity: Identity,
    _ip: Option<Slot<ClientKey>>,
    _user: Option<Slot<UserKey>>,
    _permit: OwnedSemaphorePermit,
}

/// What admission enforces, taken from the configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `--allowed-origins`: browser origins allowed to connect.
    pub allowed_origins: Vec<Origin>,
    /// The origin of `--public-url`: the gateway's own, for its demo page.
    pub public_origin: Option<Origin>,
    /// `--max-connections-per-ip`; 0 = off.
    pub max_per_ip: u32,
    /// `--max-connections-per-user`; 0 = off.
    pub max_per_user: u32,
    /// `--max-connections`.
    pub max_connections: u32,
}

impl Default for Policy {
    /// No origin list, no per-client caps, the default total cap.
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            public_origin: None,
            max_per_ip: 0,
            max_per_user: 0,
            max_connections: 100_000,
        }
    }
}

/// Which browser origins may open a WebSocket.
enum OriginRule {
    /// The development default (no `--allowed-origins`, no `--public-url`):
    /// only the gateway itself, as the request's `Host` names it.
    SameHost,
    /// Exactly these. The `Host` header plays no part: any name can be pointed
    /// at the gateway (DNS rebinding), making `Origin` and `Host` agree on a
    /// page that is not the gateway's.
    Listed(Vec<Origin>),
}

pub struct Admission {
    verifier: Option<Verifier>,
    origins: OriginRule,
    per_ip: Option<Arc<Slots<ClientKey>>>,
    per_user: Option<Arc<Slots<UserKey>>>,
    /// `--max-connections` slots; a permit lives as long as its session.
    permits: Arc<Semaphore>,
}

impl Admission {
    pub fn new(verifier: Option<Verifier>, policy: Policy) -> Self {
        let mut listed = policy.allowed_origins;
        listed.extend(policy.public_origin);
        Self {
            verifier,
            origins: if listed.is_empty() {
                OriginRule::SameHost
            } else {
                OriginRule::Listed(listed)
            },
            per_ip: Slots::new(policy.max_per_ip),
            per_user: Slots::new(policy.max_per_user),
            permits: Arc::new(Semaphore::new(policy.max_connections as usize)),
        }
    }

    /// Whether tokens are required.
    pub fn tokens_enabled(&self) -> bool {
        self.verifier.is_some()
    }

    /// The token verifier, for a connection's `refresh`.
    pub fn verifier(&self) -> Option<&Verifier> {
        self.verifier.as_ref()
    }

    /// Decides whether this upgrade request may proceed. The checks run
    /// cheapest and most specific first: origin, token, then the caps.
    pub fn admit(
        &self,
        uri: &Uri,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
    ) -> Result<Admitted, Refusal> {
        if !self.origin_allowed(headers) {
            return Err(Refusal::Origin);
        }
        let identity = match &self.verifier {
            None => Identity::anonymous(),
            Some(verifier) => {
                let token = token(uri, headers).ok_or(Refusal::Unauthorized(AuthError::Missing))?;
                verifier.verify(&token).map_err(Refusal::Unauthorized)?
            }
        };
        let ip = match (&self.per_ip, peer) {
            (Some(per_ip), Some(ip)) => {
                Some(Slots::take(per_ip, ClientKey::of(ip)).ok_or(Refusal::PerIpLimit)?)
            }
            _ => None,
        };
        // Anonymous connections (tokens off) have no user to count.
        let user = match (&self.per_user, &identity.user) {
            (Some(per_user), Some(sub)) => {
                let key = UserKey {
                    tenant: identity.tenant.clone(),
                    sub: sub.clone(),
                };
                Some(Slots::take(per_user, key).ok_or(Refusal::PerUserLimit)?)
            }
            _ => None,
        };
        let permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Capacity)?;
        Ok(Admitted {
            identity,
            _ip: ip,
            _user: user,
            _permit: permit,
        })
    }

    /// A browser's `Origin` must be allowed (see [`OriginRule`]): otherwise any
    /// web page could open a connection with the visitor's cookies (cross-site
    /// WebSocket hijacking). Requests without `Origin` come from non-browser
    /// clients and are allowed; a present but unparsable one (`null`,
    /// `http://host:8080:80`) is refused.
    fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return true;
        };
        let Some(origin) = origin.to_str().ok().and_then(|o| Origin::parse(o).ok()) else {
            return false;
        };
        match &self.origins {
            OriginRule::Listed(listed) => listed.contains(&origin),
            OriginRule::SameHost => headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .and_then(|host| Origin::of_host(origin.scheme(), host))
                .is_some_and(|own| own == origin),
        }
    }
}

/// The token of an upgrade request: `?token=`, then `Authorization: Bearer`,
/// then a `wsgate.token.<JWT>` subprotocol (browsers can set neither headers
/// nor, safely, cookies on a WebSocket).
fn token(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    if let Some(query) = uri.query() {
        for pair in query.split('&') {
            if let Some(value) = pair.strip_prefix("token=") {
                return percent_decode(value);
            }
        }
    }
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(token) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
    {
        return Some(token.trim().to_owned());
    }
    subprotocols(headers).find_map(|p| p.strip_prefix(TOKEN_SUBPROTOCOL_PREFIX).map(str::to_owned))
}

fn subprotocols(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// `Some(SUBPROTOCOL)` when the client offered it: the answer must echo it.
pub fn offered_subprotocol(headers: &HeaderMap) -> Option<&'static str> {
    subprotocols(headers)
        .any(|p| p == SUBPROTOCOL)
        .then_some(SUBPROTOCOL)
}

/// Decodes `%XX` escapes (a JWT is base64url and dots, so this is rarely
/// needed); `None` for a malformed escape or invalid UTF-8.
fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = value.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn listing(origins: &[&str], public: Option<&str>) -> Admission {
        Admission::new(
            None,
            Policy {
                allowed_origins: origins.iter().map(|o| Origin::parse(o).unwrap()).collect(),
                public_origin: public.map(|p| Origin::of_url(p).unwrap()),
                ..Policy::default()
            },
        )
    }

    fn limits(max_per_ip: u32, max_per_user: u32, max_connections: u32) -> Policy {
        Policy {
            max_per_ip,
            max_per_user,
            max_connections,
            ..Policy::default()
        }
    }

    #[track_caller]
    fn check_origin(admission: &Admission, pairs: &[(&str, &str)], allowed: bool) {
        assert_eq!(
            admission.origin_allowed(&headers(pairs)),
            allowed,
            "{pairs:?}"
        );
    }

    #[test]
    fn without_a_list_the_gateways_own_origin_is_the_hosts() {
        let a = listing(&[], None);
        for (host, origin, allowed) in [
            ("gw.example.com", None, true),
            ("gw.example.com", Some("https://gw.example.com"), true),
            ("gw.example.com:443", Some("https://gw.example.com"), true),
            ("gw.example.com:80", Some("http://gw.example.com"), true),
            ("127.0.0.1:8080", Some("http://127.0.0.1:8080"), true),
            ("GW.example.com", Some("https://gw.example.com/"), true),
            // Each scheme's own default port: 443 is not http's, 80 not https's.
            ("gw.example.com:443", Some("http://gw.example.com"), false),
            ("gw.example.com:80", Some("https://gw.example.com"), false),
            ("gw.example.com", Some("https://evil.example"), false),
            ("gw.example.com", Some("https://gw.example.com.evil"), false),
            ("127.0.0.1:8080", Some("http://127.0.0.1:9999"), false),
            ("gw.example.com", Some("null"), false),
            // Not an origin at all, though its suffix matches the Host.
            ("host:8080", Some("http://host:8080:80"), false),
            ("host:8080:80", Some("http://host:8080"), false),
        ] {
            let mut pairs = vec![("host", host)];
            pairs.extend(origin.map(|o| ("origin", o)));
            check_origin(&a, &pairs, allowed);
        }
        check_origin(&a, &[("origin", "https://gw.example.com")], false);
    }

    #[test]
    fn with_a_list_the_host_header_counts_for_nothing() {
        let a = listing(&["https://app.example.com/"], None);
        for (host, origin, allowed) in [
            ("gw.example.com", None, true),
            ("gw.example.com", Some("https://APP.example.com:443"), true),
            ("rebound.evil", Some("http://rebound.evil"), false),
            ("gw.example.com", Some("https://gw.example.com"), false),
            ("app.example.com", Some("http://app.example.com"), false),
        ] {
            let mut pairs = vec![("host", host)];
            pairs.extend(origin.map(|o| ("origin", o)));
            check_origin(&a, &pairs, allowed);
        }
        let with_public = listing(&[], Some("https://chat.example.com/demo/"));
        check_origin(
            &with_public,
            &[
                ("host", "chat.example.com"),
                ("origin", "https://chat.example.com"),
            ],
            true,
        );
        check_origin(
            &with_public,
            &[("host", "rebound.evil"), ("origin", "http://rebound.evil")],
            false,
        );
    }

    #[test]
    fn tokens_come_from_query_header_or_subprotocol() {
        let uri: Uri = "/ws?room=x&token=abc.def.g%2Dh".parse().unwrap();
        assert_eq!(
            token(&uri, &HeaderMap::new()).as_deref(),
            Some("abc.def.g-h")
        );
        let plain: Uri = "/ws".parse().unwrap();
        assert_eq!(
            token(&plain, &headers(&[("authorization", "Bearer t.o.k")])).as_deref(),
            Some("t.o.k")
        );
        let h = headers(&[("sec-websocket-protocol", "wsgate.v1, wsgate.token.x.y.z")]);
        assert_eq!(token(&plain, &h).as_deref(), Some("x.y.z"));
        assert_eq!(offered_subprotocol(&h), Some(SUBPROTOCOL));
        assert_eq!(
            token(&plain, &headers(&[("authorization", "Basic Zm9v")])),
            None
        );
        assert_eq!(
            token(&"/ws?token=%zz".parse().unwrap(), &HeaderMap::new()),
            None
        );
    }

    #[test]
    fn per_ip_slots_are_returned_on_drop() {
        let a = Admission::new(None, limits(2, 0, 10));
        let uri: Uri = "/ws".parse().unwrap();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let first = a.admit(&uri, &HeaderMap::new(), Some(ip)).unwrap();
        let _second = a.admit(&uri, &HeaderMap::new(), Some(ip)).unwrap();
        assert_eq!(
            a.admit(&uri, &HeaderMap::new(), Some(ip)).unwrap_err(),
            Refusal::PerIpLimit
        );
        assert!(a.admit(&uri, &HeaderMap::new(), Some(other)).is_ok());
        drop(first);
        assert!(a.admit(&uri, &HeaderMap::new(), Some(ip)).is_ok());
    }

    #[test]
    fn total_capacity() {
        let a = Admission::new(None, limits(0, 0, 1));
        let uri: Uri = "/ws".parse().unwrap();
        let held = a.admit(&uri, &HeaderMap::new(), None).unwrap();
        assert_eq!(
            a.admit(&uri, &HeaderMap::new(), None).unwrap_err(),
            Refusal::Capacity
        );
        drop(held);
        assert!(a.admit(&uri, &HeaderMap::new(), None).is_ok());
    }
}
