//! Core NATS pub/sub: every node on the same NATS shares every room.
//!
//! Delivery semantics are core NATS's: at most once, as WebSocket fan-out is. A
//! node that is disconnected refuses publishes (`broker_unavailable`) instead of
//! buffering them, so no publish is acknowledged and then silently lost to an
//! outage. History and recovery (replay after reconnect) would be JetStream's job;
//! the message id already travels as `Nats-Msg-Id`, which JetStream deduplicates on.
//!
//! Every node, the publisher's included, receives messages only through its
//! NATS subscription. One path means no echo to suppress and no duplicate: each
//! node holds one subscription per room, and each local subscriber gets each
//! message once, in publish order per publisher.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;
use async_nats::connection::State;
use opentelemetry::Context;
use opentelemetry::propagation::{Injector, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use tokio::sync::{OnceCell, watch};

mod history;

use super::BrokerError;
use super::connect::{self, NatsAccess};
use super::connect_failures::ConnectFailures;
use super::inbound::{Inbound, Stored};
use super::jetstream::StreamHistory;
use super::rooms::Rooms;
use super::round_trip::RoundTrip;
use crate::delivery::Delivery;
use crate::history::HistoryLimits;
use crate::message::Envelope;
use crate::telemetry::propagation::StrictTraceContext;
use crate::telemetry::{
    BrokerMetrics, BrokerState, ConsumeError, ObservedBroker, WarningKind, Warnings,
};
use wsgate_protocol::room::RoomKey;

/// How long a subscription may take to be confirmed by the server.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait between reconnect attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);

pub(super) const MSG_ID: &str = "Nats-Msg-Id";
/// The message's own id when `Nats-Msg-Id` carries a publisher's idempotency
/// key instead (history in JetStream).
pub(super) const WSGATE_MSG_ID: &str = "Wsgate-Msg-Id";
/// Set by JetStream's republish: the stream sequence, the message's offset.
pub(super) const SEQUENCE: &str = "Nats-Sequence";
/// A republished message's header: the stream sequence of the message
/// stored before it on the same subject (0 if none).
pub(super) const LAST_SEQUENCE: &str = "Nats-Last-Sequence";
/// A republished message's header: the stream that stored it.
pub(super) const STREAM: &str = "Nats-Stream";
const ORIGIN: &str = "Wsgate-Origin";
pub(super) const PUBLISHED_AT: &str = "Wsgate-Published-At";

/// How a node uses NATS, from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct NatsSettings {
    /// `--nats-url` and the TLS and credential flags.
    pub(crate) access: NatsAccess,
    /// `--nats-subject-prefix`.
    pub(crate) prefix: String,
    pub(crate) node_id: String,
    /// `--max-message-bytes`: larger messages from NATS are dropped.
    pub(crate) max_message_bytes: usize,
    /// `--nats-subscription-buffer`: messages the NATS client holds for one
    /// room's subscription before it drops them.
    pub(crate) subscription_buffer: usize,
    /// `--broker-connect-timeout`: how long after start-up requests wait for
    /// the first connection.
    pub(crate) connect_timeout: Duration,
    /// `--warning-log-interval`: how often a failing connection is logged.
    pub(crate) warning_log_interval: Duration,
    /// `--history-size` and its limits: history in a JetStream stream.
    pub(crate) history: Option<HistoryLimits>,
}

pub(crate) struct NatsBroker {
    client: async_nats::Client,
    /// Confirms that the server has processed this node's SUBs.
    round_trip: RoundTrip,
    prefix: String,
    node_id: String,
    metrics: BrokerMetrics,
    warnings: Warnings,
    /// What each room's listener task shares.
    inbound: Arc<Inbound>,
    /// Rooms this node listens to.
    rooms: Arc<Rooms>,
    /// Keeps the instruments that read the client's state registered (they
    /// hold a clone of the client, as long as the meter provider lives).
    _observed: ObservedBroker,
    /// Turns true at the first connection to NATS.
    connected_once: watch::Receiver<bool>,
    /// Until the first connection, and at most until this instant, requests
    /// wait for NATS instead of failing; see [`NatsBroker::available`].
    first_connection_deadline: tokio::time::Instant,
    /// With history: the JetStream stream, once found or made (in the
    /// background, as soon as NATS is reachable).
    history: Option<Arc<OnceCell<StreamHistory>>>,
    history_limits: Option<HistoryLimits>,
    /// The stream's messages and bytes, read every few seconds.
    pub(crate) stream_state: Arc<[AtomicU64; 2]>,
}

impl NatsBroker {
    /// Connects in the background: the node starts (not ready) even while NATS
    /// is down, and the client reconnects for as long as the node runs.
    pub(crate) async fn connect(
        settings: &NatsSettings,
        delivery: Arc<Delivery>,
        metrics: BrokerMetrics,
        warnings: Warnings,
    ) -> Result<Self, BrokerError> {
        let first_connection_deadline = tokio::time::Instant::now() + settings.connect_timeout;
        let (connected_once, connected_once_rx) = watch::channel(false);
        let (options, tls_notes) = connect::options(&settings.access)?;
        let events = Events(Arc::new(EventState {
            metrics: metrics.clone(),
            warnings: warnings.clone(),
            connected_once,
            ever_connected: AtomicBool::new(false),
            failures: ConnectFailures::new(settings.warning_log_interval, tls_notes),
        }));
        let servers = &settings.access.servers;
        let client = options
            .name(format!("wsgate {}", settings.node_id))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .reconnect_delay_callback(|attempts| {
                (Duration::from_millis(100) * attempts as u32).min(MAX_RECONNECT_DELAY)
            })
            // Bounds what one room can hold in memory when its listener falls
            // behind: this many messages (async-nats's default is 65,536).
            // Gateways publish at most --max-message-bytes each; anything else
            // publishing on NATS is bounded by the server's max_payload (1 MiB
            // by default), since the size check comes after the buffer.
            .subscription_capacity(settings.subscription_buffer)
            .event_callback(move |event| {
                let events = events.clone();
                async move { events.on(event) }
            })
            // Bare addresses: the credentials were taken out into `options`.
            .connect(servers.addrs.clone())
            .await
            .map_err(|e| BrokerError::Unavailable(format!("connecting to {servers}: {e}")))?;
        let round_trip = RoundTrip::start(&client).await.map_err(|e| {
            BrokerError::Unavailable(format!("subscribing the round-trip responder: {e}"))
        })?;
        let rooms = Arc::new(Rooms::default());
        let observed = metrics.observe({
            let (client, rooms) = (client.clone(), rooms.clone());
            move || {
                let stats = client.statistics();
                BrokerState {
                    connected: client.connection_state() == State::Connected,
                    connects: stats.connects.load(Ordering::Relaxed),
                    received: stats.in_messages.load(Ordering::Relaxed),
                    rooms: rooms.len(),
                }
            }
        });
        let stream_state = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let history = settings.history.map(|limits| {
            let cell = Arc::new(OnceCell::new());
            tokio::spawn(history::keep_stream(
                client.clone(),
                settings.prefix.clone(),
                limits,
                cell.clone(),
                stream_state.clone(),
            ));
            cell
        });
        Ok(Self {
            client,
            round_trip,
            prefix: settings.prefix.clone(),
            node_id: settings.node_id.clone(),
            inbound: Arc::new(Inbound {
                delivery,
                metrics: metrics.clone(),
                warnings: warnings.clone(),
                max_message_bytes: settings.max_message_bytes,
                stored: history
                    .clone()
                    .zip(settings.history)
                    .map(|(stream, limits)| Stored {
                        stream,
                        prefix: settings.prefix.clone(),
                        max: limits.size,
                        name: super::jetstream::stream_name(&settings.prefix),
                    }),
            }),
            metrics,
            warnings,
            rooms,
            _observed: observed,
            connected_once: connected_once_rx,
            first_connection_deadline,
            history,
            history_limits: settings.history,
            stream_state,
        })
    }

    /// Connected, and with history, its stream found or made.
    pub(crate) fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
            && self.history.as_ref().is_none_or(|cell| cell.initialized())
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether NATS can take a request now.
    ///
    /// The node opens its port before its first connection to NATS is made,
    /// so a client can arrive first: until that connection, and at most until
    /// `--broker-connect-timeout` after start-up, requests wait for it. After
    /// that (and in any outage after the first connection) a disconnected
    /// node refuses at once, as documented: nothing is acknowledged and then
    /// lost, and nothing piles up waiting for an outage to end.
    async fn available(&self) -> Result<(), BrokerError> {
        match self.client.connection_state() {
            State::Connected => Ok(()),
            State::Disconnected => Err(BrokerError::Unavailable("not connected to NATS".into())),
            State::Pending => {
                let mut connected = self.connected_once.clone();
                let first = connected.wait_for(|connected| *connected);
                match tokio::time::timeout_at(self.first_connection_deadline, first).await {
                    // Connected (the event can precede the client's own state
                    // by a moment; requests made now queue in the client).
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(_)) | Err(_) => Err(BrokerError::Unavailable(
                        "NATS could not be reached since start-up (--broker-connect-timeout)"
                            .into(),
                    )),
                }
            }
        }
    }

    /// Publishes an envelope: the payload is the raw `data`, everything else
    /// travels in headers.
    pub(crate) async fn publish(&self, envelope: &Envelope) -> Result<(), BrokerError> {
        let started = Instant::now();
        let result = self.try_publish(envelope).await;
        self.metrics
            .published(started.elapsed(), result.as_ref().err().map(error_type));
        result
    }

    async fn try_publish(&self, envelope: &Envelope) -> Result<(), BrokerError> {
        self.available().await?;
        let headers = self.headers(envelope);
        let payload = bytes::Bytes::copy_from_slice(envelope.data.get().as_bytes());
        self.client
            .publish_with_headers(subject(&self.prefix, &envelope.room), headers, payload)
            .await
            .map_err(|e| BrokerError::Unavailable(format!("publishing to NATS: {e}")))
    }

    /// The headers an envelope travels with: its trace context, id, origin
    /// and publication time.
    fn headers(&self, envelope: &Envelope) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let cx = Context::new().with_remote_span_context(envelope.trace.clone());
        StrictTraceContext::new().inject_context(&cx, &mut NatsHeaders(&mut headers));
        headers.insert(MSG_ID, &*envelope.id);
        headers.insert(ORIGIN, self.node_id.as_str());
        headers.insert(
            PUBLISHED_AT,
            unix_nanos(envelope.published_at.wall_clock()).to_string(),
        );
        headers
    }

    /// Makes sure this node receives `room`'s messages, subscribing on the first
    /// local subscriber and waiting until the server has confirmed it. A
    /// failure (or a cancelled call) leaves no trace of the room behind.
    pub(crate) async fn acquire(&self, room: &RoomKey) -> Result<(), BrokerError> {
        let claim = self.rooms.claim(room);
        let mut interest = claim.lock().await;
        if interest.listener.is_none() {
            let (subscriber, gate) = match self.listen_to(room).await {
                Ok(listening) => listening,
                Err(e) => {
                    if let Some(suppressed) =
                        self.warnings.admit(WarningKind::BrokerSubscribeFailed)
                    {
                        tracing::warn!(%room, error = %e, suppressed, "subscribe failed");
                    }
                    return Err(e);
                }
            };
            interest.gate.clone_from(&gate);
            let listener = self.inbound.clone().listen(subscriber, room.clone(), gate);
            interest.listener = Some(tokio::spawn(listener));
        }
        interest.refs += 1;
        Ok(())
    }

    async fn subscribe(&self, room: &RoomKey) -> Result<async_nats::Subscriber, BrokerError> {
        self.available().await?;
        let subject = subject(&self.prefix, room);
        let subscriber = self
            .client
            .subscribe(subject)
            .await
            .map_err(|e| BrokerError::Unavailable(format!("subscribing: {e}")))?;
        // Once a round trip completes the server has processed the SUB, so a
        // publish on any node after our client hears "subscribed" reaches us.
        // (A flush would only prove the SUB left this process.) On failure the
        // subscriber is dropped, which unsubscribes.
        match tokio::time::timeout(SUBSCRIBE_TIMEOUT, self.round_trip.complete()).await {
            Ok(Ok(())) => Ok(subscriber),
            Ok(Err(e)) => Err(BrokerError::Unavailable(format!(
                "confirming a subscription: {e}"
            ))),
            Err(_) => Err(BrokerError::Unavailable(
                "NATS did not confirm the subscription in time".into(),
            )),
        }
    }

    /// Withdraws one acquire; the last one unsubscribes. Runs in the background
    /// because a connection's drop path cannot wait.
    pub(crate) fn release(&self, room: &RoomKey) {
        let rooms = self.rooms.clone();
        let room = room.clone();
        tokio::spawn(async move {
            let claim = rooms.claim(&room);
            let mut interest = claim.lock().await;
            interest.refs = interest.refs.saturating_sub(1);
            if interest.refs == 0
                && let Some(listener) = interest.listener.take()
            {
                listener.abort();
                interest.gate = None;
            }
        });
    }
}

/// The subject of a room: `<prefix>.<tenant>.room.<room>`. A tenant has no `.`
/// and a room's `.` (a subject token separator) is escaped as `%2E`. No room
/// name contains `%`, so the mapping is one-to-one, and no room can reach
/// another's subject (another tenant's included) or produce an empty token or
/// a wildcard.
pub(crate) fn subject(prefix: &str, key: &RoomKey) -> String {
    subject_of(prefix, key, "room")
}

/// `<prefix>.<tenant>.<kind>.<room>`: a room's live subject (`room`) or its
/// history subject (`hist`), the room token escaped as [`subject`] says.
pub(crate) fn subject_of(prefix: &str, key: &RoomKey, kind: &str) -> String {
    let room = key.room.as_str();
    let tenant = key.tenant.as_str();
    let mut subject =
        String::with_capacity(prefix.len() + tenant.len() + kind.len() + room.len() + 12);
    subject.push_str(prefix);
    subject.push('.');
    subject.push_str(tenant);
    subject.push('.');
    subject.push_str(kind);
    subject.push('.');
    for c in room.chars() {
        if c == '.' {
            subject.push_str("%2E");
        } else {
            subject.push(c);
        }
    }
    subject
}

/// What the NATS client's event callback needs. Cheap to clone: one `Arc`.
#[derive(Clone)]
struct Events(Arc<EventState>);

struct EventState {
    metrics: BrokerMetrics,
    warnings: Warnings,
    connected_once: watch::Sender<bool>,
    /// Whether a `Connected` event came before, to log reconnections as such.
    ever_connected: AtomicBool,
    /// Failed connection attempts, logged at most once per interval.
    failures: ConnectFailures,
}

impl Events {
    /// async-nats hands events over a 128-slot channel it fills with
    /// `try_send`, so in a flood (one `SlowConsumer` per dropped message)
    /// events are lost: the slow-consumer count is exact while drops are
    /// sparse and a lower bound in a burst. Nothing else depends on events
    /// arriving: the connection's state is read from the client itself
    /// (`BrokerState`), and the first-connection signal cannot meet a flood
    /// (no message arrives before the first connection).
    fn on(&self, event: async_nats::Event) {
        let this = &self.0;
        match event {
            async_nats::Event::Connected => {
                this.failures.connected();
                this.connected_once.send_replace(true);
                if this.ever_connected.swap(true, Ordering::Relaxed) {
                    tracing::info!("reconnected to NATS; subscriptions restored");
                } else {
                    tracing::info!("connected to NATS");
                }
            }
            async_nats::Event::Disconnected => {
                tracing::warn!("disconnected from NATS; publishes are refused until it returns");
            }
            // One message dropped: its subscription's buffer was full.
            async_nats::Event::SlowConsumer(_) => {
                this.metrics.consumed(Some(ConsumeError::SlowConsumer));
                if let Some(suppressed) = this.warnings.admit(WarningKind::BrokerSlowConsumer) {
                    tracing::warn!(
                        suppressed,
                        "a NATS subscription's buffer was full and a message was dropped \
                         (see --nats-subscription-buffer)"
                    );
                }
            }
            // A connection attempt failed (async-nats sends only the kind of
            // error: "IO error", "TLS error", "authorization violation").
            async_nats::Event::ClientError(async_nats::ClientError::Other(error)) => {
                this.failures.failed(&error);
            }
            other => tracing::info!(event = %other, "NATS client event"),
        }
    }
}

fn error_type(_: &BrokerError) -> &'static str {
    "broker_unavailable"
}

fn unix_nanos(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

struct NatsHeaders<'a>(&'a mut HeaderMap);

impl Injector for NatsHeaders<'_> {
    fn set(&mut self, key: &str, value: String) {
        if !value.is_empty() {
            self.0.insert(key, value);
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use wsgate_protocol::room::{RoomName, Tenant};

    /// A room key from names the test knows are valid (jetstream.rs's tests
    /// use it too).
    pub(in crate::broker) fn key(tenant: &str, room: &str) -> RoomKey {
        RoomKey::new(
            Tenant::parse(tenant).unwrap(),
            RoomName::parse(room).unwrap(),
        )
    }

    #[track_caller]
    fn check(tenant: &str, room: &str, expected: &str) {
        assert_eq!(subject("wsgate", &key(tenant, room)), expected);
    }

    #[test]
    fn subjects_are_one_token_per_tenant_and_room_whatever_the_dots() {
        check("default", "lobby", "wsgate.default.room.lobby");
        check("acme", "a.b", "wsgate.acme.room.a%2Eb");
        check("acme", "..", "wsgate.acme.room.%2E%2E");
        check("t-1", "team:42-x_y", "wsgate.t-1.room.team:42-x_y");
        // Distinct rooms and tenants, distinct subjects.
        assert_ne!(subject("p", &key("t", "a.b")), subject("p", &key("t", "a")));
        assert_ne!(
            subject("p", &key("a", "lobby")),
            subject("p", &key("b", "lobby"))
        );
    }

    /// The subject format is defined once, by `subject`; every document that
    /// spells it out must spell it the same (NATS permissions are written
    /// from them).
    #[test]
    fn the_documents_spell_the_subject_as_the_code_builds_it() {
        let built = subject("PREFIX", &key("TENANT", "ROOM"));
        let spelled = built
            .replace("PREFIX", "<prefix>")
            .replace("TENANT", "<tenant>")
            .replace("ROOM", "<room>");
        assert_eq!(spelled, "<prefix>.<tenant>.room.<room>");
        let history = crate::broker::jetstream::history_subject("PREFIX", &key("TENANT", "ROOM"))
            .replace("PREFIX", "<prefix>")
            .replace("TENANT", "<tenant>")
            .replace("ROOM", "<room>");
        assert_eq!(history, "<prefix>.<tenant>.hist.<room>");
        for (name, text) in [
            ("README.md", include_str!("../../README.md")),
            ("ARCHITECTURE.md", include_str!("../../ARCHITECTURE.md")),
            ("docs/security.md", include_str!("../../docs/security.md")),
            ("src/config.rs", include_str!("../config.rs")),
        ] {
            for (at, _) in text.match_indices("`<prefix>.") {
                let quoted = text[at + 1..].split('`').next().unwrap_or("");
                assert!(
                    [
                        spelled.as_str(),
                        history.as_str(),
                        "<prefix>.>",
                        "<prefix>.*.hist.*"
                    ]
                    .contains(&quoted),
                    "{name} spells a subject `{quoted}`; the code builds `{spelled}` \
                     (and `{history}` with history)"
                );
            }
        }
    }
}
