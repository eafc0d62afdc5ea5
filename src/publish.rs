//! The producer side: accepting a message for a room and handing it to the
//! broker. WebSocket `publish` frames and the HTTP API both come through here,
//! so both get the same ids, spans and delivery.

use std::sync::Arc;

use opentelemetry::Context;
use serde_json::value::RawValue;

use crate::broker::BrokerError;
use crate::message::{Envelope, PublishedAt};
use crate::state::AppState;
use crate::telemetry::{Accepted, Publisher};
use wsgate_protocol::room::RoomKey;

impl AppState {
    /// Publishes `data` to `room` under a `send` span, child of `parent` (the
    /// client's context, or the HTTP request's span). Returns the
    /// server-assigned message id.
    pub(crate) async fn publish(
        &self,
        parent: &Context,
        publisher: Publisher,
        room: &RoomKey,
        data: &RawValue,
    ) -> Result<Arc<str>, BrokerError> {
        let id = self.next_message_id();
        let mut span = self.tracer().send(
            parent,
            &Accepted {
                publisher,
                system: self.broker().system(),
                room,
                id: &id,
                body_size: data.get().len(),
            },
        );
        let envelope = Envelope {
            id,
            room: room.clone(),
            data: data.to_owned(),
            trace: span.span_context().clone(),
            published_at: PublishedAt::now(),
        };
        let id = envelope.id.clone();
        let result = self.broker().publish(envelope).await;
        match &result {
            Ok(()) if tracing::enabled!(tracing::Level::DEBUG) => {
                // The line carries the span's ids; no await follows.
                let _current = span.log_context().attach();
                tracing::debug!(room = %room, message_id = %id, "message published");
            }
            Ok(()) => {}
            Err(e) => span.record_error("broker_unavailable", &e.to_string()),
        }
        self.tracer().end_send(span);
        result.map(|()| id)
    }
}
