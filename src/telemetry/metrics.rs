//! Every instrument wsgate records, declared in one place.
//!
//! The names, units and label values here are a contract: dashboards, alert rules
//! and users' queries depend on them (the README's metrics table lists them).
//! Instrument names carry neither `_total` nor a unit; the Prometheus exporter
//! derives `websocket_messages_received_total` and `..._seconds` from the kind and
//! unit. Every label value comes from a closed enum (`labels`), so no label can
//! ever carry a room, user, connection or message.
//!
//! Counters with a label are asynchronous counters over atomics (`counters`):
//! the message path pays an atomic add, not an attribute hash. The two
//! histograms recorded per message are bound instruments: their attribute sets
//! are resolved once, at start-up, so a record is a bucket search and one
//! short lock, with no attribute lookup.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{
    BoundHistogram, Counter, Histogram, Meter, ObservableGauge, UpDownCounter,
};

use super::counters::LabelledCounter;
use crate::labels::{CloseReason, DropReason, ErrorType, LabelSet, RejectReason, close_code_label};
use wsgate_protocol::{ClientFrameType, ServerFrameType};

/// Bucket boundaries for message handling and delivery, in seconds: 50 µs to 10 s.
pub(super) const LATENCY_BUCKETS: [f64; 17] = [
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

/// Handles to every instrument. Cheap to clone: one `Arc`.
#[derive(Clone)]
pub struct Metrics(Arc<Instruments>);

struct Instruments {
    connections_active: UpDownCounter<i64>,
    connections_opened: Counter<u64>,
    connections_rejected: LabelledCounter<RejectReason>,
    connection_duration: Histogram<f64>,
    messages_received: LabelledCounter<ClientFrameType>,
    messages_sent: LabelledCounter<ServerFrameType>,
    /// One bound series per client frame type, indexed by `LabelSet::index`.
    handling_duration: Vec<BoundHistogram<f64>>,
    delivery_duration: BoundHistogram<f64>,
    errors: LabelledCounter<ErrorType>,
    dropped: LabelledCounter<DropReason>,
    http_duration: Histogram<f64>,
}

impl Metrics {
    pub fn new(meter: &Meter) -> Self {
        let instruments = Instruments {
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
            connections_rejected: LabelledCounter::new(
                meter,
                "websocket.connections.rejected",
                "WebSocket upgrades refused before the handshake completed, by reason.",
                "{connection}",
                "reason",
            ),
            connection_duration: meter
                .f64_histogram("websocket.connection.duration")
                .with_description(
                    "Lifetime of closed WebSocket connections, by why and how they closed.",
                )
                .with_unit("s")
                .with_boundaries(CONNECTION_BUCKETS.to_vec())
                .build(),
            messages_received: LabelledCounter::new(
                meter,
                "websocket.messages.received",
                "Text and binary frames received from clients, by frame type.",
                "{message}",
                "type",
            ),
            messages_sent: LabelledCounter::new(
                meter,
                "websocket.messages.sent",
                "Frames written to client sockets, by frame type.",
                "{message}",
                "type",
            ),
            handling_duration: {
                let histogram = meter
                    .f64_histogram("websocket.message.handling.duration")
                    .with_description("Time from reading a client frame to having handled it (parsed, checked, handed to the broker, reply queued).")
                    .with_unit("s")
                    .with_boundaries(LATENCY_BUCKETS.to_vec())
                    .build();
                ClientFrameType::ALL
                    .iter()
                    .map(|t| histogram.bind(&[KeyValue::new("type", t.as_str())]))
                    .collect()
            },
            delivery_duration: meter
                .f64_histogram("websocket.message.delivery.duration")
                .with_description("Time from a publish being accepted to the message frame being written to a subscriber's socket; one observation per delivery.")
                .with_unit("s")
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build()
                .bind(&[]),
            errors: LabelledCounter::new(
                meter,
                "websocket.errors",
                "Errors by kind: error frames sent and failures that closed a connection.",
                "{error}",
                "error_type",
            ),
            dropped: LabelledCounter::new(
                meter,
                "websocket.messages.dropped",
                "Frames bound for a client that were never written, by reason.",
                "{message}",
                "reason",
            ),
            http_duration: meter
                .f64_histogram("http.server.request.duration")
                .with_description("Duration of HTTP server requests (WebSocket upgrades excluded).")
                .with_unit("s")
                .with_boundaries(HTTP_BUCKETS.to_vec())
                .build(),
        };
        // The label-less synchronous counters exist at 0 from start-up too, so
        // `rate()` works before the first event; the labelled ones always do.
        instruments.connections_active.add(0, &[]);
        instruments.connections_opened.add(0, &[]);
        Self(Arc::new(instruments))
    }

    pub fn connection_rejected(&self, reason: RejectReason) {
        self.0.connections_rejected.add(reason, 1);
    }

    pub fn connection_opened(&self) {
        self.0.connections_opened.add(1, &[]);
        self.0.connections_active.add(1, &[]);
    }

    /// Records a connection's end. Called exactly once per opened connection, from
    /// a drop guard, so the active count returns to exactly zero.
    pub fn connection_closed(&self, lifetime: Duration, reason: CloseReason, code: u16) {
        self.0.connections_active.add(-1, &[]);
        self.0.connection_duration.record(
            lifetime.as_secs_f64(),
            &[
                KeyValue::new("close_reason", reason.as_str()),
                KeyValue::new("close_code", close_code_label(code)),
            ],
        );
    }

    pub fn message_received(&self, frame_type: ClientFrameType, handling: Duration) {
        self.0.messages_received.add(frame_type, 1);
        self.0.handling_duration[frame_type.index()].record(handling.as_secs_f64());
    }

    pub fn messages_sent(&self, frame_type: ServerFrameType, count: u64) {
        self.0.messages_sent.add(frame_type, count);
    }

    pub fn delivered(&self, latency: Duration) {
        self.0.delivery_duration.record(latency.as_secs_f64());
    }

    pub fn error(&self, error: ErrorType) {
        self.0.errors.add(error, 1);
    }

    pub fn dropped(&self, reason: DropReason, count: u64) {
        if count > 0 {
            self.0.dropped.add(reason, count);
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
            self.0.errors.add(ErrorType::SlowConsumer, kicked as u64);
        }
    }

    /// One HTTP request. `route` is the matched route template (a bounded set),
    /// absent for unmatched paths; `scheme` is the semantic conventions'
    /// required `url.scheme`.
    pub fn http_request(
        &self,
        method: &'static str,
        scheme: &'static str,
        route: Option<String>,
        status: u16,
        took: Duration,
    ) {
        let mut attrs = vec![
            KeyValue::new("http.request.method", method),
            KeyValue::new("http.response.status_code", i64::from(status)),
            KeyValue::new("url.scheme", scheme),
        ];
        if let Some(route) = route {
            attrs.push(KeyValue::new("http.route", route));
        }
        self.0.http_duration.record(took.as_secs_f64(), &attrs);
    }
}

/// Gauges of the node's state, read at collection time through the closures
/// given, so telemetry needs no access to the hub or the outboxes. Keep it
/// alive as long as the state it reads.
pub struct StateGauges {
    _gauges: [ObservableGauge<u64>; 7],
}

/// What [`StateGauges`] reads, each a closure over the node's state.
pub struct StateReaders {
    pub rooms: Box<dyn Fn() -> u64 + Send + Sync>,
    pub subscriptions: Box<dyn Fn() -> u64 + Send + Sync>,
    pub queued_bytes: Box<dyn Fn() -> u64 + Send + Sync>,
    /// Messages and bytes in the in-memory history (0 without it).
    pub history_messages: Box<dyn Fn() -> u64 + Send + Sync>,
    pub history_bytes: Box<dyn Fn() -> u64 + Send + Sync>,
    /// `--max-connections`, a constant: exported so that alerts and dashboards
    /// divide the active connections by the limit this node really has.
    pub connections_limit: u64,
}

/// The release the binary was built from (`Cargo.toml`'s version).
const BUILD_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit it was built from, recorded by `build.rs` (or set by the
/// build as `WSGATE_BUILD_REVISION`), `unknown` when neither could tell (an
/// empty value, as an unset Docker build argument gives, tells nothing).
const BUILD_REVISION: &str = match option_env!("WSGATE_BUILD_REVISION") {
    Some(revision) if !revision.is_empty() => revision,
    _ => "unknown",
};

impl StateGauges {
    pub fn new(meter: &Meter, readers: StateReaders) -> Self {
        let StateReaders {
            rooms,
            subscriptions,
            queued_bytes,
            history_messages,
            history_bytes,
            connections_limit,
        } = readers;
        Self {
            _gauges: [
                meter
                    .u64_observable_gauge("websocket.rooms.active")
                    .with_description("Rooms with at least one subscriber on this node (bounded by --max-rooms).")
                    .with_unit("{room}")
                    .with_callback(move |o| o.observe(rooms(), &[]))
                    .build(),
                meter
                    .u64_observable_gauge("websocket.subscriptions.active")
                    .with_description("Subscriptions of this node's connections, across all rooms.")
                    .with_unit("{subscription}")
                    .with_callback(move |o| o.observe(subscriptions(), &[]))
                    .build(),
                meter
                    .u64_observable_gauge("websocket.send_queue")
                    .with_description("Bytes of frames queued for clients or being written to their sockets, across all connections (each bounded by --send-queue-bytes).")
                    .with_unit("By")
                    .with_callback(move |o| o.observe(queued_bytes(), &[]))
                    .build(),
                meter
                    .u64_observable_gauge("wsgate.history.messages")
                    .with_description("Messages kept in the history, across all rooms: in memory, or the JetStream stream's count with --nats-url (each room bounded by --history-size).")
                    .with_unit("{message}")
                    .with_callback(move |o| o.observe(history_messages(), &[]))
                    .build(),
                meter
                    .u64_observable_gauge("wsgate.history")
                    .with_description("Bytes held by the history: in memory, stored messages and room records; with --nats-url, the JetStream stream's bytes (bounded by --history-max-bytes).")
                    .with_unit("By")
                    .with_callback(move |o| o.observe(history_bytes(), &[]))
                    .build(),
                meter
                    .u64_observable_gauge("wsgate.connections.limit")
                    .with_description("The most WebSocket connections this node accepts at once (--max-connections); further upgrades are refused with reason capacity.")
                    .with_unit("{connection}")
                    .with_callback(move |o| o.observe(connections_limit, &[]))
                    .build(),
                // Always 1: the labels are the information, as with
                // Prometheus's own `prometheus_build_info`. Both values are
                // fixed at compile time, so the series never multiplies.
                meter
                    .u64_observable_gauge("wsgate.build_info")
                    .with_description("Always 1; the labels say which release (version) and git commit (revision) this node runs.")
                    .with_callback(|o| {
                        o.observe(
                            1,
                            &[
                                KeyValue::new("version", BUILD_VERSION),
                                KeyValue::new("revision", BUILD_REVISION),
                            ],
                        )
                    })
                    .build(),
            ],
        }
    }
}
