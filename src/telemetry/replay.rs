//! The spans of a replay: a subscriber resuming with `since` is given the
//! messages it missed.
//!
//! ```text
//! replay   CONSUMER  one per recovering subscribe: a new trace (a subscribe
//! │                  frame carries no trace context), with the room, where
//! │                  the replay started and how many messages it gave
//! └─ process CONSUMER  one per replayed message, linked to the `send` span
//!                      that created it: the message keeps its own trace
//! ```
//!
//! A replayed frame's `traceparent` is its `process` span's, as for a live
//! delivery; when the replay is not sampled it is the stored `send` context.

use opentelemetry::trace::{SpanContext, SpanKind, TraceContextExt as _};
use opentelemetry::{Context, KeyValue};

use super::recording::Recording;
use super::spans::{MessageTracer, MessagingSystem, ProcessSpan, messaging_attrs};
use wsgate_protocol::room::RoomKey;

/// A `replay` span, when sampled.
pub struct ReplaySpan(Option<Recording>);

impl MessageTracer {
    /// Starts the `replay` span of a subscribe resuming after `offset`.
    pub fn replay(&self, system: MessagingSystem, room: &RoomKey, offset: u64) -> ReplaySpan {
        let attributes = || {
            vec![
                KeyValue::new("messaging.operation.type", "process"),
                KeyValue::new("messaging.operation.name", "replay"),
                KeyValue::new("messaging.system", system.as_str()),
                KeyValue::new("messaging.destination.name", room.room.shared()),
                KeyValue::new("wsgate.tenant", room.tenant.shared()),
                KeyValue::new("wsgate.replay.since", offset as i64),
                KeyValue::new("wsgate.node.id", self.0.node_id.clone()),
            ]
        };
        ReplaySpan(self.start(&Context::new(), "replay", SpanKind::Consumer, attributes))
    }

    /// The `process` span of one replayed message: a child of the replay,
    /// linked to the message's `send` span.
    pub fn replayed(
        &self,
        replay: &ReplaySpan,
        system: MessagingSystem,
        room: &RoomKey,
        message_id: &std::sync::Arc<str>,
        send: &SpanContext,
    ) -> ProcessSpan {
        let Some(parent) = &replay.0 else {
            return ProcessSpan::Passed(send.clone());
        };
        let parent = Context::new().with_remote_span_context(parent.span_context().clone());
        let attributes = || {
            let mut attributes = Vec::with_capacity(8);
            attributes.extend(messaging_attrs("process", system, room, message_id));
            attributes.push(KeyValue::new("wsgate.replayed", true));
            attributes
        };
        match self.start(&parent, "process", SpanKind::Consumer, attributes) {
            Some(mut recording) => {
                if send.is_valid() {
                    recording.link(send.clone());
                }
                ProcessSpan::Owned(recording)
            }
            None => ProcessSpan::Passed(send.clone()),
        }
    }

    /// Ends one replayed message's span.
    pub fn end_replayed(&self, span: ProcessSpan) {
        if let ProcessSpan::Owned(recording) = span {
            self.end(recording);
        }
    }

    /// Ends the replay: how many messages it gave and whether the client was
    /// told it recovered.
    pub fn end_replay(&self, span: ReplaySpan, replayed: usize, recovered: bool) {
        if let Some(mut recording) = span.0 {
            recording.push(KeyValue::new(
                "messaging.batch.message_count",
                replayed as i64,
            ));
            recording.push(KeyValue::new("wsgate.recovered", recovered));
            self.end(recording);
        }
    }
}
