//! The embedded broker for a single node: delivery is a function call.

use std::sync::Arc;

use crate::delivery::Delivery;
use crate::history::{Appended, History};
use crate::message::Envelope;

/// Delivers each message synchronously in the publisher's task, so messages from
/// one publisher reach every subscriber in the order they were published.
/// With history, each message is stored and given its offset first, under the
/// room's history lock, so offsets and deliveries are in the same order.
pub(crate) struct MemoryBroker {
    delivery: Arc<Delivery>,
    history: Option<Arc<History>>,
}

impl MemoryBroker {
    pub(crate) fn new(delivery: Arc<Delivery>, history: Option<Arc<History>>) -> Self {
        Self { delivery, history }
    }

    /// Delivers `envelope`; with history, stores it first (`None` without).
    pub(crate) fn publish(&self, envelope: Envelope, dedupe: Option<Arc<str>>) -> Option<Appended> {
        let Some(history) = &self.history else {
            self.delivery.deliver(&envelope, None);
            return None;
        };
        Some(history.append(envelope, dedupe, |envelope, offset| {
            self.delivery.deliver(envelope, Some(offset));
        }))
    }
}
