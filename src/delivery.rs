//! The consumer side of the broker: what a node does with a message for a room.
//!
//! Each message is encoded into its `message` frame exactly once per node, and
//! the frame's bytes are shared by every local recipient.

use std::sync::Arc;

use crate::hub::{Fanout, Hub};
use crate::message::Envelope;
use crate::outbox::Outbound;
use crate::telemetry::propagation::traceparent;
use crate::telemetry::{MessageTracer, MessagingSystem, Metrics};
use wsgate_protocol::{self as protocol, ServerFrameType};

pub(crate) struct Delivery {
    hub: Arc<Hub>,
    metrics: Metrics,
    tracer: MessageTracer,
    system: MessagingSystem,
}

impl Delivery {
    pub(crate) fn new(
        hub: Arc<Hub>,
        metrics: Metrics,
        tracer: MessageTracer,
        system: MessagingSystem,
    ) -> Self {
        Self {
            hub,
            metrics,
            tracer,
            system,
        }
    }

    /// Fans `envelope` out to this node's subscribers of its room, under a
    /// `process` span whose context the delivered frames carry; `offset` is
    /// its place in the room's history, when the room keeps one.
    pub(crate) fn deliver(&self, envelope: &Envelope, offset: Option<u64>) -> Fanout {
        let span = self
            .tracer
            .process(&envelope.trace, self.system, &envelope.room, &envelope.id);
        let traceparent = traceparent(span.span_context());
        let frame = protocol::message_frame(
            &envelope.room.room,
            &envelope.id,
            &envelope.data,
            traceparent.as_ref().map(|tp| tp.as_str()),
            offset,
        );
        let item = Outbound {
            frame,
            frame_type: ServerFrameType::Message,
            published_at: Some(envelope.published_at),
        };
        let fanout = self.hub.fanout(&envelope.room, &item);
        self.metrics
            .undelivered(fanout.dropped, fanout.kicked, fanout.closed);
        self.tracer.end_process(span, &fanout);
        fanout
    }
}
