//! A message-path span while it is open: the SDK's own `SpanData`, filled in
//! by wsgate and handed to the SDK's batch span processor when it ends.
//!
//! The SDK's `Tracer` would wrap the same data in a `Span` (built through a
//! `SpanBuilder`, moved into a `Context`, locked on every attribute, and
//! converted back to `SpanData` at the end): with every message traced, those
//! steps were a third of what a span cost in user-space instructions
//! (docs/performance.md). What they do that matters is done here: the trace id
//! and the sampling decision (the provider's own sampler, asked in
//! `spans.rs`), span ids from the SDK's `RandomIdGenerator`, the span limit on
//! attributes (`OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`, read by the SDK's `Config`),
//! and the same instrumentation scope as the provider's tracer. The batch
//! processor, its queue and its counters are the SDK's, shared with the
//! tracer provider (`Shared`), so shutdown flushes both kinds of spans.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceId, TraceState};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, Span, SpanData, SpanEvents, SpanLinks, SpanProcessor,
};

/// Where message-path spans go: the processor the tracer provider also uses.
#[derive(Clone)]
pub struct Sink {
    pub processor: Arc<BatchSpanProcessor>,
    pub scope: InstrumentationScope,
    /// `SpanLimits::max_attributes_per_span`.
    pub attribute_limit: usize,
}

/// An open span.
pub struct Recording {
    data: SpanData,
    attribute_limit: usize,
}

/// What a new span needs besides its attributes.
pub struct Start<'a> {
    pub parent: &'a SpanContext,
    pub span_context: SpanContext,
    pub name: &'static str,
    pub kind: SpanKind,
}

impl Recording {
    pub fn start(sink: &Sink, start: Start<'_>, mut attributes: Vec<KeyValue>) -> Self {
        let dropped = attributes.len().saturating_sub(sink.attribute_limit);
        attributes.truncate(sink.attribute_limit);
        let parent = start.parent;
        let now = opentelemetry::time::now();
        Self {
            data: SpanData {
                span_context: start.span_context,
                parent_span_id: if parent.is_valid() {
                    parent.span_id()
                } else {
                    SpanId::INVALID
                },
                parent_span_is_remote: parent.is_valid() && parent.is_remote(),
                span_kind: start.kind,
                name: Cow::Borrowed(start.name),
                start_time: now,
                end_time: now,
                attributes,
                dropped_attributes_count: dropped as u32,
                events: SpanEvents::default(),
                links: SpanLinks::default(),
                status: Status::Unset,
                instrumentation_scope: sink.scope.clone(),
            },
            attribute_limit: sink.attribute_limit,
        }
    }

    /// A recorded span's context: sampled, local, with the sampler's trace state.
    pub fn context_for(
        trace_id: TraceId,
        span_id: SpanId,
        parent: &SpanContext,
        trace_state: TraceState,
    ) -> SpanContext {
        let flags = parent.trace_flags().with_sampled(true);
        SpanContext::new(trace_id, span_id, flags, false, trace_state)
    }

    pub fn span_context(&self) -> &SpanContext {
        &self.data.span_context
    }

    /// Adds an attribute, or counts it dropped past the span limit, as the
    /// SDK's `Span::set_attribute` does.
    pub fn push(&mut self, attribute: KeyValue) {
        if self.data.attributes.len() < self.attribute_limit {
            self.data.attributes.push(attribute);
        } else {
            self.data.dropped_attributes_count += 1;
        }
    }

    /// Links the span to another span's context (a replayed message's
    /// delivery to the publish that created it).
    pub fn link(&mut self, context: SpanContext) {
        self.data
            .links
            .links
            .push(opentelemetry::trace::Link::with_context(context));
    }

    pub fn set_status(&mut self, status: Status) {
        self.data.status = status;
    }

    /// Ends the span and hands it to the batch processor.
    pub fn end(mut self, sink: &Sink) {
        self.data.end_time = opentelemetry::time::now();
        sink.processor.on_end(self.data);
    }
}

/// The batch processor as the tracer provider's: shared with the message
/// path, which hands it spans directly.
#[derive(Debug)]
pub struct Shared(pub Arc<BatchSpanProcessor>);

impl SpanProcessor for Shared {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.0.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        self.0.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    /// The resource is given to the processor before it is shared
    /// (`Telemetry::from_env`); here it can only be passed on while no one
    /// else holds the processor.
    fn set_resource(&mut self, resource: &Resource) {
        if let Some(processor) = Arc::get_mut(&mut self.0) {
            processor.set_resource(resource);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use opentelemetry::trace::{SpanId, TraceFlags, TraceId};
    use opentelemetry_sdk::trace::SpanExporter;

    use super::*;

    /// Keeps what it is asked to export.
    #[derive(Debug, Clone, Default)]
    struct Kept(Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Kept {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    fn sink(limit: usize) -> (Sink, Kept) {
        let kept = Kept::default();
        let processor = BatchSpanProcessor::builder(kept.clone()).build();
        let sink = Sink {
            processor: Arc::new(processor),
            scope: InstrumentationScope::builder("wsgate").build(),
            attribute_limit: limit,
        };
        (sink, kept)
    }

    fn attributes(n: i64) -> Vec<KeyValue> {
        (0..n).map(|i| KeyValue::new("n", i)).collect()
    }

    #[test]
    fn a_span_ends_in_the_batch_processor_as_the_sdk_would_have_built_it() {
        let (sink, kept) = sink(128);
        let parent = SpanContext::new(
            TraceId::from(7),
            SpanId::from(8),
            TraceFlags::SAMPLED,
            true,
            TraceState::NONE,
        );
        let span_context =
            Recording::context_for(TraceId::from(7), SpanId::from(9), &parent, TraceState::NONE);
        let start = Start {
            parent: &parent,
            span_context,
            name: "process",
            kind: SpanKind::Consumer,
        };
        let mut recording = Recording::start(&sink, start, attributes(2));
        recording.push(KeyValue::new("late", true));
        recording.set_status(Status::error("broken"));
        recording.end(&sink);
        sink.processor.force_flush().expect("flushed");
        let spans = kept.0.lock().unwrap();
        let [span] = spans.as_slice() else {
            panic!("one span: {spans:?}");
        };
        assert_eq!(span.name, "process");
        assert_eq!(span.span_kind, SpanKind::Consumer);
        assert_eq!(span.span_context.trace_id(), TraceId::from(7));
        assert_eq!(span.span_context.span_id(), SpanId::from(9));
        assert!(span.span_context.is_sampled() && !span.span_context.is_remote());
        assert_eq!(span.parent_span_id, SpanId::from(8));
        assert!(span.parent_span_is_remote);
        assert_eq!(span.attributes.len(), 3);
        assert_eq!(span.dropped_attributes_count, 0);
        assert_eq!(span.status, Status::error("broken"));
        assert_eq!(span.instrumentation_scope.name(), "wsgate");
        assert!(span.end_time >= span.start_time);
    }

    #[test]
    fn attributes_past_the_span_limit_are_counted_dropped() {
        let (sink, kept) = sink(3);
        let root = SpanContext::empty_context();
        let start = Start {
            parent: &root,
            span_context: Recording::context_for(
                TraceId::from(1),
                SpanId::from(2),
                &root,
                TraceState::NONE,
            ),
            name: "send",
            kind: SpanKind::Producer,
        };
        let mut recording = Recording::start(&sink, start, attributes(5));
        recording.push(KeyValue::new("late", 1));
        recording.end(&sink);
        sink.processor.force_flush().expect("flushed");
        let spans = kept.0.lock().unwrap();
        assert_eq!(spans[0].attributes, attributes(3));
        assert_eq!(spans[0].dropped_attributes_count, 3);
        assert_eq!(spans[0].parent_span_id, SpanId::INVALID, "a root");
        assert!(!spans[0].parent_span_is_remote);
    }
}
