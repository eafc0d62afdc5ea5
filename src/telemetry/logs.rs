//! Log lines: `tracing` events to stderr, as text or JSON, each carrying the
//! `trace_id` and `span_id` of the OpenTelemetry context it was logged in.
//!
//! The ids come from `opentelemetry::Context::current()`, which covers both kinds
//! of span wsgate has: `tracing` spans (tracing-opentelemetry makes their context
//! current on entry) and message-path spans (attached where a line about a
//! message is logged).

use std::fmt::Write as _;

use opentelemetry::trace::TraceContextExt as _;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The default filter when `RUST_LOG` is unset. The OTel SDK's own per-batch
/// export errors are silenced: wsgate counts and rate-limits those itself.
/// So are async-nats's INFO lines: it logs every client event, one per message
/// dropped from a full subscription buffer among them (a flood anyone who can
/// publish to NATS can cause); wsgate logs the events that matter itself,
/// rate-limited, and counts the drops.
pub const DEFAULT_FILTER: &str = "info,opentelemetry_sdk=warn,async_nats=warn";

/// Wraps a formatter and adds the current trace and span ids to each line.
pub struct WithTraceIds<F> {
    inner: F,
    format: LogFormat,
}

impl<F> WithTraceIds<F> {
    pub fn new(inner: F, format: LogFormat) -> Self {
        Self { inner, format }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let cx = opentelemetry::Context::current();
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let body = line.trim_end_matches('\n');
        match self.format {
            LogFormat::Text => {
                writeln!(
                    writer,
                    "{body} trace_id={} span_id={}",
                    sc.trace_id(),
                    sc.span_id()
                )
            }
            LogFormat::Json => {
                // The JSON formatter writes one object per line; reopen it.
                let Some(open) = body.strip_suffix('}') else {
                    return writeln!(writer, "{body}");
                };
                let mut out = String::with_capacity(open.len() + 80);
                out.push_str(open);
                let _ = write!(
                    out,
                    r#","trace_id":"{}","span_id":"{}"}}"#,
                    sc.trace_id(),
                    sc.span_id()
                );
                writeln!(writer, "{out}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::{EnvFilter, Layer};

    use super::DEFAULT_FILTER;

    /// Counts the events that pass the filter.
    struct Count(Arc<AtomicUsize>);

    impl<S: tracing::Subscriber> Layer<S> for Count {
        fn on_event(&self, _: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[track_caller]
    fn check(log: impl FnOnce(), expected: usize) {
        let count = Arc::new(AtomicUsize::new(0));
        let filter = EnvFilter::try_new(DEFAULT_FILTER).expect("a valid filter");
        let subscriber =
            tracing_subscriber::registry().with(Count(count.clone()).with_filter(filter));
        tracing::subscriber::with_default(subscriber, log);
        assert_eq!(count.load(Ordering::Relaxed), expected);
    }

    #[test]
    fn the_default_filter_keeps_wsgate_and_drops_library_chatter() {
        check(|| tracing::info!(target: "wsgate::broker", "ours"), 1);
        check(
            || tracing::info!(target: "async_nats", "event: slow consumers for subscription 2"),
            0,
        );
        check(
            || tracing::info!(target: "async_nats::connector", "connected successfully"),
            0,
        );
        check(
            || tracing::warn!(target: "async_nats", "a library warning"),
            1,
        );
        check(|| tracing::info!(target: "opentelemetry_sdk", "batch"), 0);
    }
}
