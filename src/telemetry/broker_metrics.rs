//! The broker's instruments, following the OpenTelemetry messaging semantic
//! conventions. Only the NATS broker records them: the in-memory broker is a
//! function call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, ObservableCounter, ObservableGauge};

use super::metrics::LATENCY_BUCKETS;
use crate::labels::{ConsumeError, LabelSet as _};

/// Handles to the broker's instruments.
#[derive(Clone)]
pub struct BrokerMetrics {
    /// For the instruments that read the broker client once it exists.
    meter: Meter,
    operation_duration: Histogram<f64>,
    sent: Counter<u64>,
    /// Counted per message from NATS, so kept in atomics (one add) and read
    /// at collection, like `LabelledCounter`; here the delivered messages are
    /// the series without `error.type`.
    consumed: Arc<Consumed>,
    /// Keeps the consumed counter's callback registered.
    _consumed: ObservableCounter<u64>,
}

/// The broker client's state, read at each collection. Read, not recorded
/// from the client's events: async-nats hands those over a channel it fills
/// without waiting, so in a flood (one event per dropped message) a
/// disconnection's event can be lost, and a gauge fed by events would say
/// "connected" through an outage.
#[derive(Debug, Clone, Copy, Default)]
pub struct BrokerState {
    pub connected: bool,
    /// Connections made so far, the first included.
    pub connects: u64,
    /// Messages the client read from the broker, for any subscription.
    pub received: u64,
    /// Rooms the node listens to.
    pub rooms: usize,
}

/// Keeps the instruments that read [`BrokerState`] registered.
pub struct ObservedBroker {
    _instruments: (
        ObservableGauge<i64>,
        ObservableCounter<u64>,
        ObservableCounter<u64>,
        ObservableGauge<u64>,
    ),
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
        };
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

    /// Reports the client's state, from `probe` at each collection: the
    /// connection gauge, reconnects, messages received and rooms.
    pub fn observe(
        &self,
        probe: impl Fn() -> BrokerState + Send + Sync + 'static,
    ) -> ObservedBroker {
        let probe: Arc<dyn Fn() -> BrokerState + Send + Sync> = Arc::new(probe);
        let m = &self.meter;
        let connected = probe.clone();
        let connected = m
            .i64_observable_gauge("wsgate.broker.connected")
            .with_description("1 while the node is connected to the broker, else 0.")
            .with_callback(move |o| o.observe(i64::from(connected().connected), &[system()]))
            .build();
        let reconnects = probe.clone();
        let reconnects = m
            .u64_observable_counter("wsgate.broker.reconnects")
            .with_description("Times the node reconnected to the broker after losing it.")
            .with_callback(move |o| o.observe(reconnects().connects.saturating_sub(1), &[system()]))
            .build();
        let received = probe.clone();
        let received = m
            .u64_observable_counter("wsgate.broker.received.messages")
            .with_description("Messages the broker client read from the server, for every subscription: those the node consumed, those the client dropped (slow_consumer, not all of them reported), and two per subscribe confirmation.")
            .with_unit("{message}")
            .with_callback(move |o| o.observe(received().received, &[system()]))
            .build();
        let rooms = m
            .u64_observable_gauge("wsgate.broker.rooms")
            .with_description("Rooms this node listens to on the broker (subscribed, or being subscribed): one NATS subscription each.")
            .with_unit("{room}")
            .with_callback(move |o| o.observe(probe().rooms as u64, &[system()]))
            .build();
        ObservedBroker {
            _instruments: (connected, reconnects, received, rooms),
        }
    }
}
