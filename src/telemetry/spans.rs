//! The spans of a message's journey, following the OTel messaging conventions:
//!
//! ```text
//! client span (from the frame's traceparent, or none: a new root)
//! └─ publish        SERVER    the node handling the client's frame / HTTP request
//!    └─ send        PRODUCER  handing the message to the broker
//!       └─ process  CONSUMER  one per delivering node: fan-out to local subscribers
//! ```
//!
//! These are built with the OpenTelemetry tracer API directly, not `tracing`
//! spans: tracing-opentelemetry builds every attribute before sampling, while the
//! SDK samples first. Attributes are set only on spans that record, so an
//! unsampled message costs a few id generations and no attribute work.

use std::sync::Arc;

use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt as _, Tracer as _,
};
use opentelemetry::{Context, KeyValue};

use crate::hub::{ConnId, Fanout};
use crate::room::RoomKey;

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

/// Starts the spans of the message path. Cheap to clone.
#[derive(Clone)]
pub struct MessageTracer {
    tracer: Arc<BoxedTracer>,
    node_id: Arc<str>,
}

/// Where a publish came from, for the `publish` span's attributes.
#[derive(Debug, Clone, Copy)]
pub enum Origin {
    WebSocket(ConnId),
    Http,
}

impl MessageTracer {
    pub fn new(tracer: Arc<BoxedTracer>, node_id: &str) -> Self {
        Self {
            tracer,
            node_id: node_id.into(),
        }
    }

    /// The SERVER span for handling one `publish` frame; `parent` is the client's
    /// context (or empty, for a new root). Returns a context holding the span.
    pub fn publish(&self, parent: &Context, origin: Origin, room: &RoomKey) -> Context {
        let mut span = self
            .tracer
            .span_builder("publish")
            .with_kind(SpanKind::Server)
            .start_with_context(self.tracer.as_ref(), parent);
        if span.is_recording() {
            span.set_attribute(KeyValue::new(
                "messaging.destination.name",
                room.room.to_string(),
            ));
            span.set_attribute(KeyValue::new("wsgate.tenant", room.tenant.to_string()));
            span.set_attribute(KeyValue::new("wsgate.node.id", self.node_id.to_string()));
            match origin {
                Origin::WebSocket(conn) => {
                    span.set_attribute(KeyValue::new("network.protocol.name", "websocket"));
                    span.set_attribute(KeyValue::new("websocket.connection.id", conn as i64));
                }
                Origin::Http => {
                    span.set_attribute(KeyValue::new("network.protocol.name", "http"));
                }
            }
        }
        parent.with_span(span)
    }

    /// The PRODUCER span for handing a message to the broker; its context is what
    /// travels with the message.
    pub fn send(
        &self,
        parent: &Context,
        system: MessagingSystem,
        room: &RoomKey,
        message_id: &str,
        body_size: usize,
    ) -> Context {
        let mut span = self
            .tracer
            .span_builder("send")
            .with_kind(SpanKind::Producer)
            .start_with_context(self.tracer.as_ref(), parent);
        if span.is_recording() {
            span.set_attributes(messaging_attrs("send", system, room, message_id));
            span.set_attribute(KeyValue::new(
                "messaging.message.body.size",
                body_size as i64,
            ));
            span.set_attribute(KeyValue::new("wsgate.node.id", self.node_id.to_string()));
        }
        parent.with_span(span)
    }

    /// The CONSUMER span for fanning a message out on this node. Its parent is the
    /// `send` span's context, carried with the message (semconv allows the
    /// creation context as parent for single-message processing).
    pub fn process(
        &self,
        send: &SpanContext,
        system: MessagingSystem,
        room: &RoomKey,
        message_id: &str,
    ) -> Context {
        let parent = Context::new().with_remote_span_context(send.clone());
        let mut span = self
            .tracer
            .span_builder("process")
            .with_kind(SpanKind::Consumer)
            .start_with_context(self.tracer.as_ref(), &parent);
        if span.is_recording() {
            span.set_attributes(messaging_attrs("process", system, room, message_id));
            span.set_attribute(KeyValue::new("wsgate.node.id", self.node_id.to_string()));
        }
        Context::new().with_span(span)
    }
}

fn messaging_attrs(
    operation: &'static str,
    system: MessagingSystem,
    room: &RoomKey,
    message_id: &str,
) -> [KeyValue; 6] {
    [
        KeyValue::new("messaging.operation.type", operation),
        KeyValue::new("messaging.operation.name", operation),
        KeyValue::new("messaging.system", system.as_str()),
        KeyValue::new("messaging.destination.name", room.room.to_string()),
        KeyValue::new("wsgate.tenant", room.tenant.to_string()),
        KeyValue::new("messaging.message.id", message_id.to_owned()),
    ]
}

/// Records what a fan-out did on a `process` span.
pub fn record_fanout(cx: &Context, fanout: &Fanout) {
    let span = cx.span();
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
}

/// Sets a span's message id once it is known.
pub fn record_message_id(cx: &Context, message_id: &str) {
    let span = cx.span();
    if span.is_recording() {
        span.set_attribute(KeyValue::new("messaging.message.id", message_id.to_owned()));
    }
}

/// Marks a span failed with a stable error type.
pub fn record_error(cx: &Context, error_type: &'static str, description: &str) {
    let span = cx.span();
    if span.is_recording() {
        span.set_attribute(KeyValue::new("error.type", error_type));
        span.set_status(Status::error(description.to_owned()));
    }
}

/// Ends the span held by `cx`.
pub fn end(cx: &Context) {
    cx.span().end();
}
