//! `--nats-url`: one or more NATS server URLs, and the credentials they may
//! carry (`nats://user:pass@host:4222`, or `nats://token@host:4222`).
//!
//! async-nats 0.51 ignores credentials in a URL: it takes them only from
//! `ConnectOptions`. And its server address Debug-prints the whole URL in its
//! own log lines. So wsgate takes the credentials out here: the client is
//! given bare addresses plus the credentials as options, and everything that
//! logs or reports a server (wsgate's lines and errors, the client's) only
//! ever sees a bare address.

use std::fmt;
use std::str::FromStr;

use async_nats::ServerAddr;
use percent_encoding::percent_decode_str;
use url::Url;

use crate::secret::Secret;

/// The `--nats-url` flag as given. It is parsed by [`NatsUrl::servers`], not
/// by clap: clap quotes a value it cannot parse in its error message, and this
/// one may hold a password.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsUrl(Secret);

impl From<String> for NatsUrl {
    fn from(raw: String) -> Self {
        Self(Secret::new(raw))
    }
}

impl FromStr for NatsUrl {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        if raw.trim().is_empty() {
            return Err("must not be empty".into());
        }
        Ok(Self::from(raw.to_owned()))
    }
}

impl fmt::Debug for NatsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.servers() {
            Ok(servers) => write!(f, "NatsUrl({servers})"),
            Err(_) => f.write_str("NatsUrl([invalid])"),
        }
    }
}

/// Credentials taken out of the URLs.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum UrlCredentials {
    UserPassword { user: String, password: Secret },
    Token(Secret),
}

impl fmt::Debug for UrlCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UserPassword { user, .. } => write!(f, "UserPassword({user:?}, [redacted])"),
            Self::Token(_) => f.write_str("Token([redacted])"),
        }
    }
}

/// The servers of `--nats-url`, without credentials, and the credentials.
/// `Display` lists the bare URLs: safe for logs.
#[derive(Clone, Debug)]
pub(crate) struct NatsServers {
    pub(crate) addrs: Vec<ServerAddr>,
    pub(crate) credentials: Option<UrlCredentials>,
}

impl NatsServers {
    /// Whether any URL is `tls://`.
    pub(crate) fn any_tls(&self) -> bool {
        self.addrs.iter().any(ServerAddr::tls_required)
    }
}

impl fmt::Display for NatsServers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, addr) in self.addrs.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(addr.as_url_str())?;
        }
        Ok(())
    }
}

/// Why `--nats-url` cannot be used. The messages name a URL by its position
/// and never quote it: it may hold a password.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NatsUrlError {
    #[error("URL {0} is empty")]
    Empty(usize),
    #[error("URL {position} is not a URL: {reason}")]
    Invalid { position: usize, reason: String },
    #[error("URL {position} has the scheme {scheme:?}: use nats:// or tls://")]
    Scheme { position: usize, scheme: String },
    #[error("URL {0} has no host")]
    NoHost(usize),
    #[error("URL {0} has a password but no user")]
    PasswordWithoutUser(usize),
    #[error(
        "URL {0} carries other credentials than URL 1 that has some: a client logs in with one \
         set"
    )]
    MixedCredentials(usize),
}

impl NatsUrl {
    /// Parses the comma-separated URLs. A URL without a scheme is `nats://`
    /// (as async-nats reads it); the port defaults to 4222.
    pub(crate) fn servers(&self) -> Result<NatsServers, NatsUrlError> {
        let mut addrs = Vec::new();
        let mut credentials: Option<UrlCredentials> = None;
        for (i, raw) in self.0.expose().split(',').enumerate() {
            let position = i + 1;
            let (addr, found) = parse_one(raw.trim(), position)?;
            if let Some(found) = found {
                match &credentials {
                    None => credentials = Some(found),
                    Some(known) if *known == found => {}
                    Some(_) => return Err(NatsUrlError::MixedCredentials(position)),
                }
            }
            addrs.push(addr);
        }
        Ok(NatsServers { addrs, credentials })
    }
}

fn parse_one(
    raw: &str,
    position: usize,
) -> Result<(ServerAddr, Option<UrlCredentials>), NatsUrlError> {
    if raw.is_empty() {
        return Err(NatsUrlError::Empty(position));
    }
    let with_scheme;
    let raw = if raw.contains("://") {
        raw
    } else {
        with_scheme = format!("nats://{raw}");
        &with_scheme
    };
    // `url`'s errors describe the problem ("invalid port number") without
    // quoting the input.
    let mut url = Url::parse(raw).map_err(|e| NatsUrlError::Invalid {
        position,
        reason: e.to_string(),
    })?;
    if !matches!(url.scheme(), "nats" | "tls") {
        return Err(NatsUrlError::Scheme {
            position,
            scheme: url.scheme().to_owned(),
        });
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(NatsUrlError::NoHost(position));
    }
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let user = decode(url.username());
    let password = url.password().map(decode);
    // NATS's convention (nats.go, the nats CLI): a user alone is a token.
    let credentials = match (user.is_empty(), password) {
        (true, None) => None,
        (true, Some(_)) => return Err(NatsUrlError::PasswordWithoutUser(position)),
        (false, None) => Some(UrlCredentials::Token(Secret::new(user))),
        (false, Some(password)) => Some(UrlCredentials::UserPassword {
            user,
            password: Secret::new(password),
        }),
    };
    // A URL with a host always accepts these.
    let _ = url.set_password(None);
    let _ = url.set_username("");
    let addr = ServerAddr::from_url(url).map_err(|e| NatsUrlError::Invalid {
        position,
        reason: e.to_string(),
    })?;
    Ok((addr, credentials))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(raw: &str) -> Result<NatsServers, NatsUrlError> {
        NatsUrl::from(raw.to_owned()).servers()
    }

    #[test]
    fn bare_urls_pass_through() {
        let s = servers("nats://127.0.0.1:4222").unwrap();
        assert_eq!(s.to_string(), "nats://127.0.0.1:4222");
        assert_eq!(s.credentials, None);
        assert!(!s.any_tls());
        let s = servers("tls://nats.example.com:4443, nats-2:4222").unwrap();
        assert_eq!(
            s.to_string(),
            "tls://nats.example.com:4443,nats://nats-2:4222"
        );
        assert!(s.any_tls());
        assert_eq!(s.addrs[1].port(), 4222);
        assert_eq!(servers("localhost").unwrap().addrs[0].port(), 4222);
    }

    #[test]
    fn credentials_are_taken_out_of_every_url() {
        let s =
            servers("nats://wsgate:p%40ss%3Aword@a:4222,nats://wsgate:p%40ss%3Aword@b").unwrap();
        assert_eq!(s.to_string(), "nats://a:4222,nats://b");
        assert_eq!(
            s.credentials,
            Some(UrlCredentials::UserPassword {
                user: "wsgate".into(),
                password: Secret::new("p@ss:word".into()),
            })
        );
        // Credentials on one URL apply to all: the client has one login.
        let s = servers("tls://s3cr3t-token@a,tls://b").unwrap();
        assert_eq!(s.to_string(), "tls://a,tls://b");
        assert_eq!(
            s.credentials,
            Some(UrlCredentials::Token(Secret::new("s3cr3t-token".into())))
        );
    }

    #[test]
    fn nothing_secret_is_printed() {
        let url = NatsUrl::from("nats://wsgate:hunter2@a:4222".to_owned());
        let printed = format!(
            "{url:?} {:?} {}",
            url.servers().unwrap(),
            url.servers().unwrap()
        );
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("nats://a:4222"), "{printed}");
        let token = format!("{:?}", servers("nats://t0ken@a").unwrap());
        assert!(!token.contains("t0ken"), "{token}");
        // Errors name URLs by position, never quote them.
        for bad in [
            "nats://u:hunter2@a:99999",
            "http://u:hunter2@a",
            "nats://:hunter2@a",
            "nats://u:hunter2@a,nats://v:hunter2@b",
        ] {
            let e = servers(bad).unwrap_err().to_string();
            assert!(!e.contains("hunter2"), "{bad}: {e}");
        }
    }

    #[test]
    fn nonsense_is_refused_with_a_reason() {
        for (raw, expected) in [
            ("nats://a,", NatsUrlError::Empty(2)),
            (
                "nats://a:99999",
                NatsUrlError::Invalid {
                    position: 1,
                    reason: "invalid port number".into(),
                },
            ),
            (
                "https://a",
                NatsUrlError::Scheme {
                    position: 1,
                    scheme: "https".into(),
                },
            ),
            ("nats://", NatsUrlError::NoHost(1)),
            ("nats://:pw@a", NatsUrlError::PasswordWithoutUser(1)),
            (
                "nats://u:p@a,nats://u:q@b",
                NatsUrlError::MixedCredentials(2),
            ),
        ] {
            assert_eq!(servers(raw).unwrap_err(), expected, "{raw}");
        }
        assert_eq!(
            "  ".parse::<NatsUrl>().unwrap_err(),
            "must not be empty".to_owned()
        );
    }
}
