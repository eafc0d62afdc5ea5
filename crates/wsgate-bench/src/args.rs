//! `wsgate-bench` flags, and the checked [`Plan`] they turn into.

use std::time::Duration;

use clap::Parser;
use tokio_tungstenite::tungstenite::http::Uri;

/// The largest `--payload` accepted.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// The `wsgate-bench` command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "wsgate-bench",
    version,
    about = "Load-generate against running wsgate gateways: loss, duplicates, throughput, latency"
)]
pub struct BenchArgs {
    /// Gateway WebSocket URL. Repeat it or separate with commas to spread the
    /// connections round-robin over several nodes.
    #[arg(
        long = "url",
        value_delimiter = ',',
        default_value = "ws://127.0.0.1:8080/ws"
    )]
    pub urls: Vec<String>,

    /// WebSocket connections to open; every one subscribes to a room.
    #[arg(long, short = 'c', default_value_t = 100)]
    pub connections: usize,

    /// Rooms; connection i joins room i mod ROOMS.
    #[arg(long, short = 'r', default_value_t = 1)]
    pub rooms: usize,

    /// How many connections publish: the first PUBLISHERS of them.
    #[arg(long, short = 'p', default_value_t = 1)]
    pub publishers: usize,

    /// Messages each publisher sends.
    #[arg(long, short = 'm', default_value_t = 1000)]
    pub messages: u64,

    /// Closed loop: at most this many un-acked publishes per publisher [default: 8].
    #[arg(long, short = 'w', conflicts_with = "rate")]
    pub window: Option<u32>,

    /// Open loop: total messages per second across all publishers, sent on schedule
    /// whatever the acks; latency then counts from the scheduled time.
    #[arg(long, value_name = "MSGS_PER_SEC")]
    pub rate: Option<f64>,

    /// Bytes of padding in each message's data (the frame is ~110 bytes more).
    #[arg(long, short = 's', default_value_t = 64)]
    pub payload: usize,

    /// Print one JSON object instead of the table (and no progress bar).
    #[arg(long)]
    pub json: bool,

    /// Upper bound on the whole run: connecting, publishing and settling.
    #[arg(long, default_value = "120s", value_parser = duration)]
    pub timeout: Duration,

    /// After the last publisher finished, how long to wait for deliveries still
    /// in flight.
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub settle: Duration,

    /// A publisher that hears no ack (nor error) for this long gives up: the
    /// server dropped its acks, or stopped answering.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub ack_timeout: Duration,

    /// New connections per second while ramping up (connects overlap, at most
    /// 1,000 at once). 0: all at once, without pacing or a cap on connects in
    /// flight, as clients reconnect after a node restarts.
    #[arg(long, default_value_t = 2000)]
    pub connect_rate: u32,

    /// After the report, keep every connection open, subscribed and idle this long
    /// (for memory measurements). SIGINT or SIGTERM ends it early.
    #[arg(long, default_value = "0s", value_parser = duration)]
    pub hold: Duration,

    /// While the publishers run, --churners extra connections join and leave
    /// room 0 this many times a second in all (each join is followed by a
    /// leave), to show what membership churn costs the fan-out. Churners are
    /// not receivers: their deliveries are not tracked.
    #[arg(long, value_name = "JOINS_PER_SEC")]
    pub churn: Option<f64>,

    /// Connections that share the --churn work.
    #[arg(long, default_value_t = 50, requires = "churn")]
    pub churners: usize,

    /// Every receiver (not the publishers) drops its connection at random,
    /// this long apart on average (exponentially distributed), reconnects and
    /// resumes its room with `since` (the last offset and epoch it saw). With
    /// history on the gateway nothing is lost nor duplicated; without, the
    /// report shows what reconnecting clients miss.
    #[arg(long, value_name = "MEAN", value_parser = duration)]
    pub drop_every: Option<Duration>,

    /// With --drop-every: how long a dropped receiver stays away before it
    /// reconnects (a phone between two networks).
    #[arg(long, default_value = "0s", value_parser = duration, requires = "drop_every")]
    pub drop_for: Duration,

    /// Instead of a measured run, send a traffic mix until --duration or
    /// SIGINT/SIGTERM, then print what was sent and received. `dashboards`:
    /// --connections steady clients that publish, ping, resubscribe and send
    /// invalid frames of every kind (binary included), short-lived connections
    /// closed with 1000 or, after an oversize frame, 1009, and valid and
    /// invalid POST /api/publish: data for every series the dashboards draw.
    #[arg(long, value_enum)]
    pub mix: Option<Mix>,

    /// With --mix: how long to run; 0s runs until SIGINT or SIGTERM.
    #[arg(long, default_value = "0s", value_parser = duration, requires = "mix")]
    pub duration: Duration,
}

/// The traffic mixes of `--mix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mix {
    /// Errors and normal traffic for the dashboards and alert rules.
    Dashboards,
}

/// Membership churn during a run (`--churn`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChurnPlan {
    /// Joins per second across all churners, each followed by a leave.
    pub joins_per_sec: f64,
    pub churners: usize,
}

/// How publishers pace themselves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// At most this many un-acked publishes per publisher.
    Window(u32),
    /// This many messages per second per publisher, on a fixed schedule.
    Rate { per_publisher: f64 },
}

/// A gateway to connect to.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub host: String,
    pub port: u16,
}

/// A validated run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub targets: Vec<Target>,
    pub connections: usize,
    pub rooms: usize,
    pub publishers: usize,
    pub messages: u64,
    pub pace: Pace,
    pub payload: usize,
    pub timeout: Duration,
    pub settle: Duration,
    pub ack_timeout: Duration,
    /// New connections per second; 0 = all at once.
    pub connect_rate: u32,
    pub hold: Duration,
    /// Room names are `<room_prefix>-<index>`, unique per run, so two benches
    /// against the same gateway never see each other's messages.
    pub room_prefix: String,
    pub churn: Option<ChurnPlan>,
    /// `--drop-every`: the mean time between a receiver's connection drops.
    pub drop_every: Option<Duration>,
    /// `--drop-for`: how long a dropped receiver stays away.
    pub drop_for: Duration,
}

/// Arguments that parsed but make no sense.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ArgsError {
    #[error("--{0} must be greater than zero")]
    Zero(&'static str),
    #[error("--publishers ({publishers}) cannot exceed --connections ({connections})")]
    TooManyPublishers {
        publishers: usize,
        connections: usize,
    },
    #[error(
        "--rooms ({rooms}) cannot exceed --connections ({connections}): every room needs a subscriber"
    )]
    TooManyRooms { rooms: usize, connections: usize },
    #[error("--window and --rate exclude each other: closed loop or open loop")]
    WindowAndRate,
    #[error("--rate must be a positive number of messages per second, not {0}")]
    Rate(f64),
    #[error("--churn must be a positive number of joins per second, not {0}")]
    Churn(f64),
    #[error("--payload ({0} bytes) is larger than 1 MiB")]
    Payload(usize),
    #[error("--url {url:?}: {reason}")]
    Url { url: String, reason: String },
}

impl BenchArgs {
    /// Checks the arguments and turns them into a plan.
    pub fn plan(&self) -> Result<Plan, ArgsError> {
        for (flag, value) in [("connections", self.connections), ("rooms", self.rooms)] {
            if value == 0 {
                return Err(ArgsError::Zero(flag));
            }
        }
        let drop_every = self.drop_every.unwrap_or(Duration::MAX);
        for (flag, value) in [
            ("timeout", self.timeout),
            ("ack-timeout", self.ack_timeout),
            ("drop-every", drop_every),
        ] {
            if value.is_zero() {
                return Err(ArgsError::Zero(flag));
            }
        }
        if self.publishers > self.connections {
            return Err(ArgsError::TooManyPublishers {
                publishers: self.publishers,
                connections: self.connections,
            });
        }
        // Round-robin gives every room at least one member, and so every
        // publisher's room at least one subscriber, exactly when this holds.
        if self.rooms > self.connections {
            return Err(ArgsError::TooManyRooms {
                rooms: self.rooms,
                connections: self.connections,
            });
        }
        if self.payload > MAX_PAYLOAD {
            return Err(ArgsError::Payload(self.payload));
        }
        let pace = match (self.window, self.rate) {
            (Some(_), Some(_)) => return Err(ArgsError::WindowAndRate),
            (Some(0), None) => return Err(ArgsError::Zero("window")),
            (Some(w), None) => Pace::Window(w),
            (None, None) => Pace::Window(8),
            (None, Some(r)) if !(r.is_finite() && r > 0.0) => return Err(ArgsError::Rate(r)),
            (None, Some(r)) => Pace::Rate {
                per_publisher: r / self.publishers.max(1) as f64,
            },
        };
        let churn = match self.churn {
            None => None,
            Some(r) if !(r.is_finite() && r > 0.0) => return Err(ArgsError::Churn(r)),
            Some(_) if self.churners == 0 => return Err(ArgsError::Zero("churners")),
            Some(joins_per_sec) => Some(ChurnPlan {
                joins_per_sec,
                churners: self.churners,
            }),
        };
        if self.urls.is_empty() {
            return Err(ArgsError::Url {
                url: String::new(),
                reason: "at least one URL is needed".into(),
            });
        }
        let targets = self
            .urls
            .iter()
            .map(|u| target(u.trim()))
            .collect::<Result<_, _>>()?;
        Ok(Plan {
            targets,
            connections: self.connections,
            rooms: self.rooms,
            publishers: self.publishers,
            messages: self.messages,
            pace,
            payload: self.payload,
            timeout: self.timeout,
            settle: self.settle,
            ack_timeout: self.ack_timeout,
            connect_rate: self.connect_rate,
            hold: self.hold,
            room_prefix: format!("bench-{:08x}", rand::random::<u32>()),
            churn,
            drop_every: self.drop_every,
            drop_for: self.drop_for,
        })
    }
}

pub(crate) fn target(url: &str) -> Result<Target, ArgsError> {
    let fail = |reason: &str| ArgsError::Url {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = url.parse().map_err(|e| fail(&format!("not a URL ({e})")))?;
    match uri.scheme_str() {
        Some("ws") => {}
        Some("wss") => return Err(fail("wss is not supported; use ws://")),
        _ => return Err(fail("must start with ws://")),
    }
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| fail("no host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok(Target {
        url: url.to_owned(),
        host,
        port: uri.port_u16().unwrap_or(80),
    })
}

impl Plan {
    pub fn room_of(&self, conn: usize) -> usize {
        conn % self.rooms
    }

    pub fn room_name(&self, room: usize) -> String {
        format!("{}-{room}", self.room_prefix)
    }

    /// Connections in `room`, publishers included.
    pub fn members(&self, room: usize) -> usize {
        (self.connections + self.rooms - 1 - room) / self.rooms
    }

    /// Publishers in `room`: connections `room`, `room + rooms`, … below `publishers`.
    pub fn publishers_in(&self, room: usize) -> usize {
        (self.publishers + self.rooms - 1 - room) / self.rooms
    }

    /// Where publisher `p`'s sequence numbers are tracked by a receiver in its room.
    pub fn publisher_slot(&self, p: usize) -> usize {
        p / self.rooms
    }

    /// Every publisher's messages times the members of its room.
    pub fn expected_deliveries(&self) -> u64 {
        (0..self.publishers)
            .map(|p| self.messages * self.members(self.room_of(p)) as u64)
            .sum()
    }

    pub fn window(&self) -> Option<u32> {
        match self.pace {
            Pace::Window(w) => Some(w),
            Pace::Rate { .. } => None,
        }
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 500ms, 2m)"))
}

#[cfg(test)]
#[path = "args_tests.rs"]
mod tests;
