//! The embedded broker for a single node: delivery is a function call.

use std::sync::Arc;

use crate::delivery::Delivery;
use crate::message::Envelope;

/// Delivers each message synchronously in the publisher's task, so messages from
/// one publisher reach every subscriber in the order they were published.
pub struct MemoryBroker {
    delivery: Arc<Delivery>,
}

impl MemoryBroker {
    pub fn new(delivery: Arc<Delivery>) -> Self {
        Self { delivery }
    }

    pub fn publish(&self, envelope: Envelope) {
        self.delivery.deliver(&envelope);
    }
}
