//! Every instrument wsgate records, declared in one place.
//!
//! The names, units and label values here are a contract: dashboards, alert rules
//! and users' queries depend on them (the README's metrics table lists them).
//! Instrument names carry neither `_total` nor a unit; the Prometheus exporter
//! derives `websocket_messages_received_total` and `..._seconds` from the kind and
//! unit. Every label value comes from a closed enum below, so no label can ever
//! carry a room, user, connection or message.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, UpDownCounter};

use crate::protocol::{ClientFrameType, ErrorCode, ServerFrameType};

/// Bucket boundaries for message handling and delivery, in seconds: 50 µs to 10 s.
const LATENCY_BUCKETS: [f64; 17] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Bucket boundaries for connection lifetimes, in seconds: 100 ms to a day, with
/// enough resolution below 10 s to see abnormally short connections.
const CONNECTION_BUCKETS: [f64; 15] = [
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0,
    86400.0,
];

/// The HTTP semantic conventions' recommended boundaries, in seconds.
const HTTP_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

macro_rules! label_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }
        impl $name {
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }
    };
}

label_enum! {
    /// Why a connection ended: the `close_reason` label.
    CloseReason {
        ClientClose => "client_close",
        ServerShutdown => "server_shutdown",
        HeartbeatTimeout => "heartbeat_timeout",
        ProtocolError => "protocol_error",
        TooLarge => "too_large",
        SlowConsumer => "slow_consumer",
        Policy => "policy",
        Error => "error",
    }
}

label_enum! {
    /// The `error_type` label of `websocket_errors_total`: every error frame code
    /// plus the failures that end a connection.
    ErrorType {
        InvalidMessage => "invalid_message",
        UnknownType => "unknown_type",
        InvalidRoom => "invalid_room",
        NotSubscribed => "not_subscribed",
        UnsupportedBinary => "unsupported_binary",
        BrokerUnavailable => "broker_unavailable",
        Forbidden => "forbidden",
        RateLimited => "rate_limited",
        TooManyRooms => "too_many_rooms",
        Internal => "internal",
        TooLarge => "too_large",
        HeartbeatTimeout => "heartbeat_timeout",
        WriteFailed => "write_failed",
        SlowConsumer => "slow_consumer",
        Protocol => "protocol",
    }
}

label_enum! {
    /// Why an upgrade was refused before any WebSocket existed: the `reason`
    /// label of `websocket_connections_rejected_total`.
    RejectReason {
        BadHandshake => "bad_handshake",
        ShuttingDown => "shutting_down",
        Origin => "origin",
        Unauthorized => "unauthorized",
        PerIpLimit => "per_ip_limit",
        Capacity => "capacity",
    }
}

label_enum! {
    /// Why a frame bound for a client was never written: the `reason` label.
    DropReason {
        /// The subscriber's queue was full (`--slow-consumer drop`).
        QueueFull => "queue_full",
        /// Queued for a connection that was then closed as a slow consumer.
        SlowConsumer => "slow_consumer",
        /// Addressed to a connection that was closing, or left queued when it closed.
        ConnectionClosed => "connection_closed",
    }
}

impl From<ErrorCode> for ErrorType {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::InvalidMessage => Self::InvalidMessage,
            ErrorCode::UnknownType => Self::UnknownType,
            ErrorCode::InvalidRoom => Self::InvalidRoom,
            ErrorCode::NotSubscribed => Self::NotSubscribed,
            ErrorCode::UnsupportedBinary => Self::UnsupportedBinary,
            ErrorCode::BrokerUnavailable => Self::BrokerUnavailable,
            ErrorCode::Forbidden => Self::Forbidden,
            ErrorCode::RateLimited => Self::RateLimited,
            ErrorCode::TooManyRooms => Self::TooManyRooms,
            ErrorCode::Internal => Self::Internal,
        }
    }
}

/// The `close_code` label: RFC 6455 codes as numbers, application ranges folded
/// into `3xxx`/`4xxx`, anything else `other`, so a client cannot mint series.
pub fn close_code_label(code: u16) -> &'static str {
    const KNOWN: [&str; 16] = [
        "1000", "1001", "1002", "1003", "1004", "1005", "1006", "1007", "1008", "1009", "1010",
        "1011", "1012", "1013", "1014", "1015",
    ];
    match code {
        1000..=1015 => KNOWN[usize::from(code - 1000)],
        3000..=3999 => "3xxx",
        4000..=4999 => "4xxx",
        _ => "other",
    }
}

/// Handles to every instrument. Cheap to share: each handle is an `Arc` inside.
#[derive(Clone)]
pub struct Metrics {
    connections_active: UpDownCounter<i64>,
    connections_opened: Counter<u64>,
    connections_rejected: Counter<u64>,
    connection_duration: Histogram<f64>,
    messages_received: Counter<u64>,
    messages_sent: Counter<u64>,
    handling_duration: Histogram<f64>,
    delivery_duration: Histogram<f64>,
    errors: Counter<u64>,
    dropped: Counter<u64>,
    http_duration: Histogram<f64>,
}

impl Metrics {
    pub fn new(meter: &Meter) -> Self {
        let m = Self {
            connections_active: meter
                .i64_up_down_counter("websocket.connections.active")
                .with_description("WebSocket connections currently open.")
                .with_unit("{connection}")
                .build(),
            connections_opened: meter
                .u64_counter("websocket.connections.opened")
                .with_description("WebSocket connections accepted (upgraded).")
                .with_unit("{connection}")
                .build(),
            connections_rejected: meter
                .u64_counter("websocket.connections.rejected")
                .with_description("WebSocket upgrades refused before the handshake completed, by reason.")
                .with_unit("{connection}")
                .build(),
            connection_duration: meter
                .f64_histogram("websocket.connection.duration")
                .with_description("Lifetime of closed WebSocket connections, by why and how they closed.")
                .with_unit("s")
                .with_boundaries(CONNECTION_BUCKETS.to_vec())
                .build(),
            messages_received: meter
                .u64_counter("websocket.messages.received")
                .with_description("Text and binary frames received from clients, by frame type.")
                .with_unit("{message}")
                .build(),
            messages_sent: meter
                .u64_counter("websocket.messages.sent")
                .with_description("Frames written to client sockets, by frame type.")
                .with_unit("{message}")
                .build(),
            handling_duration: meter
                .f64_histogram("websocket.message.handling.duration")
                .with_description("Time from reading a client frame to having handled it (parsed, checked, handed to the broker, reply queued).")
                .with_unit("s")
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build(),
            delivery_duration: meter
                .f64_histogram("websocket.message.delivery.duration")
                .with_description("Time from a publish being accepted to the message frame being written to a subscriber's socket; one observation per delivery.")
                .with_unit("s")
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build(),
            errors: meter
                .u64_counter("websocket.errors")
                .with_description("Errors by kind: error frames sent and failures that closed a connection.")
                .with_unit("{error}")
                .build(),
            dropped: meter
                .u64_counter("websocket.messages.dropped")
                .with_description("Frames bound for a client that were never written, by reason.")
                .with_unit("{message}")
                .build(),
            http_duration: meter
                .f64_histogram("http.server.request.duration")
                .with_description("Duration of HTTP server requests (WebSocket upgrades excluded).")
                .with_unit("s")
                .with_boundaries(HTTP_BUCKETS.to_vec())
                .build(),
        };
        m.export_zeroes();
        m
    }

    /// Creates every bounded counter series at 0, so `rate()` works before the
    /// first event and alerts can tell "no errors" from "no data".
    fn export_zeroes(&self) {
        self.connections_active.add(0, &[]);
        self.connections_opened.add(0, &[]);
        for t in ClientFrameType::ALL {
            self.messages_received
                .add(0, &[KeyValue::new("type", t.as_str())]);
        }
        for t in ServerFrameType::ALL {
            self.messages_sent
                .add(0, &[KeyValue::new("type", t.as_str())]);
        }
        for e in ErrorType::ALL {
            self.errors
                .add(0, &[KeyValue::new("error_type", e.as_str())]);
        }
        for r in RejectReason::ALL {
            self.connections_rejected
                .add(0, &[KeyValue::new("reason", r.as_str())]);
        }
        for r in DropReason::ALL {
            self.dropped.add(0, &[KeyValue::new("reason", r.as_str())]);
        }
    }

    pub fn connection_rejected(&self, reason: RejectReason) {
        self.connections_rejected
            .add(1, &[KeyValue::new("reason", reason.as_str())]);
    }

    pub fn connection_opened(&self) {
        self.connections_opened.add(1, &[]);
        self.connections_active.add(1, &[]);
    }

    /// Records a connection's end. Called exactly once per opened connection, from
    /// a drop guard, so the active count returns to exactly zero.
    pub fn connection_closed(&self, lifetime: Duration, reason: CloseReason, code: u16) {
        self.connections_active.add(-1, &[]);
        self.connection_duration.record(
            lifetime.as_secs_f64(),
            &[
                KeyValue::new("close_reason", reason.as_str()),
                KeyValue::new("close_code", close_code_label(code)),
            ],
        );
    }

    pub fn message_received(&self, frame_type: ClientFrameType, handling: Duration) {
        let attrs = [KeyValue::new("type", frame_type.as_str())];
        self.messages_received.add(1, &attrs);
        self.handling_duration
            .record(handling.as_secs_f64(), &attrs);
    }

    pub fn messages_sent(&self, frame_type: ServerFrameType, count: u64) {
        self.messages_sent
            .add(count, &[KeyValue::new("type", frame_type.as_str())]);
    }

    pub fn delivered(&self, latency: Duration) {
        self.delivery_duration.record(latency.as_secs_f64(), &[]);
    }

    pub fn error(&self, error: ErrorType) {
        self.errors
            .add(1, &[KeyValue::new("error_type", error.as_str())]);
    }

    pub fn dropped(&self, reason: DropReason, count: u64) {
        if count > 0 {
            self.dropped
                .add(count, &[KeyValue::new("reason", reason.as_str())]);
        }
    }

    /// Accounts for frames that could not be queued for a client: `dropped` by a
    /// full queue, `kicked` by tripping the slow-consumer disconnect (the kicked
    /// connection's backlog is counted when it is discarded), `closed` because the
    /// connection was already closing.
    pub fn undelivered(&self, dropped: usize, kicked: usize, closed: usize) {
        self.dropped(DropReason::QueueFull, dropped as u64);
        self.dropped(DropReason::SlowConsumer, kicked as u64);
        self.dropped(DropReason::ConnectionClosed, closed as u64);
        if kicked > 0 {
            self.errors.add(
                kicked as u64,
                &[KeyValue::new(
                    "error_type",
                    ErrorType::SlowConsumer.as_str(),
                )],
            );
        }
    }

    /// One HTTP request. `route` is the matched route template (a bounded set),
    /// absent for unmatched paths.
    pub fn http_request(
        &self,
        method: &'static str,
        route: Option<String>,
        status: u16,
        took: Duration,
    ) {
        let mut attrs = vec![
            KeyValue::new("http.request.method", method),
            KeyValue::new("http.response.status_code", i64::from(status)),
        ];
        if let Some(route) = route {
            attrs.push(KeyValue::new("http.route", route));
        }
        self.http_duration.record(took.as_secs_f64(), &attrs);
    }
}

/// The broker's instruments, following the OTel messaging conventions. Only
/// the NATS broker records them: the in-memory broker is a function call.
#[derive(Clone)]
pub struct BrokerMetrics {
    operation_duration: Histogram<f64>,
    sent: Counter<u64>,
    consumed: Counter<u64>,
    connected: Gauge<i64>,
    reconnects: Counter<u64>,
    /// Whether the client has ever connected, so a later `Connected` event is
    /// counted as a reconnect.
    ever_connected: Arc<AtomicBool>,
}

fn system() -> KeyValue {
    KeyValue::new("messaging.system", "nats")
}
fn operation(name: &'static str) -> KeyValue {
    KeyValue::new("messaging.operation.name", name)
}
fn error_type(error: &'static str) -> KeyValue {
    KeyValue::new("error.type", error)
}

impl BrokerMetrics {
    pub fn new(meter: &Meter) -> Self {
        let m = Self {
            operation_duration: meter
                .f64_histogram("messaging.client.operation.duration")
                .with_description("Duration of publishing a message to the broker.")
                .with_unit("s")
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build(),
            sent: meter
                .u64_counter("messaging.client.sent.messages")
                .with_description("Messages the node attempted to publish to the broker; error.type is set on failures.")
                .with_unit("{message}")
                .build(),
            consumed: meter
                .u64_counter("messaging.client.consumed.messages")
                .with_description("Messages the node received from the broker; error.type is set on ones it could not use.")
                .with_unit("{message}")
                .build(),
            connected: meter
                .i64_gauge("wsgate.broker.connected")
                .with_description("1 while the node is connected to the broker, else 0.")
                .build(),
            reconnects: meter
                .u64_counter("wsgate.broker.reconnects")
                .with_description("Times the node reconnected to the broker after losing it.")
                .build(),
            ever_connected: Arc::new(AtomicBool::new(false)),
        };
        m.connected.record(0, &[system()]);
        m.reconnects.add(0, &[system()]);
        m.sent.add(0, &[system(), operation("publish")]);
        m.sent.add(
            0,
            &[
                system(),
                operation("publish"),
                error_type("broker_unavailable"),
            ],
        );
        m.consumed.add(0, &[system(), operation("process")]);
        m.consumed.add(
            0,
            &[
                system(),
                operation("process"),
                error_type("invalid_message"),
            ],
        );
        m
    }

    /// One publish attempt and how long it took.
    pub fn published(&self, took: Duration, error: Option<&'static str>) {
        let mut attrs = vec![system(), operation("publish")];
        attrs.extend(error.map(error_type));
        self.operation_duration.record(took.as_secs_f64(), &attrs);
        self.sent.add(1, &attrs);
    }

    /// One message received from the broker.
    pub fn consumed(&self, error: Option<&'static str>) {
        let mut attrs = vec![system(), operation("process")];
        attrs.extend(error.map(error_type));
        self.consumed.add(1, &attrs);
    }

    /// Records the connection state; returns whether this is the first connection.
    pub fn connected(&self, up: bool) -> bool {
        self.connected.record(i64::from(up), &[system()]);
        if !up {
            return false;
        }
        let first = !self.ever_connected.swap(true, Ordering::Relaxed);
        if !first {
            self.reconnects.add(1, &[system()]);
        }
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_fold_into_a_bounded_set() {
        assert_eq!(close_code_label(1000), "1000");
        assert_eq!(close_code_label(1009), "1009");
        assert_eq!(close_code_label(1015), "1015");
        assert_eq!(close_code_label(3001), "3xxx");
        assert_eq!(close_code_label(4999), "4xxx");
        assert_eq!(close_code_label(999), "other");
        assert_eq!(close_code_label(2000), "other");
        assert_eq!(close_code_label(65535), "other");
    }

    #[test]
    fn every_error_code_has_an_error_type_of_the_same_name() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorType::from(code).as_str(), code.as_str());
        }
    }
}
