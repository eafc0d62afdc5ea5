//! The broker's instruments, following the OpenTelemetry messaging semantic
//! conventions. Only the NATS broker records them: the in-memory broker is a
//! function call.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter};

use super::metrics::LATENCY_BUCKETS;

/// Handles to the broker's instruments.
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
