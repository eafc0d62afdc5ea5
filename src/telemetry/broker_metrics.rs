//! The broker's instruments, following the OpenTelemetry messaging semantic
//! conventions. Only the NATS broker records them: the in-memory broker is a
//! function call.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{
    Counter, Gauge, Histogram, Meter, ObservableCounter, ObservableGauge,
};

use super::labels::{ConsumeError, LabelSet as _};
use super::metrics::LATENCY_BUCKETS;

/// Handles to the broker's instruments.
#[derive(Clone)]
pub struct BrokerMetrics {
    /// For the instruments the broker registers once it exists (the room gauge).
    meter: Meter,
    operation_duration: Histogram<f64>,
    sent: Counter<u64>,
    /// Counted per message from NATS, so kept in atomics (one add) and read
    /// at collection, like `LabelledCounter`; here the delivered messages are
    /// the series without `error.type`.
    consumed: Arc<Consumed>,
    /// Keeps the consumed counter's callback registered.
    _consumed: ObservableCounter<u64>,
    connected: Gauge<i64>,
    reconnects: Counter<u64>,
    /// Whether the client has ever connected, so a later `Connected` event is
    /// counted as a reconnect.
    ever_connected: Arc<AtomicBool>,
}

/// Messages received from the broker: delivered, and not, by reason.
#[derive(Default)]
struct Consumed {
    delivered: AtomicU64,
    /// Indexed by `ConsumeError::index`.
    failed: [AtomicU64; ConsumeError::ALL.len()],
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
        let consumed = Arc::new(Consumed::default());
        let m = Self {
            meter: meter.clone(),
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
            consumed: consumed.clone(),
            _consumed: meter
                .u64_observable_counter("messaging.client.consumed.messages")
                .with_description("Messages the node received from the broker; error.type is set on ones it did not deliver.")
                .with_unit("{message}")
                .with_callback(move |observer| {
                    let attrs = [system(), operation("process")];
                    observer.observe(consumed.delivered.load(Ordering::Relaxed), &attrs);
                    for error in ConsumeError::ALL {
                        let count = consumed.failed[error.index()].load(Ordering::Relaxed);
                        let [a, b] = attrs.clone();
                        observer.observe(count, &[a, b, error_type(error.as_str())]);
                    }
                })
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
        m
    }

    /// One publish attempt and how long it took.
    pub fn published(&self, took: Duration, error: Option<&'static str>) {
        let mut attrs = vec![system(), operation("publish")];
        attrs.extend(error.map(error_type));
        self.operation_duration.record(took.as_secs_f64(), &attrs);
        self.sent.add(1, &attrs);
    }

    /// One message received from the broker: delivered, or not and why.
    pub fn consumed(&self, error: Option<ConsumeError>) {
        let count = match error {
            None => &self.consumed.delivered,
            Some(error) => &self.consumed.failed[error.index()],
        };
        count.fetch_add(1, Ordering::Relaxed);
    }

    /// Reports `rooms()` as `wsgate_broker_rooms` at each collection: the
    /// rooms this node holds broker interest in. Keep the returned handle as
    /// long as the rooms exist.
    pub fn observe_rooms(
        &self,
        rooms: impl Fn() -> usize + Send + Sync + 'static,
    ) -> ObservableGauge<u64> {
        self.meter
            .u64_observable_gauge("wsgate.broker.rooms")
            .with_description("Rooms this node listens to on the broker (subscribed, or being subscribed): one NATS subscription each.")
            .with_unit("{room}")
            .with_callback(move |observer| observer.observe(rooms() as u64, &[system()]))
            .build()
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
