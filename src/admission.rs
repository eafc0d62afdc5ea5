//! Who may open a WebSocket, decided before the `101 Switching Protocols`:
//! the browser origin, the token, and the per-IP and total connection caps.
//!
//! Every refusal is an HTTP status with a short reason, counted in
//! `websocket_connections_rejected_total{reason}`. Nothing secret (a token, a
//! key) ever appears in a reason.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, Uri, header};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::{AuthError, Identity, Verifier};
use crate::telemetry::RejectReason;

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
    #[error("server is at its connection limit")]
    Capacity,
}

impl Refusal {
    pub fn reason(self) -> RejectReason {
        match self {
            Self::Origin => RejectReason::Origin,
            Self::Unauthorized(_) => RejectReason::Unauthorized,
            Self::PerIpLimit => RejectReason::PerIpLimit,
            Self::Capacity => RejectReason::Capacity,
        }
    }
}

/// A connection that was let in, holding its slots for as long as it lives.
#[derive(Debug)]
pub struct Admitted {
    pub identity: Identity,
    /// `Some(SUBPROTOCOL)` when the client offered it: it must be echoed.
    pub subprotocol: Option<&'static str>,
    _ip: Option<IpSlot>,
    _permit: OwnedSemaphorePermit,
}

pub struct Admission {
    verifier: Option<Verifier>,
    /// Full origins, lowercased, without a trailing slash.
    allowed_origins: Vec<String>,
    per_ip: Option<Arc<PerIp>>,
    /// `--max-connections` slots; a permit lives as long as its session.
    permits: Arc<Semaphore>,
}

impl Admission {
    pub fn new(
        verifier: Option<Verifier>,
        allowed_origins: &[String],
        max_per_ip: u32,
        max_connections: u32,
    ) -> Self {
        Self {
            verifier,
            allowed_origins: allowed_origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            per_ip: (max_per_ip > 0).then(|| {
                Arc::new(PerIp {
                    max: max_per_ip,
                    counts: Mutex::default(),
                })
            }),
            permits: Arc::new(Semaphore::new(max_connections as usize)),
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
            (Some(per_ip), Some(ip)) => Some(PerIp::take(per_ip, ip).ok_or(Refusal::PerIpLimit)?),
            _ => None,
        };
        let permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Capacity)?;
        Ok(Admitted {
            identity,
            subprotocol: offers_subprotocol(headers).then_some(SUBPROTOCOL),
            _ip: ip,
            _permit: permit,
        })
    }

    /// A browser's `Origin` must be this server itself (the request's `Host`) or
    /// listed in `--allowed-origins`: otherwise any web page could open a
    /// connection with the visitor's cookies (cross-site WebSocket hijacking).
    /// Requests without `Origin` come from non-browser clients and are allowed.
    fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        if self.allowed_origins.contains(&origin) {
            return true;
        }
        let Some((scheme, authority)) = origin.split_once("://") else {
            return false;
        };
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_ascii_lowercase);
        matches!(scheme, "http" | "https")
            && host
                .is_some_and(|host| without_default_port(&host) == without_default_port(authority))
    }
}

fn without_default_port(authority: &str) -> &str {
    authority
        .strip_suffix(":80")
        .or_else(|| authority.strip_suffix(":443"))
        .unwrap_or(authority)
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

fn offers_subprotocol(headers: &HeaderMap) -> bool {
    subprotocols(headers).any(|p| p == SUBPROTOCOL)
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

/// Connections per client address (`--max-connections-per-ip`).
struct PerIp {
    max: u32,
    /// A std mutex around a map update; never held across `.await`.
    counts: Mutex<HashMap<IpAddr, u32>>,
}

impl PerIp {
    fn take(this: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut counts = this.counts.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= this.max {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            per_ip: this.clone(),
            ip,
        })
    }
}

/// One connection's share of its address's allowance, returned on drop.
struct IpSlot {
    per_ip: Arc<PerIp>,
    ip: IpAddr,
}

impl std::fmt::Debug for IpSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IpSlot({})", self.ip)
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.per_ip.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
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

    fn open(origins: &[&str]) -> Admission {
        let origins: Vec<String> = origins.iter().map(|s| s.to_string()).collect();
        Admission::new(None, &origins, 0, 10)
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
    fn origins() {
        let a = open(&["https://app.example.com/"]);
        check_origin(&a, &[("host", "gw.example.com")], true);
        check_origin(
            &a,
            &[
                ("host", "gw.example.com"),
                ("origin", "https://gw.example.com"),
            ],
            true,
        );
        check_origin(
            &a,
            &[
                ("host", "gw.example.com:443"),
                ("origin", "https://gw.example.com"),
            ],
            true,
        );
        check_origin(
            &a,
            &[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://127.0.0.1:8080"),
            ],
            true,
        );
        check_origin(
            &a,
            &[
                ("host", "gw.example.com"),
                ("origin", "https://APP.example.com"),
            ],
            true,
        );
        check_origin(
            &a,
            &[
                ("host", "gw.example.com"),
                ("origin", "https://evil.example"),
            ],
            false,
        );
        check_origin(
            &a,
            &[
                ("host", "gw.example.com"),
                ("origin", "https://gw.example.com.evil"),
            ],
            false,
        );
        check_origin(
            &a,
            &[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://127.0.0.1:9999"),
            ],
            false,
        );
        check_origin(&a, &[("host", "gw.example.com"), ("origin", "null")], false);
        check_origin(&a, &[("origin", "https://gw.example.com")], false);
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
        assert!(offers_subprotocol(&h));
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
        let a = Admission::new(None, &[], 2, 10);
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
        let a = Admission::new(None, &[], 0, 1);
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
