//! The broker boundary: how a published message reaches every node that has
//! subscribers for its room.
//!
//! A closed choice rather than a trait: wsgate runs on exactly one of a small set
//! of brokers, and an enum keeps every signature free of type parameters. The
//! hub never sees which variant runs; it only receives deliveries.

mod connect;
mod connect_failures;
mod inbound;
mod jetstream;
mod memory;
mod nats;
mod nats_url;
mod rooms;
mod round_trip;
mod tls;

use std::sync::Arc;

pub(crate) use connect::{NatsAccess, SetupError};
pub(crate) use inbound::Gate;
pub(crate) use memory::MemoryBroker;
pub(crate) use nats::{NatsBroker, NatsSettings};
pub(crate) use nats_url::{NatsUrl, NatsUrlError};
pub(crate) use tls::ClientCert;

use crate::delivery::Delivery;
use crate::history::{Appended, History};
use crate::message::Envelope;
use crate::telemetry::MessagingSystem;
use wsgate_protocol::room::RoomKey;

/// Why the broker could not take a message or a subscription.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BrokerError {
    #[error("the message broker is unavailable: {0}")]
    Unavailable(String),
    /// Only from start-up: the NATS settings cannot be used.
    #[error(transparent)]
    Setup(#[from] SetupError),
}

pub(crate) enum Broker {
    /// One node alone: publishing is delivering, in the publisher's own task.
    Memory(MemoryBroker),
    /// Many nodes on one NATS: publishing goes to NATS, and every node with
    /// subscribers for the room delivers what NATS hands it.
    Nats(Arc<NatsBroker>),
}

impl Broker {
    pub(crate) fn memory(delivery: Arc<Delivery>, history: Option<Arc<History>>) -> Self {
        Self::Memory(MemoryBroker::new(delivery, history))
    }

    /// The `messaging.system` this broker reports on spans.
    pub(crate) fn system(&self) -> MessagingSystem {
        match self {
            Self::Memory(_) => MessagingSystem::Wsgate,
            Self::Nats(_) => MessagingSystem::Nats,
        }
    }

    /// Hands a message to the broker. When this returns `Ok` the message is on
    /// its way to every node; an error means it went nowhere. With history,
    /// `Ok` says where it was stored, or that `dedupe` (the publisher's key
    /// for its `id`) was already accepted.
    pub(crate) async fn publish(
        &self,
        envelope: Envelope,
        dedupe: Option<Arc<str>>,
    ) -> Result<Option<Appended>, BrokerError> {
        match self {
            Self::Memory(broker) => Ok(broker.publish(envelope, dedupe)),
            // Boxed: the NATS future is large, and an unboxed arm would size
            // every session's state machine, in-memory ones included.
            Self::Nats(broker) if broker.has_history() => {
                Box::pin(broker.publish_stored(&envelope, dedupe.as_deref()))
                    .await
                    .map(Some)
            }
            Self::Nats(broker) => Box::pin(broker.publish(&envelope)).await.map(|()| None),
        }
    }

    /// Declares that this node has a subscriber for `room`. Returns once messages
    /// published anywhere to `room` are sure to reach this node.
    pub(crate) async fn acquire(&self, room: &RoomKey) -> Result<(), BrokerError> {
        match self {
            Self::Memory(_) => Ok(()),
            Self::Nats(broker) => Box::pin(broker.acquire(room)).await,
        }
    }

    /// Withdraws one [`acquire`](Self::acquire). Synchronous so that it can run
    /// from a connection's drop path.
    pub(crate) fn release(&self, room: &RoomKey) {
        match self {
            Self::Memory(_) => {}
            Self::Nats(broker) => broker.release(room),
        }
    }

    /// The NATS broker, when it keeps history in JetStream.
    pub(crate) fn stream_history(&self) -> Option<&NatsBroker> {
        match self {
            Self::Nats(broker) if broker.has_history() => Some(broker),
            _ => None,
        }
    }

    /// Whether the broker can currently carry messages (for `/readyz`).
    pub(crate) fn is_ready(&self) -> bool {
        match self {
            Self::Memory(_) => true,
            Self::Nats(broker) => broker.is_connected(),
        }
    }
}
