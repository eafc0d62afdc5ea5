//! The state every request and connection shares: limits, the hub, the
//! broker, telemetry handles, admission and the shutdown signal. Built once at
//! start-up (`app`), read by the HTTP and WebSocket layers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::Admission;
use crate::admission::ApiAccess;
use crate::broker::Broker;
use crate::history::History;
use crate::hub::{ConnId, Hub};
use crate::message::MessageIds;
use crate::outbox::{QueueLimits, QueuedBytes};
use crate::telemetry::{HistoryMetrics, MessageTracer, Metrics, StateGauges};

/// State shared by every request and connection. Cloning is an `Arc` bump.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

pub(crate) struct Shared {
    pub(crate) limits: Limits,
    pub(crate) hub: Arc<Hub>,
    pub(crate) broker: Broker,
    /// Each room's recent messages, with `--history-size`.
    pub(crate) history: Option<Arc<History>>,
    pub(crate) metrics: Metrics,
    pub(crate) history_metrics: HistoryMetrics,
    pub(crate) tracer: MessageTracer,
    /// Rendered by `/metrics`.
    pub(crate) registry: prometheus::Registry,
    pub(crate) ids: MessageIds,
    pub(crate) next_conn: AtomicU64,
    /// The demo page, rendered once at start-up.
    pub(crate) demo_page: String,
    /// Who may open a WebSocket: origins, tokens, per-IP, per-user and total
    /// caps.
    pub(crate) admission: Admission,
    /// POST /api/publish: the `--api-key` digest, concurrency slots and body
    /// deadline.
    pub(crate) api: ApiAccess,
    /// Every session task: axum's graceful shutdown does not wait for upgraded
    /// connections, so shutdown waits on this.
    pub(crate) sessions: TaskTracker,
    /// Cancelled when shutdown begins.
    pub(crate) shutdown: CancellationToken,
    /// Bytes held in every connection's outbox.
    pub(crate) queued_bytes: QueuedBytes,
    /// Rooms, subscriptions and queued bytes, observed at collection time.
    pub(crate) _gauges: StateGauges,
}

/// Per-connection limits, copied from the configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_message_bytes: usize,
    /// A connection's outbox bounds (`--send-queue`, `--send-queue-bytes`,
    /// `--slow-consumer`).
    pub(crate) queue: QueueLimits,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) heartbeat_timeout: Duration,
    /// How long a socket may accept no bytes before it is closed.
    pub(crate) write_timeout: Duration,
    /// Frames per second per connection; 0 = unlimited.
    pub(crate) max_msgs_per_sec: u32,
    pub(crate) max_rooms_per_connection: usize,
    /// Rooms this node may hold (`--max-rooms`); the hub enforces it exactly.
    pub(crate) max_rooms: usize,
}

impl AppState {
    pub(crate) fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
    pub(crate) fn limits(&self) -> &Limits {
        &self.0.limits
    }
    pub(crate) fn max_message_bytes(&self) -> usize {
        self.0.limits.max_message_bytes
    }
    pub(crate) fn hub(&self) -> &Hub {
        &self.0.hub
    }
    pub(crate) fn broker(&self) -> &Broker {
        &self.0.broker
    }
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }
    pub(crate) fn history(&self) -> Option<&History> {
        self.0.history.as_deref()
    }
    /// Whether rooms keep history: in this node's memory, or in JetStream.
    pub(crate) fn keeps_history(&self) -> bool {
        self.0.history.is_some() || self.0.broker.stream_history().is_some()
    }
    /// The history and the hub, owned, for the task that sweeps the history.
    pub(crate) fn history_and_hub(&self) -> Option<(Arc<History>, Arc<Hub>)> {
        let history = self.0.history.clone()?;
        Some((history, self.0.hub.clone()))
    }
    pub(crate) fn history_metrics(&self) -> &HistoryMetrics {
        &self.0.history_metrics
    }
    pub(crate) fn tracer(&self) -> &MessageTracer {
        &self.0.tracer
    }
    pub(crate) fn registry(&self) -> &prometheus::Registry {
        &self.0.registry
    }
    pub(crate) fn sessions(&self) -> &TaskTracker {
        &self.0.sessions
    }
    pub(crate) fn shutdown(&self) -> &CancellationToken {
        &self.0.shutdown
    }
    pub(crate) fn queued_bytes(&self) -> &QueuedBytes {
        &self.0.queued_bytes
    }
    pub(crate) fn demo_page(&self) -> &str {
        &self.0.demo_page
    }
    pub(crate) fn next_message_id(&self) -> Arc<str> {
        self.0.ids.next_id()
    }
    pub(crate) fn next_conn_id(&self) -> ConnId {
        self.0.next_conn.fetch_add(1, Ordering::Relaxed)
    }
    pub(crate) fn admission(&self) -> &Admission {
        &self.0.admission
    }
    pub(crate) fn api(&self) -> &ApiAccess {
        &self.0.api
    }
}
