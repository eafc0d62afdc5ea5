//! Configuration: one struct, from flags and `WSGATE_*` environment variables.
//!
//! Telemetry is configured separately, by the OpenTelemetry SDK's own `OTEL_*`
//! variables (see `telemetry`), so existing deployments carry over unchanged.
//! The README's configuration table mirrors this file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};

use crate::admission::Origin;
use crate::broker::{ClientCert, NatsAccess, NatsUrl, NatsUrlError};
use crate::outbox::SlowConsumerPolicy;
pub use crate::secret::Secret;
use crate::telemetry::LogFormat;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "wsgate",
    version,
    about = "An OpenTelemetry-first WebSocket gateway (the load generator is `wsgate-bench`)"
)]
pub struct Cli {
    #[command(flatten)]
    pub serve: Config,
}

/// How the gateway runs.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on for WebSocket and HTTP.
    #[arg(long, env = "WSGATE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// This node's name: the `service.instance.id` of its telemetry.
    /// Defaults to `<hostname>-<pid>`.
    #[arg(long, env = "WSGATE_NODE_ID", value_parser = node_id)]
    pub node_id: Option<String>,

    /// NATS server(s) to share rooms with other nodes, e.g. `nats://127.0.0.1:4222`
    /// (comma-separated for a cluster). `tls://` requires TLS (see --nats-ca);
    /// `nats://user:pass@host` or `nats://token@host` log in (prefer the
    /// environment variable then: command lines are visible to `ps`). Without
    /// it, the embedded in-memory broker serves this node alone.
    #[arg(long, env = "WSGATE_NATS_URL", hide_env_values = true, value_parser = nats_url)]
    pub nats_url: Option<NatsUrl>,

    /// First tokens of every NATS subject wsgate uses (`<prefix>.<tenant>.room.<room>`), so
    /// several deployments can share one NATS.
    #[arg(long, env = "WSGATE_NATS_SUBJECT_PREFIX", default_value = "wsgate", value_parser = subject_prefix)]
    pub nats_subject_prefix: String,

    /// PEM file of the CA(s) that sign the NATS servers' certificates, to
    /// verify them with instead of the system's CAs. Makes TLS required.
    #[arg(long, env = "WSGATE_NATS_CA")]
    pub nats_ca: Option<PathBuf>,

    /// PEM client certificate (then any intermediates) for NATS servers that
    /// verify clients; needs --nats-key. Makes TLS required.
    #[arg(long, env = "WSGATE_NATS_CERT")]
    pub nats_cert: Option<PathBuf>,

    /// PEM private key of --nats-cert.
    #[arg(long, env = "WSGATE_NATS_KEY")]
    pub nats_key: Option<PathBuf>,

    /// NATS credentials file (a user JWT and its nkey seed, as `nsc` and the
    /// `nats` CLI write them), read at start-up.
    #[arg(long, env = "WSGATE_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,

    /// Messages the NATS client holds for one room's subscription while the
    /// node delivers the ones before; further messages are dropped and counted
    /// (`error_type="slow_consumer"`). With `--max-message-bytes` it bounds
    /// what one room can hold in memory (their product may be at most 1 GiB);
    /// messages published straight to NATS are bounded by its max_payload.
    #[arg(long, env = "WSGATE_NATS_SUBSCRIPTION_BUFFER", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub nats_subscription_buffer: u32,

    /// How long after start-up a subscribe or publish waits for the first
    /// connection to NATS instead of failing with `broker_unavailable`; 0 =
    /// never wait. After the first connection, a disconnected node refuses at
    /// once.
    #[arg(long, env = "WSGATE_BROKER_CONNECT_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub broker_connect_timeout: Duration,

    /// Warnings that can repeat (a failed subscribe, a dropped message from
    /// NATS) are logged at most once per interval and kind, with the count of
    /// those left out; all are counted in `wsgate_warnings_total`.
    #[arg(long, env = "WSGATE_WARNING_LOG_INTERVAL", default_value = "10s", value_parser = duration)]
    pub warning_log_interval: Duration,

    /// Most WebSocket connections served at once; further upgrades get 503.
    #[arg(long, env = "WSGATE_MAX_CONNECTIONS", default_value_t = 100_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Rooms with local subscribers this node may hold at once; a subscribe
    /// that would create one more gets `too_many_rooms`.
    #[arg(long, env = "WSGATE_MAX_ROOMS", default_value_t = 100_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_rooms: u32,

    /// Messages kept per room for clients that resume with `since` and for
    /// `history` requests; 0 keeps no history. In this node's memory, or with
    /// --nats-url in a JetStream stream every node shares.
    #[arg(long, env = "WSGATE_HISTORY_SIZE", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub history_size: u32,

    /// How long a room's messages are kept in its history.
    #[arg(long, env = "WSGATE_HISTORY_TTL", default_value = "5m", value_parser = duration)]
    pub history_ttl: Duration,

    /// Bytes the node's history may hold in all; past it, the oldest messages
    /// of the largest rooms go first.
    #[arg(long, env = "WSGATE_HISTORY_MAX_BYTES", default_value_t = 256 << 20,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub history_max_bytes: u64,

    /// How long a room's offset and epoch are remembered after its last
    /// message or local subscriber, so that a client away for longer than
    /// --history-ttl that missed nothing still resumes.
    #[arg(long, env = "WSGATE_HISTORY_META_TTL", default_value = "1h", value_parser = duration)]
    pub history_meta_ttl: Duration,

    /// Largest client frame or message, in bytes; larger ones close the
    /// connection with 1009.
    #[arg(long, env = "WSGATE_MAX_MESSAGE_BYTES", default_value_t = 65_536,
          value_parser = clap::value_parser!(u32).range(256..=(64 << 20)))]
    pub max_message_bytes: u32,

    /// Frames queued for one connection before the slow-consumer policy acts.
    #[arg(long, env = "WSGATE_SEND_QUEUE", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub send_queue: u32,

    /// Bytes queued for one connection, counted until written to its socket,
    /// before the slow-consumer policy acts. At least --max-message-bytes.
    #[arg(long, env = "WSGATE_SEND_QUEUE_BYTES", default_value_t = 1 << 20,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub send_queue_bytes: u32,

    /// What to do with a connection whose send queue is full.
    #[arg(long, env = "WSGATE_SLOW_CONSUMER", value_enum, default_value_t = SlowConsumerPolicy::Disconnect)]
    pub slow_consumer: SlowConsumerPolicy,

    /// Interval between the server's WebSocket pings.
    #[arg(long, env = "WSGATE_HEARTBEAT_INTERVAL", default_value = "25s", value_parser = duration)]
    pub heartbeat_interval: Duration,

    /// Close a connection that sent nothing (not even a pong) for this long.
    #[arg(long, env = "WSGATE_HEARTBEAT_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub heartbeat_timeout: Duration,

    /// Close a connection whose socket accepted no bytes for this long while
    /// the server had frames to write (the client stopped reading).
    #[arg(long, env = "WSGATE_WRITE_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub write_timeout: Duration,

    /// How long a client may take to send a request's headers (the WebSocket
    /// handshake included); also how long an idle HTTP keep-alive connection
    /// stays open. Slow or stalled clients are disconnected.
    #[arg(long, env = "WSGATE_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub handshake_timeout: Duration,

    /// On SIGTERM/SIGINT, how long connections may take to close before the
    /// process stops waiting for them.
    #[arg(long, env = "WSGATE_SHUTDOWN_GRACE", default_value = "10s", value_parser = duration)]
    pub shutdown_grace: Duration,

    /// Jaeger UI base URL, e.g. `http://localhost:16686`: the demo page links
    /// each message's trace id there.
    #[arg(long, env = "WSGATE_JAEGER_UI_URL", value_parser = http_url)]
    pub jaeger_ui_url: Option<String>,

    /// OTLP/HTTP endpoint the demo page's browser exports its spans to, e.g.
    /// `http://localhost:4318` (the page posts to `<it>/v1/traces`). The
    /// collector must allow the page's origin (CORS). Unset: the page traces
    /// but exports nothing.
    #[arg(long, env = "WSGATE_DEMO_OTLP_ENDPOINT", value_parser = http_url)]
    pub demo_otlp_endpoint: Option<String>,

    /// HS256 secret: enables JSON Web Tokens on /ws. Prefer the environment
    /// variable or --jwt-secret-file: command lines are visible to `ps`.
    #[arg(long, env = "WSGATE_JWT_SECRET", hide_env_values = true, value_parser = secret)]
    pub jwt_secret: Option<Secret>,

    /// File holding the HS256 secret (trailing newline ignored).
    #[arg(long, env = "WSGATE_JWT_SECRET_FILE", conflicts_with = "jwt_secret")]
    pub jwt_secret_file: Option<PathBuf>,

    /// PEM public key (RSA for RS256, P-256 EC for ES256): enables tokens on /ws.
    #[arg(long, env = "WSGATE_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,

    /// Required `aud` claim: tokens issued for other applications are refused.
    #[arg(long, env = "WSGATE_JWT_AUDIENCE", value_parser = non_empty)]
    pub jwt_audience: Option<String>,

    /// Required `iss` claim: tokens from other issuers are refused.
    #[arg(long, env = "WSGATE_JWT_ISSUER", value_parser = non_empty)]
    pub jwt_issuer: Option<String>,

    /// Browser origins allowed to open /ws, comma-separated full origins such
    /// as `https://app.example.com`, compared as (scheme, host, port). When set,
    /// the `Host` header no longer vouches for the gateway's own origin: add it
    /// here or with --public-url.
    #[arg(long, env = "WSGATE_ALLOWED_ORIGINS", value_delimiter = ',', value_parser = origin)]
    pub allowed_origins: Vec<Origin>,

    /// Key that backends must present (`Authorization: Bearer <key>`) to use
    /// POST /api/publish. With tokens enabled and no key, the API is refused.
    #[arg(long, env = "WSGATE_API_KEY", hide_env_values = true, value_parser = secret)]
    pub api_key: Option<Secret>,

    /// Frames per second one connection may send (burst: one second's worth);
    /// 0 = unlimited.
    #[arg(long, env = "WSGATE_MAX_MSGS_PER_SEC", default_value_t = 0)]
    pub max_msgs_per_sec: u32,

    /// WebSocket connections per client IP address; 0 = unlimited. Behind a
    /// proxy every client shares the proxy's address: raise it or leave it off.
    #[arg(long, env = "WSGATE_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: u32,

    /// Rooms one connection may be subscribed to at once.
    #[arg(long, env = "WSGATE_MAX_ROOMS_PER_CONNECTION", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_rooms_per_connection: u32,

    /// WebSocket connections per user (a token's `sub`, within its tenant);
    /// 0 = unlimited. Further upgrades get 429.
    #[arg(long, env = "WSGATE_MAX_CONNECTIONS_PER_USER", default_value_t = 0)]
    pub max_connections_per_user: u32,

    /// How long an HTTP request's body may take to arrive once its headers
    /// have (POST /api/publish); a slower request gets 408.
    #[arg(long, env = "WSGATE_REQUEST_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub request_timeout: Duration,

    /// POST /api/publish requests handled at once; further ones get 503 with
    /// `Retry-After`.
    #[arg(long, env = "WSGATE_MAX_API_CONCURRENCY", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_api_concurrency: u32,

    /// The URL browsers reach this gateway at, e.g. `https://chat.example.com`:
    /// its origin is allowed, for the demo page. With it or --allowed-origins,
    /// the `Host` header no longer makes an origin acceptable.
    #[arg(long, env = "WSGATE_PUBLIC_URL", value_parser = public_url)]
    pub public_url: Option<Origin>,

    /// Address for /metrics, /healthz and /readyz, e.g. `127.0.0.1:9091`. When
    /// set, /metrics is served only there (404 on --listen), so it can stay
    /// internal.
    #[arg(long, env = "WSGATE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// Connections the kernel may queue before wsgate accepts them, so a
    /// reconnect storm waits instead of failing. The kernel caps it at
    /// `net.core.somaxconn` (4096 by default on Linux 5.4 and later).
    #[arg(long, env = "WSGATE_LISTEN_BACKLOG", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..=65_535))]
    pub listen_backlog: u32,

    /// Log line format.
    #[arg(long, env = "WSGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// A configuration that parsed but does not make sense.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "--heartbeat-timeout ({timeout:?}) must be longer than --heartbeat-interval ({interval:?})"
    )]
    HeartbeatTimeout {
        timeout: Duration,
        interval: Duration,
    },
    #[error("--{flag} must be greater than zero")]
    Zero { flag: &'static str },
    #[error(
        "--send-queue-bytes ({queue}) must hold at least one --max-message-bytes ({message}) message"
    )]
    QueueBytes { queue: u32, message: u32 },
    #[error(
        "--nats-subscription-buffer ({buffer}) × --max-message-bytes ({bytes}) must be at most \
         1 GiB: it is what one room may hold in memory"
    )]
    RoomBuffer { buffer: u32, bytes: u32 },
    #[error("--admin-listen ({0}) must differ from --listen")]
    AdminListen(SocketAddr),
    #[error("--nats-url: {0}")]
    NatsUrl(#[from] NatsUrlError),
    #[error("--{0} is for NATS: it needs --nats-url")]
    NatsFlagWithoutUrl(&'static str),
    #[error("--{given} needs --{missing}: a client certificate goes with its key")]
    NatsCertKey {
        given: &'static str,
        missing: &'static str,
    },
    #[error("--nats-creds and credentials in --nats-url are two logins to NATS: give one of them")]
    NatsTwoLogins,
}

/// The most one room's NATS subscription buffer may hold, in bytes.
const MAX_ROOM_BUFFER_BYTES: u64 = 1 << 30;

impl Config {
    /// Checks the rules that span several flags.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (flag, value) in [
            ("heartbeat-interval", self.heartbeat_interval),
            ("heartbeat-timeout", self.heartbeat_timeout),
            ("handshake-timeout", self.handshake_timeout),
            ("write-timeout", self.write_timeout),
            ("warning-log-interval", self.warning_log_interval),
            ("request-timeout", self.request_timeout),
            ("history-ttl", self.history_ttl),
            ("history-meta-ttl", self.history_meta_ttl),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Zero { flag });
            }
        }
        if self.send_queue_bytes < self.max_message_bytes {
            return Err(ConfigError::QueueBytes {
                queue: self.send_queue_bytes,
                message: self.max_message_bytes,
            });
        }
        if u64::from(self.nats_subscription_buffer) * u64::from(self.max_message_bytes)
            > MAX_ROOM_BUFFER_BYTES
        {
            return Err(ConfigError::RoomBuffer {
                buffer: self.nats_subscription_buffer,
                bytes: self.max_message_bytes,
            });
        }
        if self.heartbeat_timeout <= self.heartbeat_interval {
            return Err(ConfigError::HeartbeatTimeout {
                timeout: self.heartbeat_timeout,
                interval: self.heartbeat_interval,
            });
        }
        if let Some(admin) = self.admin_listen
            && admin == self.listen
            && admin.port() != 0
        {
            return Err(ConfigError::AdminListen(admin));
        }
        self.nats_access().map(drop)
    }

    /// The NATS settings (`--nats-url` and the TLS and credential flags),
    /// checked; `None` without `--nats-url`.
    pub fn nats_access(&self) -> Result<Option<NatsAccess>, ConfigError> {
        let Some(url) = &self.nats_url else {
            for (flag, given) in [
                ("nats-ca", self.nats_ca.is_some()),
                ("nats-cert", self.nats_cert.is_some()),
                ("nats-key", self.nats_key.is_some()),
                ("nats-creds", self.nats_creds.is_some()),
            ] {
                if given {
                    return Err(ConfigError::NatsFlagWithoutUrl(flag));
                }
            }
            return Ok(None);
        };
        let servers = url.servers()?;
        let client_cert = match (&self.nats_cert, &self.nats_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(ClientCert {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (Some(_), None) => {
                return Err(ConfigError::NatsCertKey {
                    given: "nats-cert",
                    missing: "nats-key",
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::NatsCertKey {
                    given: "nats-key",
                    missing: "nats-cert",
                });
            }
        };
        if self.nats_creds.is_some() && servers.credentials.is_some() {
            return Err(ConfigError::NatsTwoLogins);
        }
        Ok(Some(NatsAccess {
            servers,
            ca: self.nats_ca.clone(),
            client_cert,
            creds: self.nats_creds.clone(),
        }))
    }

    /// The node id, defaulted to `<hostname>-<pid>`.
    pub fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            let host = gethostname::gethostname();
            let host = host.to_string_lossy();
            let host = if host.is_empty() { "wsgate" } else { &host };
            format!("{host}-{}", std::process::id())
        })
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 25s, 500ms, 2m)"))
}

fn secret(s: &str) -> Result<Secret, String> {
    if s.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(Secret::new(s.to_owned()))
    }
}

fn origin(s: &str) -> Result<Origin, String> {
    Origin::parse(s).map_err(|e| e.to_string())
}

fn public_url(s: &str) -> Result<Origin, String> {
    Origin::of_url(s).map_err(|e| e.to_string())
}

fn http_url(s: &str) -> Result<String, String> {
    let scheme_ok = s.starts_with("http://") || s.starts_with("https://");
    let chars_ok = s
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'<' | b'>' | b'\\' | b'`'));
    if scheme_ok && chars_ok {
        Ok(s.to_owned())
    } else {
        Err("must be an http:// or https:// URL without quotes or angle brackets".into())
    }
}

fn node_id(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 128 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be 1-128 printable ASCII characters without spaces".into());
    }
    Ok(s.to_owned())
}

fn subject_prefix(s: &str) -> Result<String, String> {
    let token_ok = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if s.split('.').all(token_ok) {
        Ok(s.to_owned())
    } else {
        Err("must be dot-separated tokens of A-Z a-z 0-9 _ -".into())
    }
}

/// Only checks that there is something: the URLs are parsed by `validate`,
/// whose errors never quote them (clap's would).
fn nats_url(s: &str) -> Result<NatsUrl, String> {
    s.parse()
}

fn non_empty(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(s.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["wsgate"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        cli.serve.validate().map_err(|e| e.to_string())?;
        Ok(cli.serve)
    }

    #[test]
    fn defaults_match_the_documented_table() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.max_connections, 100_000);
        assert_eq!(c.max_message_bytes, 65_536);
        assert_eq!(c.send_queue, 1024);
        assert_eq!(c.send_queue_bytes, 1 << 20);
        assert_eq!(c.write_timeout, Duration::from_secs(10));
        assert_eq!(c.max_rooms, 100_000);
        assert_eq!(c.history_size, 0);
        assert_eq!(c.history_ttl, Duration::from_secs(300));
        assert_eq!(c.history_max_bytes, 256 << 20);
        assert_eq!(c.history_meta_ttl, Duration::from_secs(3600));
        assert_eq!(c.slow_consumer, SlowConsumerPolicy::Disconnect);
        assert_eq!(c.heartbeat_interval, Duration::from_secs(25));
        assert_eq!(c.heartbeat_timeout, Duration::from_secs(60));
        assert_eq!(c.shutdown_grace, Duration::from_secs(10));
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.nats_url, None);
        assert_eq!(c.nats_subject_prefix, "wsgate");
        assert_eq!(c.nats_subscription_buffer, 1024);
        assert_eq!(c.broker_connect_timeout, Duration::from_secs(5));
        assert_eq!(c.warning_log_interval, Duration::from_secs(10));
        assert_eq!(c.max_connections_per_user, 0);
        assert_eq!(c.request_timeout, Duration::from_secs(10));
        assert_eq!(c.max_api_concurrency, 1024);
        assert_eq!(c.public_url, None);
        assert_eq!(c.admin_listen, None);
        assert_eq!(c.listen_backlog, 4096);
    }

    #[test]
    fn nats_flags() {
        let c = parse(&[
            "--nats-subscription-buffer=16",
            "--broker-connect-timeout=0s",
            "--warning-log-interval=250ms",
        ])
        .unwrap();
        assert_eq!(c.nats_subscription_buffer, 16);
        assert_eq!(c.broker_connect_timeout, Duration::ZERO, "0 = never wait");
        assert_eq!(c.warning_log_interval, Duration::from_millis(250));
        // The largest buffer the default message size allows: 1 GiB.
        parse(&["--nats-subscription-buffer=16384"]).unwrap();
        parse(&[
            "--nats-subscription-buffer=16",
            "--max-message-bytes=67108864",
            "--send-queue-bytes=67108864",
        ])
        .unwrap();
    }

    #[test]
    fn hardening_flags_parse() {
        let c = parse(&[
            "--max-connections-per-user=3",
            "--request-timeout=2s",
            "--max-api-concurrency=8",
            "--public-url=https://chat.example.com/app/",
            "--admin-listen=127.0.0.1:9091",
            "--listen-backlog=1024",
        ])
        .unwrap();
        assert_eq!(c.max_connections_per_user, 3);
        assert_eq!(c.request_timeout, Duration::from_secs(2));
        assert_eq!(c.max_api_concurrency, 8);
        assert_eq!(
            c.public_url.map(|o| o.to_string()).as_deref(),
            Some("https://chat.example.com")
        );
        assert_eq!(c.admin_listen, Some("127.0.0.1:9091".parse().unwrap()));
        assert_eq!(c.listen_backlog, 1024);
        // Port 0 on both: two ephemeral ports, as tests use.
        parse(&["--listen=127.0.0.1:0", "--admin-listen=127.0.0.1:0"]).unwrap();
    }

    #[test]
    fn flags_parse() {
        let c = parse(&[
            "--listen=0.0.0.0:9000",
            "--node-id=n1",
            "--max-connections=5",
            "--slow-consumer=drop",
            "--heartbeat-interval=500ms",
            "--heartbeat-timeout=2s",
            "--log-format=json",
        ])
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.node_id(), "n1");
        assert_eq!(c.max_connections, 5);
        assert_eq!(c.slow_consumer, SlowConsumerPolicy::Drop);
        assert_eq!(c.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn nonsense_is_refused_with_a_reason() {
        for (args, needle) in [
            (&["--listen=nowhere"][..], "invalid socket address"),
            (&["--max-connections=0"], "--max-connections"),
            (&["--max-message-bytes=10"], "--max-message-bytes"),
            (&["--heartbeat-interval=soon"], "examples: 25s"),
            (
                &["--heartbeat-interval=30s", "--heartbeat-timeout=30s"],
                "must be longer",
            ),
            (&["--heartbeat-interval=0s"], "greater than zero"),
            (
                &["--slow-consumer=ignore"],
                "possible values: drop, disconnect",
            ),
            (&["--node-id= "], "printable ASCII"),
            (&["--node-id=a\nb"], "printable ASCII"),
            (&["--nats-url="], "must not be empty"),
            (
                &["--jaeger-ui-url=javascript:alert(1)"],
                "http:// or https://",
            ),
            (&["--jaeger-ui-url=http://x/\"</script>"], "without quotes"),
            (
                &["--demo-otlp-endpoint=http://x/\"onload=\"alert(1)"],
                "without quotes",
            ),
            (
                &["--demo-otlp-endpoint=http://x/><script>"],
                "angle brackets",
            ),
            (&["--demo-otlp-endpoint=file:///etc"], "http:// or https://"),
            (&["--allowed-origins=app.example.com"], "is not an origin"),
            (
                &["--allowed-origins=https://a.example/path"],
                "is not an origin",
            ),
            (
                &["--allowed-origins=http://host:8080:80"],
                "invalid port number",
            ),
            (&["--public-url=chat.example.com"], "is not an origin"),
            (&["--request-timeout=0s"], "--request-timeout"),
            (&["--max-api-concurrency=0"], "--max-api-concurrency"),
            (&["--listen-backlog=0"], "--listen-backlog"),
            (
                &["--listen=127.0.0.1:9000", "--admin-listen=127.0.0.1:9000"],
                "must differ from --listen",
            ),
            (&["--jwt-secret="], "must not be empty"),
            (
                &["--jwt-secret=x", "--jwt-secret-file=/tmp/x"],
                "cannot be used with",
            ),
            (
                &["--max-rooms-per-connection=0"],
                "--max-rooms-per-connection",
            ),
            (&["--nats-subject-prefix=a..b"], "dot-separated"),
            (&["--nats-subject-prefix=a.*"], "dot-separated"),
            (
                &["--send-queue-bytes=1000", "--max-message-bytes=2000"],
                "must hold at least one --max-message-bytes",
            ),
            (&["--write-timeout=0s"], "greater than zero"),
            (&["--max-rooms=0"], "--max-rooms"),
            (&["--jwt-audience="], "must not be empty"),
            (
                &["--nats-subscription-buffer=0"],
                "--nats-subscription-buffer",
            ),
            (
                &["--nats-subscription-buffer=16385"],
                "must be at most 1 GiB",
            ),
            (
                &[
                    "--nats-subscription-buffer=17",
                    "--max-message-bytes=67108864",
                    "--send-queue-bytes=67108864",
                ],
                "must be at most 1 GiB",
            ),
            (&["--broker-connect-timeout=soon"], "examples: 25s"),
            (
                &["--nats-url=nats://a:99999"],
                "--nats-url: URL 1 is not a URL",
            ),
            (&["--nats-url=http://a"], "use nats:// or tls://"),
            (&["--nats-url=nats://a,,nats://b"], "URL 2 is empty"),
            (
                &["--nats-ca=/ca.pem"],
                "--nats-ca is for NATS: it needs --nats-url",
            ),
            (&["--nats-creds=/x.creds"], "--nats-creds is for NATS"),
            (
                &["--nats-url=tls://a", "--nats-cert=/c.pem"],
                "--nats-cert needs --nats-key",
            ),
            (
                &["--nats-url=tls://a", "--nats-key=/k.pem"],
                "--nats-key needs --nats-cert",
            ),
            (
                &["--nats-url=nats://u:p@a", "--nats-creds=/x.creds"],
                "two logins",
            ),
            (&["--warning-log-interval=0s"], "greater than zero"),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn nats_tls_and_login_flags() {
        let c = parse(&[
            "--nats-url=tls://wsgate:hunter2@n1:4443,tls://n2:4443",
            "--nats-ca=/etc/wsgate/ca.pem",
            "--nats-cert=/etc/wsgate/cert.pem",
            "--nats-key=/etc/wsgate/key.pem",
        ])
        .unwrap();
        let access = c.nats_access().unwrap().expect("NATS is configured");
        assert_eq!(access.servers.to_string(), "tls://n1:4443,tls://n2:4443");
        assert!(access.tls());
        assert_eq!(access.ca, Some(PathBuf::from("/etc/wsgate/ca.pem")));
        assert_eq!(
            access.client_cert,
            Some(ClientCert {
                cert: "/etc/wsgate/cert.pem".into(),
                key: "/etc/wsgate/key.pem".into(),
            })
        );
        // The password is in no Debug output, the configuration's included.
        let printed = format!("{c:?} {access:?}");
        assert!(!printed.contains("hunter2"), "{printed}");

        let c = parse(&[
            "--nats-url=nats://n1",
            "--nats-creds=/etc/wsgate/node.creds",
        ])
        .unwrap();
        let access = c.nats_access().unwrap().expect("NATS is configured");
        assert_eq!(access.creds, Some(PathBuf::from("/etc/wsgate/node.creds")));
        assert!(!access.tls(), "no TLS flag, no tls:// URL");
        assert!(parse(&[]).unwrap().nats_access().unwrap().is_none());
    }

    #[test]
    fn security_flags() {
        let c = parse(&[
            "--jwt-secret=s3cret",
            "--api-key=k3y",
            "--allowed-origins=https://a.example,https://b.example/",
            "--max-msgs-per-sec=50",
            "--max-connections-per-ip=10",
        ])
        .unwrap();
        let origins: Vec<String> = c.allowed_origins.iter().map(|o| o.to_string()).collect();
        assert_eq!(origins, ["https://a.example", "https://b.example"]);
        assert_eq!(c.max_msgs_per_sec, 50);
        assert_eq!(c.max_rooms_per_connection, 256);
        let printed = format!("{c:?}");
        assert!(
            !printed.contains("s3cret") && !printed.contains("k3y"),
            "{printed}"
        );
    }

    #[test]
    fn default_node_id_is_host_and_pid() {
        let c = parse(&[]).unwrap();
        assert!(c.node_id().ends_with(&format!("-{}", std::process::id())));
    }
}
