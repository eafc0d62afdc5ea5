//! The spans of a message's journey, following the OTel messaging conventions:
//!
//! ```text
//! client span (from the frame's traceparent, or none: a new root)
//! └─ send       PRODUCER  the node accepting the message: a `publish` frame's
//!    │                    handling, or the HTTP request's SERVER span's child
//!    └─ process CONSUMER  one per delivering node: fan-out to local subscribers
//! ```
//!
//! A `publish` frame's handling span and its `send` span are one span: the
//! messaging conventions let the PRODUCER span be the message's creation
//! context, and a separate SERVER span per frame cost a third of the export
//! work of every traced message (issue 15; docs/performance.md).
//!
//! These are built with the OpenTelemetry tracer API directly, not `tracing`
//! spans, and the sampling decision comes first: the configured sampler (the
//! SDK's own, from `OTEL_TRACES_SAMPLER`) is asked before anything is built. An
//! unsampled message creates no span and no ids; it only passes the
//! publisher's trace context, if it sent one, through to delivered frames.
//! A span's attributes are all given when it is built, in one vector of the
//! right size, with static keys and the room's shared strings.

use std::sync::Arc;

use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt as _, TraceId, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{
    IdGenerator as _, RandomIdGenerator, SamplingDecision, SdkTracer, ShouldSample,
};

use crate::hub::{ConnId, Fanout};
use wsgate_protocol::room::RoomKey;

/// Which broker carries messages: the `messaging.system` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessagingSystem {
    /// The embedded in-memory broker.
    Wsgate,
    /// NATS.
    Nats,
}

impl MessagingSystem {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Wsgate => "wsgate",
            Self::Nats => "nats",
        }
    }
}

/// Who handed a message to the node: what the `send` span says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publisher {
    /// A `publish` frame on this WebSocket connection.
    WebSocket(ConnId),
    /// `POST /api/publish`: the request has its own SERVER span.
    Http,
}

/// Starts the spans of the message path. Cheap to clone.
#[derive(Clone)]
pub struct MessageTracer(Arc<Inner>);

struct Inner {
    /// The SDK's tracer and the sampler its provider uses; `None` when no span
    /// is ever recorded (telemetry disabled, or no trace exporter).
    traced: Option<(SdkTracer, Box<dyn ShouldSample>)>,
    ids: RandomIdGenerator,
    node_id: Arc<str>,
}

thread_local! {
    /// The trace id the next root span on this thread must use; see
    /// [`PresetIdGenerator`].
    static NEXT_TRACE_ID: std::cell::Cell<Option<TraceId>> = const { std::cell::Cell::new(None) };
}

/// The tracer provider's id generator: random ids, except that a root span
/// started by [`MessageTracer`] gets the trace id its sampling decision was
/// made with. Without it, the pre-check and the SDK would each draw a trace id
/// and a ratio sampler would be applied twice (1% would become 0.01%).
#[derive(Debug, Default)]
pub struct PresetIdGenerator {
    random: RandomIdGenerator,
}

impl opentelemetry_sdk::trace::IdGenerator for PresetIdGenerator {
    fn new_trace_id(&self) -> TraceId {
        NEXT_TRACE_ID
            .take()
            .unwrap_or_else(|| self.random.new_trace_id())
    }

    fn new_span_id(&self) -> opentelemetry::trace::SpanId {
        self.random.new_span_id()
    }
}

/// One span of a message, or the context it would have continued when the
/// message is not traced. It ends only a span it created.
pub struct MessageSpan {
    cx: Context,
    owned: bool,
}

impl MessageTracer {
    /// `traced` is the tracer and its provider's sampler, or `None` for a
    /// node that makes no spans.
    pub fn new(traced: Option<(SdkTracer, Box<dyn ShouldSample>)>, node_id: &str) -> Self {
        Self(Arc::new(Inner {
            traced,
            ids: RandomIdGenerator::default(),
            node_id: node_id.into(),
        }))
    }

    /// Asks the sampler about a span under `parent`. Returns the trace id the
    /// span must use when it is to be recorded: the parent's, or a new root's,
    /// so the SDK, asking its identical sampler again, decides the same.
    fn decide(&self, parent: &Context, name: &str, kind: SpanKind) -> Option<TraceId> {
        let (_, sampler) = self.0.traced.as_ref()?;
        let parent_span = parent.span();
        let parent_sc = parent_span.span_context();
        let trace_id = if parent_sc.is_valid() {
            parent_sc.trace_id()
        } else {
            self.0.ids.new_trace_id()
        };
        let decision = sampler
            .should_sample(Some(parent), trace_id, name, &kind, &[], &[])
            .decision;
        (decision != SamplingDecision::Drop).then_some(trace_id)
    }

    /// A span that continues `parent` and never starts a trace: a message's
    /// trace is decided once, at its first span (`publish`, or the HTTP
    /// request's). With no context to continue, the message is untraced; with
    /// one, a ratio sampler sees the same trace id and repeats its decision.
    fn continue_trace(
        &self,
        parent: &Context,
        name: &'static str,
        kind: SpanKind,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Option<opentelemetry_sdk::trace::Span> {
        if !parent.span().span_context().is_valid() {
            return None;
        }
        self.start(parent, name, kind, attributes)
    }

    /// Starts a span if the sampler keeps it; `attributes` is only called then.
    fn start(
        &self,
        parent: &Context,
        name: &'static str,
        kind: SpanKind,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Option<opentelemetry_sdk::trace::Span> {
        let trace_id = self.decide(parent, name, kind.clone())?;
        let (tracer, _) = self.0.traced.as_ref()?;
        // A root span's trace id is drawn by the SDK's id generator; hand it the
        // one just sampled, so the SDK's own sampler decides the same.
        NEXT_TRACE_ID.set(Some(trace_id));
        let span = tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes())
            .start_with_context(tracer, parent);
        NEXT_TRACE_ID.set(None);
        Some(span)
    }

    /// The PRODUCER span of a message this node accepts: the handling of a
    /// `publish` frame, or the HTTP request's child; its context is what
    /// travels with the message. `parent` is the client's context (or empty,
    /// for a new root).
    pub fn send(&self, parent: &Context, message: &Accepted<'_>) -> MessageSpan {
        let kind = SpanKind::Producer;
        let attributes = || {
            let mut attributes = Vec::with_capacity(11);
            attributes.extend(messaging_attrs(
                "send",
                message.system,
                message.room,
                message.id,
            ));
            attributes.push(KeyValue::new(
                "messaging.message.body.size",
                message.body_size as i64,
            ));
            attributes.push(KeyValue::new("wsgate.node.id", self.0.node_id.clone()));
            if let Publisher::WebSocket(conn) = message.publisher {
                attributes.push(KeyValue::new("network.protocol.name", "websocket"));
                attributes.push(KeyValue::new("websocket.connection.id", conn as i64));
            }
            attributes
        };
        // A publish frame starts the trace when it carries none; an HTTP
        // request's SERVER span has already decided it.
        let span = match message.publisher {
            Publisher::WebSocket(_) => self.start(parent, "send", kind, attributes),
            Publisher::Http => self.continue_trace(parent, "send", kind, attributes),
        };
        match span {
            Some(span) => MessageSpan::owned(parent.with_span(span)),
            None => MessageSpan::passed(parent),
        }
    }

    /// The CONSUMER span for fanning a message out on this node. Its parent is the
    /// `send` span's context, carried with the message (semconv allows the
    /// creation context as parent for single-message processing).
    pub fn process(
        &self,
        send: &SpanContext,
        system: MessagingSystem,
        room: &RoomKey,
        message_id: &Arc<str>,
    ) -> ProcessSpan {
        // An untraced message (or a node that makes no spans) needs no
        // context at all: the publisher's span context passes through.
        if !send.is_valid() || self.0.traced.is_none() {
            return ProcessSpan::Passed(send.clone());
        }
        let parent = Context::new().with_remote_span_context(send.clone());
        let attributes = || {
            // Room for the fan-out's two or three, recorded at the end.
            let mut attributes = Vec::with_capacity(10);
            attributes.extend(messaging_attrs("process", system, room, message_id));
            attributes.push(KeyValue::new("wsgate.node.id", self.0.node_id.clone()));
            attributes
        };
        // Held as it is, not in a `Context`: nothing runs inside a fan-out
        // span, so it needs no allocation to be current.
        match self.start(&parent, "process", SpanKind::Consumer, attributes) {
            Some(span) => ProcessSpan::Owned(span),
            None => ProcessSpan::Passed(send.clone()),
        }
    }
}

/// What the `send` span records about a message the node accepted.
pub struct Accepted<'a> {
    pub publisher: Publisher,
    pub system: MessagingSystem,
    pub room: &'a RoomKey,
    pub id: &'a Arc<str>,
    pub body_size: usize,
}

impl MessageSpan {
    fn owned(cx: Context) -> Self {
        Self { cx, owned: true }
    }

    /// No span: the message continues `parent`, untouched.
    fn passed(parent: &Context) -> Self {
        Self {
            cx: parent.clone(),
            owned: false,
        }
    }

    /// The context to continue: this span's, or the one passed through.
    pub fn context(&self) -> &Context {
        &self.cx
    }

    /// The span context delivered frames and brokers carry.
    pub fn span_context(&self) -> SpanContext {
        self.cx.span().span_context().clone()
    }

    /// Marks the span failed with a stable error type.
    pub fn record_error(&self, error_type: &'static str, description: &str) {
        self.record(|span| {
            span.set_attribute(KeyValue::new("error.type", error_type));
            span.set_status(Status::error(description.to_owned()));
        });
    }

    fn record(&self, f: impl FnOnce(&opentelemetry::trace::SpanRef<'_>)) {
        if self.owned {
            let span = self.cx.span();
            if span.is_recording() {
                f(&span);
            }
        }
    }

    /// Ends the span, if this created one: a passed-through parent (the HTTP
    /// request's own span, say) is not ours to end.
    pub fn end(self) {
        if self.owned {
            self.cx.span().end();
        }
    }
}

/// A `process` span, or the span context a fan-out passes on untraced.
// Lives on the stack for one fan-out; boxing the span would cost the
// allocation this type exists to avoid.
#[allow(clippy::large_enum_variant)]
pub enum ProcessSpan {
    Owned(opentelemetry_sdk::trace::Span),
    Passed(SpanContext),
}

impl ProcessSpan {
    /// The span context delivered frames carry.
    pub fn span_context(&self) -> &SpanContext {
        match self {
            Self::Owned(span) => span.span_context(),
            Self::Passed(sc) => sc,
        }
    }

    /// Records what the fan-out did, and ends the span.
    pub fn end_with(self, fanout: &Fanout) {
        let Self::Owned(mut span) = self else {
            return;
        };
        if span.is_recording() {
            span.set_attribute(KeyValue::new(
                "wsgate.recipients",
                fanout.recipients() as i64,
            ));
            span.set_attribute(KeyValue::new(
                "wsgate.recipients.queued",
                fanout.queued as i64,
            ));
            if fanout.recipients() != fanout.queued {
                span.set_attribute(KeyValue::new(
                    "wsgate.recipients.dropped",
                    (fanout.recipients() - fanout.queued) as i64,
                ));
            }
        }
        span.end();
    }
}

fn messaging_attrs(
    operation: &'static str,
    system: MessagingSystem,
    room: &RoomKey,
    message_id: &Arc<str>,
) -> [KeyValue; 6] {
    [
        KeyValue::new("messaging.operation.type", operation),
        KeyValue::new("messaging.operation.name", operation),
        KeyValue::new("messaging.system", system.as_str()),
        KeyValue::new("messaging.destination.name", room.room.shared()),
        KeyValue::new("wsgate.tenant", room.tenant.shared()),
        KeyValue::new("messaging.message.id", message_id.clone()),
    ]
}
