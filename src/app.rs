//! Start-up and shutdown: the application is built from the configuration
//! (telemetry, broker, admission, state), serves, and shuts down in order.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::ApiAccess;
use crate::admission::{Admission, Policy};
use crate::auth::Verifier;
use crate::broker::{Broker, NatsBroker, NatsSettings};
use crate::config::Config;
use crate::delivery::Delivery;
use crate::history::{History, HistoryLimits};
use crate::hub::Hub;
use crate::message::MessageIds;
use crate::outbox::{QueueLimits, QueuedBytes};
use crate::secret::Secret;
use crate::state::{AppState, Limits, Shared};
use crate::telemetry::{
    BrokerMetrics, HistoryMetrics, MessagingSystem, StateGauges, StateReaders, Telemetry, Warnings,
};

/// A bound, not yet serving, gateway. Tests build it on port 0 and read the port.
pub struct Application {
    listener: TcpListener,
    /// `--admin-listen`: `/metrics` and the probes, apart from client traffic.
    admin_listener: Option<TcpListener>,
    state: AppState,
    shutdown_grace: Duration,
    handshake_timeout: Duration,
}

impl Application {
    /// Binds the listener and assembles the state.
    pub async fn build(config: &Config, telemetry: &Telemetry) -> anyhow::Result<Self> {
        let listener = crate::server::bind(config.listen, config.listen_backlog)
            .with_context(|| format!("binding {}", config.listen))?;
        let admin_listener = match config.admin_listen {
            None => None,
            Some(addr) => Some(
                crate::server::bind(addr, config.listen_backlog)
                    .with_context(|| format!("binding --admin-listen {addr}"))?,
            ),
        };
        let node_id = config.node_id();
        let hub = Arc::new(Hub::new(config.max_rooms as usize));
        let tracer = telemetry.message_tracer(&node_id);
        let metrics = telemetry.metrics.clone();
        let system = match config.nats_url {
            None => MessagingSystem::Wsgate,
            Some(_) => MessagingSystem::Nats,
        };
        let delivery = Arc::new(Delivery::new(
            hub.clone(),
            metrics.clone(),
            tracer.clone(),
            system,
        ));
        let warnings = Warnings::new(&telemetry.meter, config.warning_log_interval);
        let history_metrics = HistoryMetrics::new(&telemetry.meter);
        let limits = (config.history_size > 0).then(|| HistoryLimits {
            size: config.history_size as usize,
            ttl: config.history_ttl,
            max_bytes: usize::try_from(config.history_max_bytes).unwrap_or(usize::MAX),
            meta_ttl: config.history_meta_ttl,
        });
        // In this node's memory alone; with NATS, in a JetStream stream.
        let history = match (&config.nats_url, limits) {
            (None, Some(limits)) => Some(Arc::new(History::new(limits, history_metrics.clone()))),
            _ => None,
        };
        let broker = match config.nats_access()? {
            None => Broker::memory(delivery, history.clone()),
            Some(access) => {
                let settings = NatsSettings {
                    access,
                    prefix: config.nats_subject_prefix.clone(),
                    node_id: node_id.clone(),
                    max_message_bytes: config.max_message_bytes as usize,
                    subscription_buffer: config.nats_subscription_buffer as usize,
                    connect_timeout: config.broker_connect_timeout,
                    warning_log_interval: config.warning_log_interval,
                    history: limits,
                };
                let metrics = BrokerMetrics::new(&telemetry.meter);
                let nats = NatsBroker::connect(&settings, delivery, metrics, warnings.clone());
                Broker::Nats(Arc::new(nats.await?))
            }
        };
        let limits = Limits {
            max_message_bytes: config.max_message_bytes as usize,
            queue: QueueLimits {
                frames: config.send_queue as usize,
                bytes: config.send_queue_bytes as usize,
                policy: config.slow_consumer,
            },
            heartbeat_interval: config.heartbeat_interval,
            heartbeat_timeout: config.heartbeat_timeout,
            write_timeout: config.write_timeout,
            max_msgs_per_sec: config.max_msgs_per_sec,
            max_rooms_per_connection: config.max_rooms_per_connection as usize,
            max_rooms: config.max_rooms as usize,
        };
        let admission = Admission::new(
            verifier(config)?,
            Policy {
                allowed_origins: config.allowed_origins.clone(),
                public_origin: config.public_url.clone(),
                max_per_ip: config.max_connections_per_ip,
                max_per_user: config.max_connections_per_user,
                max_connections: config.max_connections,
            },
        );
        let queued_bytes = QueuedBytes::default();
        let gauges = StateGauges::new(
            &telemetry.meter,
            StateReaders {
                rooms: {
                    let hub = hub.clone();
                    Box::new(move || hub.room_count() as u64)
                },
                subscriptions: {
                    let hub = hub.clone();
                    Box::new(move || hub.subscription_count() as u64)
                },
                queued_bytes: {
                    let queued = queued_bytes.clone();
                    Box::new(move || queued.get())
                },
                history_messages: held(&history, &broker, 0),
                history_bytes: held(&history, &broker, 1),
                connections_limit: u64::from(config.max_connections),
            },
        );
        let shared = Shared {
            limits,
            hub,
            broker,
            history,
            metrics,
            history_metrics,
            tracer,
            registry: telemetry.registry.clone(),
            ids: MessageIds::new(),
            next_conn: AtomicU64::new(1),
            demo_page: crate::demo::render(
                config.jaeger_ui_url.as_deref(),
                config.demo_otlp_endpoint.as_deref(),
            ),
            admission,
            api: ApiAccess::new(
                config.api_key.as_ref().map(Secret::expose),
                config.max_api_concurrency,
                config.request_timeout,
            ),
            sessions: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            queued_bytes,
            _gauges: gauges,
        };
        Ok(Self {
            listener,
            admin_listener,
            state: AppState::new(shared),
            shutdown_grace: config.shutdown_grace,
            handshake_timeout: config.handshake_timeout,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        // A bound TCP listener always has a local address.
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The `--admin-listen` address, as bound (tests ask for port 0).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Serves until `signal` resolves, then shuts down in order, within one
    /// deadline (`--shutdown-grace` from the signal):
    /// 1. stop accepting, `/readyz` turns 503, every session is asked to close
    ///    with 1001 (after what is already queued for it);
    /// 2. wait for sessions, then for in-flight HTTP requests, until the
    ///    deadline, and no longer: a client that stopped reading, or a request
    ///    body that stalled, is left behind, and its backlog is dropped when
    ///    the process exits.
    ///
    /// Returns the deadline. Telemetry is flushed by the caller afterwards (so
    /// the shutdown itself is still observed), bounded by the same deadline.
    pub async fn run_until(
        self,
        signal: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<Instant> {
        let Self {
            listener,
            admin_listener,
            state,
            shutdown_grace,
            handshake_timeout,
        } = self;
        let router = crate::router::router(state.clone(), admin_listener.is_none());
        let token = state.shutdown().clone();
        let failures = Some(state.metrics().clone());
        let public =
            crate::server::serve(listener, router, token.clone(), handshake_timeout, failures);
        let admin = admin_listener.map(|admin| {
            let router = crate::router::admin_router(state.clone());
            crate::server::serve(admin, router, token.clone(), handshake_timeout, None)
        });
        // Both listeners stop on the same token; the admin one serves only
        // short requests, so waiting for both is waiting for the public one.
        let server = tokio::spawn(async move {
            match admin {
                Some(admin) => {
                    tokio::join!(public, admin);
                }
                None => public.await,
            }
        });
        if let Some((history, hub)) = state.history_and_hub() {
            tokio::spawn(sweep(history, hub, token.clone()));
        }
        signal.await;
        let deadline = Instant::now() + shutdown_grace;
        let open = state.hub().room_count();
        tracing::info!(rooms = open, "shutting down: closing sessions with 1001");
        token.cancel();
        state.sessions().close();
        if tokio::time::timeout_at(deadline, state.sessions().wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = state.sessions().len(),
                grace = ?shutdown_grace,
                "sessions still open at the end of the shutdown grace period; leaving them"
            );
        }
        match tokio::time::timeout_at(deadline, server).await {
            Ok(result) => result.context("server task")?,
            Err(_) => tracing::warn!(
                "HTTP requests still in flight at the end of the shutdown grace period; leaving them"
            ),
        }
        tracing::info!("shutdown complete");
        Ok(deadline)
    }
}

/// What the history holds (`which`: 0 messages, 1 bytes): the node's own, or
/// the JetStream stream's (all rooms, all nodes), as last read.
fn held(
    history: &Option<Arc<History>>,
    broker: &Broker,
    which: usize,
) -> Box<dyn Fn() -> u64 + Send + Sync> {
    if let Some(history) = history.clone() {
        return Box::new(move || match which {
            0 => history.message_count(),
            _ => history.byte_count(),
        });
    }
    match broker {
        Broker::Nats(nats) => {
            let state = nats.stream_state.clone();
            Box::new(move || state[which].load(std::sync::atomic::Ordering::Relaxed))
        }
        Broker::Memory(_) => Box::new(|| 0),
    }
}

/// Once a second until shutdown: drops expired history and forgets idle
/// rooms' records (a room with subscribers here keeps its epoch).
async fn sweep(history: Arc<History>, hub: Arc<Hub>, token: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => history.sweep(|room| hub.has_room(room)),
            () = token.cancelled() => return,
        }
    }
}

/// The token verifier the configuration asks for, if any.
fn verifier(config: &Config) -> anyhow::Result<Option<Verifier>> {
    let secret = match (&config.jwt_secret, &config.jwt_secret_file) {
        (Some(secret), _) => Some(secret.expose().as_bytes().to_vec()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --jwt-secret-file {}", path.display()))?;
            Some(text.trim_end_matches(['\r', '\n']).as_bytes().to_vec())
        }
        (None, None) => None,
    };
    Verifier::with_claims(
        secret.as_deref(),
        config.jwt_public_key.as_deref(),
        config.jwt_audience.as_deref(),
        config.jwt_issuer.as_deref(),
    )
    .context("loading JWT keys")
}
