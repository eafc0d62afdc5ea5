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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::{HeaderMap, Subscriber};
use futures_util::StreamExt as _;
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use tokio::task::JoinHandle;

use super::BrokerError;
use super::round_trip::RoundTrip;
use crate::delivery::Delivery;
use crate::message::{Envelope, PublishedAt};
use crate::protocol;
use crate::room::RoomKey;
use crate::telemetry::BrokerMetrics;
use crate::telemetry::propagation::StrictTraceContext;

/// How long a subscription may take to be confirmed by the server.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait between reconnect attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);

const MSG_ID: &str = "Nats-Msg-Id";
const ORIGIN: &str = "Wsgate-Origin";
const PUBLISHED_AT: &str = "Wsgate-Published-At";

pub struct NatsBroker {
    client: async_nats::Client,
    /// Confirms that the server has processed this node's SUBs.
    round_trip: RoundTrip,
    prefix: String,
    node_id: String,
    delivery: Arc<Delivery>,
    metrics: BrokerMetrics,
    /// Rooms this node listens to. The std mutex is held only to find or create
    /// a room's entry; the entry's tokio mutex is held across the subscribe
    /// round trip, so concurrent first subscribers to a room wait for one
    /// subscription instead of creating two.
    rooms: std::sync::Mutex<HashMap<RoomKey, Arc<tokio::sync::Mutex<Interest>>>>,
}

/// This node's interest in one room.
#[derive(Default)]
struct Interest {
    /// Local subscribers that acquired the room.
    refs: usize,
    /// The task reading the room's NATS subscription; dropping its subscriber
    /// (by aborting it) unsubscribes.
    listener: Option<JoinHandle<()>>,
}

impl NatsBroker {
    /// Connects in the background: the node starts (not ready) even while NATS
    /// is down, and the client reconnects for as long as the node runs.
    pub async fn connect(
        url: &str,
        prefix: &str,
        node_id: &str,
        delivery: Arc<Delivery>,
        metrics: BrokerMetrics,
    ) -> Result<Self, BrokerError> {
        let events = metrics.clone();
        let client = async_nats::ConnectOptions::new()
            .name(format!("wsgate {node_id}"))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .reconnect_delay_callback(|attempts| {
                (Duration::from_millis(100) * attempts as u32).min(MAX_RECONNECT_DELAY)
            })
            .event_callback(move |event| {
                let events = events.clone();
                async move { on_event(&events, event) }
            })
            .connect(url)
            .await
            .map_err(|e| BrokerError::Unavailable(format!("connecting to {url}: {e}")))?;
        let round_trip = RoundTrip::start(&client).await.map_err(|e| {
            BrokerError::Unavailable(format!("subscribing the round-trip responder: {e}"))
        })?;
        Ok(Self {
            client,
            round_trip,
            prefix: prefix.to_owned(),
            node_id: node_id.to_owned(),
            delivery,
            metrics,
            rooms: std::sync::Mutex::default(),
        })
    }

    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Publishes an envelope: the payload is the raw `data`, everything else
    /// travels in headers.
    pub async fn publish(&self, envelope: &Envelope) -> Result<(), BrokerError> {
        let started = Instant::now();
        let result = self.try_publish(envelope).await;
        self.metrics
            .published(started.elapsed(), result.as_ref().err().map(error_type));
        result
    }

    async fn try_publish(&self, envelope: &Envelope) -> Result<(), BrokerError> {
        if !self.is_connected() {
            return Err(BrokerError::Unavailable("not connected to NATS".into()));
        }
        let mut headers = HeaderMap::new();
        let cx = Context::new().with_remote_span_context(envelope.trace.clone());
        StrictTraceContext::new().inject_context(&cx, &mut NatsHeaders(&mut headers));
        headers.insert(MSG_ID, &*envelope.id);
        headers.insert(ORIGIN, self.node_id.as_str());
        headers.insert(
            PUBLISHED_AT,
            unix_nanos(envelope.published_at.wall_clock()).to_string(),
        );
        let payload = bytes::Bytes::copy_from_slice(envelope.data.get().as_bytes());
        self.client
            .publish_with_headers(subject(&self.prefix, &envelope.room), headers, payload)
            .await
            .map_err(|e| BrokerError::Unavailable(format!("publishing to NATS: {e}")))
    }

    /// Makes sure this node receives `room`'s messages, subscribing on the first
    /// local subscriber and waiting until the server has confirmed it.
    pub async fn acquire(&self, room: &RoomKey) -> Result<(), BrokerError> {
        let entry = self.entry(room);
        let mut interest = entry.lock().await;
        if interest.listener.is_none() {
            let subscriber = self.subscribe(room).await?;
            interest.listener = Some(tokio::spawn(listen(
                subscriber,
                room.clone(),
                self.delivery.clone(),
                self.metrics.clone(),
            )));
        }
        interest.refs += 1;
        Ok(())
    }

    async fn subscribe(&self, room: &RoomKey) -> Result<Subscriber, BrokerError> {
        if !self.is_connected() {
            return Err(BrokerError::Unavailable("not connected to NATS".into()));
        }
        let subject = subject(&self.prefix, room);
        let subscriber = self
            .client
            .subscribe(subject)
            .await
            .map_err(|e| BrokerError::Unavailable(format!("subscribing: {e}")))?;
        // Once a round trip completes the server has processed the SUB, so a
        // publish on any node after our client hears "subscribed" reaches us.
        // (A flush would only prove the SUB left this process.)
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
    pub fn release(self: &Arc<Self>, room: &RoomKey) {
        let this = self.clone();
        let room = room.clone();
        tokio::spawn(async move {
            let entry = this.entry(&room);
            let mut interest = entry.lock().await;
            interest.refs = interest.refs.saturating_sub(1);
            if interest.refs > 0 {
                return;
            }
            if let Some(listener) = interest.listener.take() {
                listener.abort();
            }
            drop(interest);
            // Forget the room unless someone is about to use it: under the map
            // lock nobody can clone the entry, so the map's reference and ours
            // being the only two means no acquire is pending on it.
            let mut rooms = this.rooms.lock().unwrap_or_else(|p| p.into_inner());
            if rooms.get(&room).is_some_and(|e| Arc::ptr_eq(e, &entry))
                && Arc::strong_count(&entry) == 2
            {
                rooms.remove(&room);
            }
        });
    }

    fn entry(&self, room: &RoomKey) -> Arc<tokio::sync::Mutex<Interest>> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms.entry(room.clone()).or_default().clone()
    }
}

/// Reads one room's subscription and delivers each message locally, in order.
async fn listen(
    mut subscriber: Subscriber,
    room: RoomKey,
    delivery: Arc<Delivery>,
    metrics: BrokerMetrics,
) {
    while let Some(message) = subscriber.next().await {
        match decode(&room, message) {
            Ok(envelope) => {
                metrics.consumed(None);
                delivery.deliver(&envelope);
            }
            Err(reason) => {
                metrics.consumed(Some("invalid_message"));
                tracing::warn!(%room, reason, "dropped a malformed message from NATS");
            }
        }
    }
}

/// Rebuilds an envelope from a NATS message. Anything on the subject could have
/// published it, so nothing is trusted: the payload must be JSON.
fn decode(room: &RoomKey, message: async_nats::Message) -> Result<Envelope, &'static str> {
    let data = protocol::parse_data(&message.payload).map_err(|_| "payload is not JSON")?;
    let headers = message.headers.unwrap_or_default();
    let id = headers
        .get(MSG_ID)
        .map(|v| v.as_str().to_owned())
        .ok_or("no Nats-Msg-Id header")?;
    let cx =
        StrictTraceContext::new().extract_with_context(&Context::new(), &NatsHeadersRef(&headers));
    let published_at = headers
        .get(PUBLISHED_AT)
        .and_then(|v| v.as_str().parse::<u64>().ok())
        .map(|nanos| UNIX_EPOCH + Duration::from_nanos(nanos))
        .unwrap_or_else(SystemTime::now);
    Ok(Envelope {
        id: id.into(),
        room: room.clone(),
        data,
        trace: cx.span().span_context().clone(),
        published_at: PublishedAt::Remote(published_at),
    })
}

/// The subject of a room: `<prefix>.<tenant>.room.<room>`. A tenant has no `.`
/// and a room's `.` (a subject token separator) is escaped as `%2E`. No room
/// name contains `%`, so the mapping is one-to-one, and no room can reach
/// another's subject (another tenant's included) or produce an empty token or
/// a wildcard.
pub fn subject(prefix: &str, key: &RoomKey) -> String {
    let room = key.room.as_str();
    let tenant = key.tenant.as_str();
    let mut subject = String::with_capacity(prefix.len() + tenant.len() + 8 + room.len() + 8);
    subject.push_str(prefix);
    subject.push('.');
    subject.push_str(tenant);
    subject.push_str(".room.");
    for c in room.chars() {
        if c == '.' {
            subject.push_str("%2E");
        } else {
            subject.push(c);
        }
    }
    subject
}

fn on_event(metrics: &BrokerMetrics, event: async_nats::Event) {
    match event {
        async_nats::Event::Connected => {
            if metrics.connected(true) {
                tracing::info!("connected to NATS");
            } else {
                tracing::info!("reconnected to NATS; subscriptions restored");
            }
        }
        async_nats::Event::Disconnected => {
            metrics.connected(false);
            tracing::warn!("disconnected from NATS; publishes are refused until it returns");
        }
        other => tracing::info!(event = %other, "NATS client event"),
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

struct NatsHeadersRef<'a>(&'a HeaderMap);

impl Extractor for NatsHeadersRef<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::{RoomName, Tenant};

    fn key(tenant: &str, room: &str) -> RoomKey {
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
}
