//! The producer side: accepting a message for a room and handing it to the
//! broker. WebSocket `publish` frames and the HTTP API both come through here,
//! so both get the same ids, spans, history and delivery.

use std::sync::Arc;

use opentelemetry::Context;
use serde_json::value::RawValue;

use crate::broker::BrokerError;
use crate::history::Appended;
use crate::message::{Envelope, PublishedAt};
use crate::state::AppState;
use crate::telemetry::{Accepted, Publisher};
use wsgate_protocol::room::RoomKey;

/// A message the broker took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Published {
    /// The server-assigned id (a retried publish's original one).
    pub(crate) id: Arc<str>,
    /// Its place in the room's history, when the node keeps one.
    pub(crate) offset: Option<u64>,
}

/// Why a publish did not happen.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PublishError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(
        "this id was already used in this room, for other data, by the message at offset {offset}"
    )]
    IdConflict { offset: u64 },
}

/// The publisher's `id` for de-duplication, within a scope of its own: one
/// user's ids never collide with another's, nor with the HTTP API's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientId<'a> {
    /// `ws:` for a WebSocket client, `http` for the API.
    pub(crate) kind: &'static str,
    /// The token's `sub` (empty without tokens, and for the API).
    pub(crate) user: &'a str,
    pub(crate) id: &'a str,
}

impl ClientId<'_> {
    /// `<kind><user>\0<id>`, built without the formatting machinery.
    fn key(&self) -> Arc<str> {
        let mut key = String::with_capacity(self.kind.len() + self.user.len() + 1 + self.id.len());
        for part in [self.kind, self.user, "\0", self.id] {
            key.push_str(part);
        }
        Arc::from(key)
    }
}

impl AppState {
    /// Publishes `data` to `room` under a `send` span, child of `parent` (the
    /// client's context, or the HTTP request's span). In a room with history,
    /// a `client_id` already accepted is acknowledged again, not delivered.
    pub(crate) async fn publish(
        &self,
        parent: &Context,
        publisher: Publisher,
        room: &RoomKey,
        data: &RawValue,
        client_id: Option<ClientId<'_>>,
    ) -> Result<Published, PublishError> {
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
        // Only a node with history (its own, or JetStream) remembers ids.
        let dedupe = client_id.filter(|_| self.keeps_history()).map(|c| c.key());
        let result = match self.broker().publish(envelope, dedupe).await {
            Ok(None) => Ok(Published { id, offset: None }),
            Ok(Some(Appended::Stored { offset })) => Ok(Published {
                id,
                offset: Some(offset),
            }),
            Ok(Some(Appended::Duplicate { offset, id })) => Ok(Published {
                id,
                offset: Some(offset),
            }),
            Ok(Some(Appended::Conflict { offset })) => Err(PublishError::IdConflict { offset }),
            Err(e) => Err(e.into()),
        };
        match &result {
            Ok(published) if tracing::enabled!(tracing::Level::DEBUG) => {
                // The line carries the span's ids; no await follows.
                let _current = span.log_context().attach();
                tracing::debug!(room = %room, message_id = %published.id, "message published");
            }
            Ok(_) => {}
            Err(PublishError::Broker(e)) => span.record_error("broker_unavailable", &e.to_string()),
            Err(e @ PublishError::IdConflict { .. }) => {
                span.record_error("id_conflict", &e.to_string())
            }
        }
        self.tracer().end_send(span);
        result
    }
}
