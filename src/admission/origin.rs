//! Web origins, compared as (scheme, host, port) with each scheme's own
//! default port, as browsers compare them (RFC 6454).
//!
//! Parsing is the `url` crate's (the WHATWG URL parser browsers implement), so
//! a value a browser would not produce, such as `http://host:8080:80`, is
//! refused instead of being read one way here and another way there.

use std::fmt;

/// A browser origin: `http` or `https`, a host, and a port (the scheme's
/// default when none is written: 80 for http, 443 for https).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Origin(url::Origin);

/// Why a value is not an origin; the message names the value and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not an origin like https://app.example.com: {reason}")]
pub struct OriginError {
    value: String,
    reason: String,
}

impl Origin {
    /// An origin written on its own, as in `--allowed-origins` or a browser's
    /// `Origin` header: `scheme://host[:port]`, a trailing `/` tolerated,
    /// nothing else.
    pub fn parse(value: &str) -> Result<Self, OriginError> {
        let url = http_url(value)?;
        let fail = |reason: &str| error(value, reason);
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(fail("it has a path, query or fragment"));
        }
        Ok(Self(url.origin()))
    }

    /// The origin of a URL that may have a path, such as `--public-url`.
    pub fn of_url(value: &str) -> Result<Self, OriginError> {
        Ok(Self(http_url(value)?.origin()))
    }

    /// The origin a request names with its `Host` header, under `scheme`:
    /// the origin of a page served by this gateway at that address. `None`
    /// when the header is not a bare `host[:port]`.
    pub fn of_host(scheme: &str, host: &str) -> Option<Self> {
        if host.is_empty()
            || host
                .bytes()
                .any(|b| matches!(b, b'/' | b'\\' | b'?' | b'#' | b'@') || b <= b' ')
        {
            return None;
        }
        Self::parse(&format!("{scheme}://{host}")).ok()
    }

    /// The scheme: `http` or `https`.
    pub fn scheme(&self) -> &str {
        match &self.0 {
            url::Origin::Tuple(scheme, _, _) => scheme,
            url::Origin::Opaque(_) => "",
        }
    }
}

fn error(value: &str, reason: &str) -> OriginError {
    OriginError {
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

/// An absolute `http`/`https` URL with a host and no user name or password.
fn http_url(value: &str) -> Result<url::Url, OriginError> {
    let url = url::Url::parse(value.trim()).map_err(|e| error(value, &e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(error(value, "the scheme must be http or https"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(error(value, "it has a user name or password"));
    }
    if url.host().is_none() {
        return Err(error(value, "it has no host"));
    }
    Ok(url)
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.ascii_serialization())
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Origin({self})")
    }
}

impl std::str::FromStr for Origin {
    type Err = OriginError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn same(a: &str, b: &str) {
        assert_eq!(
            Origin::parse(a).unwrap(),
            Origin::parse(b).unwrap(),
            "{a} = {b}"
        );
    }

    #[track_caller]
    fn different(a: &str, b: &str) {
        assert_ne!(
            Origin::parse(a).unwrap(),
            Origin::parse(b).unwrap(),
            "{a} ≠ {b}"
        );
    }

    #[track_caller]
    fn refused(value: &str, needle: &str) {
        let err = Origin::parse(value).unwrap_err().to_string();
        assert!(
            err.contains("is not an origin") && err.contains(needle),
            "{value}: {err}"
        );
    }

    #[test]
    fn each_scheme_has_its_own_default_port() {
        same("https://gw.example.com", "https://gw.example.com:443");
        same("http://gw.example.com", "http://gw.example.com:80");
        same("https://GW.Example.com/", "https://gw.example.com");
        different("https://gw.example.com:80", "https://gw.example.com");
        different("http://gw.example.com:443", "http://gw.example.com");
        different("http://gw.example.com", "https://gw.example.com");
        different("http://127.0.0.1:8080", "http://127.0.0.1:9999");
        same("http://[::1]:8080", "http://[0:0::1]:8080");
    }

    #[test]
    fn what_is_not_an_origin() {
        refused("http://host:8080:80", "invalid port");
        refused("null", "relative URL");
        refused("app.example.com", "relative URL");
        refused("https://a.example/path", "path");
        refused("https://a.example/?q", "query");
        refused("ftp://a.example", "http or https");
        refused("https://user@a.example", "user name");
        refused("https://", "empty host");
    }

    #[test]
    fn origins_of_urls_and_host_headers() {
        assert_eq!(
            Origin::of_url("https://chat.example.com/app/?x=1").unwrap(),
            Origin::parse("https://chat.example.com").unwrap()
        );
        let of_host = |scheme, host| Origin::of_host(scheme, host).map(|o| o.to_string());
        assert_eq!(
            of_host("https", "gw.example.com:443").as_deref(),
            Some("https://gw.example.com")
        );
        assert_eq!(
            of_host("http", "gw.example.com:443").as_deref(),
            Some("http://gw.example.com:443")
        );
        for bad in ["", "a/b", "evil@gw", "gw:8080:80", "gw?x", "gw#x", "g w"] {
            assert_eq!(of_host("http", bad), None, "{bad:?}");
        }
        assert_eq!(
            Origin::parse("https://a.example").unwrap().scheme(),
            "https"
        );
    }
}
