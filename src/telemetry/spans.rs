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
//! work of every traced message (docs/performance.md).
//!
//! These are not `tracing` spans, nor the SDK tracer's: the sampling decision
//! comes first (the provider's own sampler, from `OTEL_TRACES_SAMPLER`, asked
//! exactly as the SDK's tracer asks it), and a kept span is the SDK's
//! `SpanData`, filled in and handed to the SDK's batch processor when it ends
//! ([`super::recording`]). An unsampled message creates no span and no ids; it
//! only passes the publisher's trace context, if it sent one, through to
//! delivered frames. A span's attributes are all given when it starts, in one
//! vector of the right size, with static keys and the room's shared strings.

use std::sync::Arc;

use opentelemetry::trace::{SpanContext, SpanKind, Status, TraceContextExt as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{
    IdGenerator as _, RandomIdGenerator, SamplingDecision, ShouldSample,
};

use super::recording::{Recording, Sink, Start};
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
pub struct MessageTracer(pub(super) Arc<Inner>);

pub(super) struct Inner {
    /// The sampler the tracer provider uses and where spans go; `None` when
    /// no span is ever recorded (telemetry disabled, or no trace exporter).
    pub(super) traced: Option<(Box<dyn ShouldSample>, Sink)>,
    ids: RandomIdGenerator,
    pub(super) node_id: Arc<str>,
}

/// One `send` span, or the span context the message continues when it is
/// not traced. It ends only a span it created.
pub struct MessageSpan {
    recording: Option<Recording>,
    /// The publisher's own span context, passed through when untraced.
    passed: SpanContext,
}

impl MessageTracer {
    /// `traced` is the provider's sampler and the span sink, or `None` for a
    /// node that makes no spans.
    pub fn new(traced: Option<(Box<dyn ShouldSample>, Sink)>, node_id: &str) -> Self {
        Self(Arc::new(Inner {
            traced,
            ids: RandomIdGenerator::default(),
            node_id: node_id.into(),
        }))
    }

    /// Starts a span under `parent` if the sampler keeps it; `attributes` is
    /// only called then. A root gets a new trace id. The sampler is asked as
    /// the SDK's tracer asks it, except that no attributes exist yet (the
    /// built-in samplers do not read them).
    pub(super) fn start(
        &self,
        parent: &Context,
        name: &'static str,
        kind: SpanKind,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Option<Recording> {
        let (sampler, sink) = self.0.traced.as_ref()?;
        let parent_span = parent.span();
        let parent_sc = parent_span.span_context();
        let trace_id = if parent_sc.is_valid() {
            parent_sc.trace_id()
        } else {
            self.0.ids.new_trace_id()
        };
        let result = sampler.should_sample(Some(parent), trace_id, name, &kind, &[], &[]);
        // A span that is recorded but not sampled would never be exported;
        // the built-in samplers never ask for one.
        if result.decision != SamplingDecision::RecordAndSample {
            return None;
        }
        let mut attributes = attributes();
        attributes.extend(result.attributes);
        let span_context = Recording::context_for(
            trace_id,
            self.0.ids.new_span_id(),
            parent_sc,
            result.trace_state,
        );
        let start = Start {
            parent: parent_sc,
            span_context,
            name,
            kind,
        };
        Some(Recording::start(sink, start, attributes))
    }

    /// Ends a span this tracer started.
    pub(super) fn end(&self, recording: Recording) {
        if let Some((_, sink)) = &self.0.traced {
            recording.end(sink);
        }
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
        // request's SERVER span has already decided it, so with none valid
        // the message is untraced.
        let continues = parent.span().span_context().is_valid();
        let recording = match message.publisher {
            Publisher::Http if !continues => None,
            _ => self.start(parent, "send", kind, attributes),
        };
        MessageSpan {
            passed: match &recording {
                Some(_) => SpanContext::empty_context(),
                None => parent.span().span_context().clone(),
            },
            recording,
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
        // Never made current: nothing runs inside a fan-out span.
        match self.start(&parent, "process", SpanKind::Consumer, attributes) {
            Some(recording) => ProcessSpan::Owned(recording),
            None => ProcessSpan::Passed(send.clone()),
        }
    }

    /// Ends a `send` span, if one was made.
    pub fn end_send(&self, span: MessageSpan) {
        if let Some(recording) = span.recording {
            self.end(recording);
        }
    }

    /// Records what the fan-out did on a `process` span, and ends it.
    pub fn end_process(&self, span: ProcessSpan, fanout: &Fanout) {
        let ProcessSpan::Owned(mut recording) = span else {
            return;
        };
        recording.push(KeyValue::new(
            "wsgate.recipients",
            fanout.recipients() as i64,
        ));
        recording.push(KeyValue::new(
            "wsgate.recipients.queued",
            fanout.queued as i64,
        ));
        if fanout.recipients() != fanout.queued {
            recording.push(KeyValue::new(
                "wsgate.recipients.dropped",
                (fanout.recipients() - fanout.queued) as i64,
            ));
        }
        self.end(recording);
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
    /// The span context delivered frames and brokers carry: this span's, or
    /// the one passed through.
    pub fn span_context(&self) -> &SpanContext {
        match &self.recording {
            Some(recording) => recording.span_context(),
            None => &self.passed,
        }
    }

    /// A context for log lines about this message, which then carry its ids.
    /// Built on demand: nothing in the broker's publish logs per message.
    pub fn log_context(&self) -> Context {
        Context::new().with_remote_span_context(self.span_context().clone())
    }

    /// Marks the span failed with a stable error type.
    pub fn record_error(&mut self, error_type: &'static str, description: &str) {
        if let Some(recording) = &mut self.recording {
            recording.push(KeyValue::new("error.type", error_type));
            recording.set_status(Status::error(description.to_owned()));
        }
    }
}

/// A `process` span, or the span context a fan-out passes on untraced.
// Lives on the stack for one fan-out; boxing the span would cost an
// allocation per traced message.
#[allow(clippy::large_enum_variant)]
pub enum ProcessSpan {
    Owned(Recording),
    Passed(SpanContext),
}

impl ProcessSpan {
    /// The span context delivered frames carry.
    pub fn span_context(&self) -> &SpanContext {
        match self {
            Self::Owned(recording) => recording.span_context(),
            Self::Passed(sc) => sc,
        }
    }
}

pub(super) fn messaging_attrs(
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
