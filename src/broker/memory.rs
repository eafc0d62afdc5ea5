//! The embedded broker for a single node: delivery is a function call.

use std::sync::Arc;

use crate::delivery::Delivery;
use crate::message::Envelope;

/// Delivers each message synchronously in the publisher's task, so messages from
/// one publisher reach every subscriber in the order they were published.
pub(crate) struct MemoryBroker {
    delivery: Arc<Delivery>,
}

impl MemoryBroker {
    pub(crate) fn new(delivery: Arc<Delivery>) -> Self {
        Self { delivery }
    }

    pub(crate) fn publish(&self, envelope: Envelope) {
        self.delivery.deliver(&envelope);
    }
}
