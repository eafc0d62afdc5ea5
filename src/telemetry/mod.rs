//! Telemetry: providers, their configuration from `OTEL_*`, and their shutdown.
//!
//! | variable | effect |
//! |---|---|
//! | `OTEL_SDK_DISABLED=true` | no-op meter and tracer: no OTel series on `/metrics`, no spans |
//! | `OTEL_TRACES_EXPORTER` | `otlp`, or `none`: no spans are made; an incoming trace context still reaches delivered frames. Unset: `otlp` when an endpoint is set, else `none` with one INFO line at start |
//! | `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL` | `http/protobuf` (default) or `grpc` |
//! | `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`, `_HEADERS`, `_COMPRESSION` (`gzip`), `_TIMEOUT`, `_INSECURE` | read by wsgate's exporter (`otlp/settings.rs`) |
//! | `OTEL_EXPORTER_OTLP_(TRACES_)CERTIFICATE`, `_CLIENT_CERTIFICATE`, `_CLIENT_KEY` | TLS, read by wsgate (`tls.rs`) |
//! | `OTEL_TRACES_SAMPLER(_ARG)`, `OTEL_BSP_*` | read by the SDK; wsgate's own defaults for the queue and batch sizes |
//! | `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` | resource; defaults `wsgate` and the node id |
//!
//! The SDK reads most of these itself, so wsgate never calls `with_sampler`,
//! `with_endpoint` or the like, which would silently override them.

mod broker_metrics;
mod counters;
mod export;
mod history_metrics;
mod logs;
mod metrics;
mod otlp;
mod process;
pub mod propagation;
mod recording;
mod replay;
mod spans;
mod tls;
mod warnings;

use std::sync::Arc;

use anyhow::Context as _;
use opentelemetry::InstrumentationScope;
use opentelemetry::metrics::{Meter, MeterProvider as _, NoopMeterProvider};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::{
    BatchConfig, BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, ShouldSample,
    SpanProcessor as _,
};
use prometheus::Registry;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

pub(crate) use crate::labels::{
    CloseReason, ConsumeError, DropReason, ErrorType, RejectReason, WarningKind,
};
pub(crate) use broker_metrics::{BrokerMetrics, BrokerState, ObservedBroker};
pub(crate) use export::EXPORT_FAILED;
pub(crate) use history_metrics::HistoryMetrics;
pub(crate) use metrics::{Metrics, StateGauges, StateReaders};
pub(crate) use replay::ReplaySpan;
pub(crate) use spans::{Accepted, MessageTracer, MessagingSystem, Publisher};
pub(crate) use warnings::Warnings;

pub use logs::LogFormat;

/// The instrumentation scope of everything wsgate records.
const SCOPE: &str = "wsgate";

/// The providers and the handles the application records through. Shut it down
/// explicitly ([`Telemetry::shutdown`]) so buffered spans are exported.
pub struct Telemetry {
    pub metrics: Metrics,
    /// What the message path traces with: the sampler the tracer provider
    /// was built with (the SDK's own, from `OTEL_TRACES_SAMPLER`) and where its
    /// spans go; `None` when no span is ever recorded.
    traced: Option<(Box<dyn ShouldSample>, recording::Sink)>,
    /// For instruments created later, such as the broker's.
    pub meter: Meter,
    /// The registry `/metrics` renders: OTel instruments and process metrics.
    pub registry: Registry,
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
    /// Traces are off because nothing configured them (not because the user
    /// said `none`): [`Telemetry::init_logs`] says how to turn them on.
    traces_not_configured: bool,
}

impl Telemetry {
    /// Builds telemetry from the `OTEL_*` environment.
    pub fn from_env(node_id: &str) -> anyhow::Result<Self> {
        let registry = new_registry();
        if sdk_disabled() {
            return Ok(Self::disabled(registry));
        }
        let resource = export::resource(node_id);
        let meter_provider = prometheus_meter_provider(&registry, resource.clone())?;
        // The SDK's own diagnostics record through the global meter provider:
        // with it set, the batch span processor's
        // `otel.sdk.processor.span.processed` (spans exported, and spans
        // dropped because its queue was full) reaches `/metrics`. It must be
        // set before the tracer provider builds that processor.
        opentelemetry::global::set_meter_provider(meter_provider.clone());
        let meter = meter_provider.meter(SCOPE);
        match export::traces_exporter()? {
            export::TracesExporter::Otlp => {}
            exporter => {
                // Nothing would receive spans, so none are made: a no-op
                // tracer still passes an incoming trace context through to
                // delivered frames, and the message path skips span and id
                // work entirely.
                let mut telemetry = Self::untraced(registry, meter, Some(meter_provider));
                telemetry.traces_not_configured = exporter == export::TracesExporter::NotConfigured;
                return Ok(telemetry);
            }
        }
        let exporter = export::otlp_exporter()?;
        let counted = export::CountingExporter::new(exporter, span_export_counter(&meter));
        // The same sampler and span limits the provider's builder reads from
        // the environment (never set in code, which would override
        // OTEL_TRACES_SAMPLER): the message path asks the sampler before
        // building any span.
        let config = opentelemetry_sdk::trace::Config::default();
        let mut processor = BatchSpanProcessor::builder(counted)
            .with_batch_config(batch_config())
            .build();
        // Before it is shared: the exporter needs the resource.
        processor.set_resource(&resource);
        let processor = Arc::new(processor);
        let tracer_provider = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_span_processor(recording::Shared(processor.clone()))
            .build();
        let sink = recording::Sink {
            processor,
            scope: InstrumentationScope::builder(SCOPE).build(),
            attribute_limit: config.span_limits.max_attributes_per_span as usize,
        };
        Ok(Self {
            metrics: Metrics::new(&meter),
            traced: Some((config.sampler, sink)),
            meter,
            registry,
            tracer_provider: Some(tracer_provider),
            meter_provider: Some(meter_provider),
            traces_not_configured: false,
        })
    }

    /// Metrics into a fresh registry, no tracing: for tests and embedding, where
    /// several gateways share one process and nothing global may be touched.
    pub fn metrics_only() -> anyhow::Result<Self> {
        let registry = new_registry();
        let meter_provider = prometheus_meter_provider(&registry, export::resource("test"))?;
        let meter = meter_provider.meter(SCOPE);
        Ok(Self::untraced(registry, meter, Some(meter_provider)))
    }

    fn disabled(registry: Registry) -> Self {
        Self::untraced(registry, NoopMeterProvider::new().meter(SCOPE), None)
    }

    /// Telemetry that never records a span; an incoming trace context still
    /// passes through to delivered frames.
    fn untraced(
        registry: Registry,
        meter: Meter,
        meter_provider: Option<SdkMeterProvider>,
    ) -> Self {
        Self {
            metrics: Metrics::new(&meter),
            traced: None,
            meter,
            registry,
            tracer_provider: None,
            meter_provider,
            traces_not_configured: false,
        }
    }

    /// The message-path tracer for a node.
    pub fn message_tracer(&self, node_id: &str) -> MessageTracer {
        let traced = self
            .traced
            .as_ref()
            .map(|(sampler, sink)| (sampler.box_clone(), sink.clone()));
        MessageTracer::new(traced, node_id)
    }

    /// Installs the global `tracing` subscriber: logs with trace ids, and
    /// `tracing` spans (HTTP requests) exported through the same tracer provider.
    pub fn init_logs(&self, format: LogFormat) -> anyhow::Result<()> {
        let filter = EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(logs::DEFAULT_FILTER))
            .context("parsing RUST_LOG")?;
        let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
        let fmt = match format {
            LogFormat::Text => fmt
                .event_format(logs::WithTraceIds::new(
                    tracing_subscriber::fmt::format(),
                    format,
                ))
                .boxed(),
            LogFormat::Json => fmt
                .json()
                .event_format(logs::WithTraceIds::new(
                    tracing_subscriber::fmt::format().json(),
                    format,
                ))
                .boxed(),
        };
        // RUST_LOG filters log lines only; which spans are exported is decided
        // by the OTel layer's own filter and the sampler.
        let fmt = fmt.with_filter(filter);
        // Library internals (hyper, h2, tonic, the exporter's own HTTP client)
        // stay out of traces; wsgate's own spans are what users want to see.
        let otel = self.tracer_provider.as_ref().map(|provider| {
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(SCOPE))
                // A `Targets` filter, not a closure: it tells the subscriber its
                // most verbose level (INFO). Without that hint, `log` records
                // from libraries (tungstenite logs every frame at TRACE) would
                // all be built and dispatched just to be dropped, which once
                // cost more CPU than everything else per delivery.
                .with_filter(
                    tracing_subscriber::filter::Targets::new()
                        .with_target("wsgate", tracing::Level::INFO),
                )
        });
        tracing_subscriber::registry()
            .with(fmt)
            .with(otel)
            .try_init()
            .context("installing the log subscriber")?;
        if self.traces_not_configured {
            tracing::info!(
                "traces are off: no OTLP endpoint is configured; set \
                 OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) to export \
                 spans, or OTEL_TRACES_EXPORTER=none to silence this line"
            );
        }
        Ok(())
    }

    /// Flushes and stops the providers by `deadline`: the tracer first (its
    /// last batch may still count into metrics), the meter last. The SDK's
    /// shutdown blocks, and with the gRPC exporter it needs the runtime's other
    /// workers free, so it runs on a blocking thread; a collector that hangs
    /// costs the spans still queued, never a late exit.
    pub async fn shutdown_by(self, deadline: tokio::time::Instant) {
        let (tracer, meter) = (self.tracer_provider, self.meter_provider);
        let budget = deadline.saturating_duration_since(tokio::time::Instant::now());
        let done = tokio::task::spawn_blocking(move || {
            if let Some(provider) = tracer
                && let Err(e) = provider.shutdown_with_timeout(budget)
            {
                tracing::warn!(error = %e, "tracer provider shutdown");
            }
            if let Some(provider) = meter
                && let Err(e) = provider.shutdown()
            {
                tracing::warn!(error = %e, "meter provider shutdown");
            }
        });
        match tokio::time::timeout_at(deadline, done).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "telemetry shutdown task failed"),
            Err(_) => tracing::warn!("telemetry flush did not finish by the shutdown deadline"),
        }
    }
}

/// The span queue wsgate ships with, unless `OTEL_BSP_MAX_QUEUE_SIZE` says
/// otherwise: the backlog of a node running flat out with every message
/// traced (about 160,000 spans a second on one core) while its exporter, on
/// the same core, waits for a busy collector. 32,768 dropped spans in one
/// bench round of ten (about 43,000 were needed); this holds 1.5 times that.
/// The SDK allocates the queue's slots up front (about 350 bytes each): 23 MiB
/// of memory when traces are on, plus about 0.5 KiB of attributes per span
/// waiting in it.
pub const SPAN_QUEUE: usize = 65_536;

/// Spans per export request unless `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` says
/// otherwise: four times the SDK's 512, so a busy node sends a request per
/// 4,096 spans rather than per 512 (a gRPC or HTTP round trip each).
pub const SPAN_BATCH: usize = 4_096;

/// The batch span processor's configuration: the SDK reads every
/// `OTEL_BSP_*` variable; wsgate's own defaults replace the SDK's for the
/// queue and batch sizes, which the SDK sizes for far fewer spans a second.
fn batch_config() -> BatchConfig {
    let mut config = BatchConfigBuilder::default();
    if export::env("OTEL_BSP_MAX_QUEUE_SIZE").is_none() {
        config = config.with_max_queue_size(SPAN_QUEUE);
    }
    if export::env("OTEL_BSP_MAX_EXPORT_BATCH_SIZE").is_none() {
        config = config.with_max_export_batch_size(SPAN_BATCH);
    }
    config.build()
}

/// `OTEL_SDK_DISABLED`, which the Rust SDK does not read itself.
fn sdk_disabled() -> bool {
    std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

fn new_registry() -> Registry {
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    {
        let process = prometheus::process_collector::ProcessCollector::for_self();
        // Registering into a fresh registry only fails on a duplicate, which
        // cannot happen here; the process metrics are a nicety, not a contract.
        let _ = registry.register(Box::new(process::Cached::new(process)));
    }
    registry
}

fn prometheus_meter_provider(
    registry: &Registry,
    resource: opentelemetry_sdk::Resource,
) -> anyhow::Result<SdkMeterProvider> {
    let exporter = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        // One scope; `otel_scope_*` labels on every series would only add noise.
        .scope_info_enabled(false)
        .build()
        .context("building the Prometheus exporter")?;
    Ok(SdkMeterProvider::builder()
        .with_reader(exporter)
        .with_resource(resource)
        .build())
}

fn span_export_counter(meter: &Meter) -> opentelemetry::metrics::Counter<u64> {
    let counter = meter
        .u64_counter("otel.sdk.exporter.span.exported")
        .with_description(
            "Spans handed to the OTLP exporter; error.type is set on those that failed to export.",
        )
        .with_unit("{span}")
        .build();
    counter.add(0, &[]);
    counter.add(
        0,
        &[opentelemetry::KeyValue::new("error.type", EXPORT_FAILED)],
    );
    counter
}
