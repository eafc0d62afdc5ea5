//! Rooms and their local subscribers.
//!
//! The hub knows which of this node's connections are in which room, and hands a
//! frame to each of them. It knows nothing of JSON, brokers, sockets or telemetry:
//! it moves already-encoded frames into outboxes.
//!
//! Ordering: a subscriber's confirmation (`subscribed`/`unsubscribed`) is queued
//! under the same room lock as fan-out, so a client never sees a room's message
//! before its `subscribed`, nor after its `unsubscribed`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use crate::outbox::{Outbound, Outbox, Pushed};
use crate::room::RoomKey;

/// Identifies a connection within this node.
pub type ConnId = u64;

/// A connection subscribed to a room.
#[derive(Clone)]
pub struct Subscriber {
    pub conn: ConnId,
    pub outbox: Arc<Outbox>,
}

/// The subscribers of one room. A std mutex: held while frames are pushed to each
/// outbox (a non-blocking operation) and never across `.await`.
type Room = Arc<Mutex<Vec<Subscriber>>>;

#[derive(Default)]
pub struct Hub {
    /// Rooms with at least one local subscriber. Fan-out takes the read lock only
    /// long enough to clone one room's `Arc`, so fan-outs to different rooms run in
    /// parallel; joins and leaves take the write lock so a room is never removed
    /// while someone is being added to it.
    rooms: RwLock<HashMap<RoomKey, Room>>,
}

/// What one fan-out did, for the `process` span and the drop counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fanout {
    /// Subscribers the frame was queued for.
    pub queued: usize,
    /// Subscribers whose full queue dropped it (`drop` policy).
    pub dropped: usize,
    /// Subscribers disconnected by this fan-out as slow consumers.
    pub kicked: usize,
    /// Subscribers already closing.
    pub closed: usize,
}

impl Fanout {
    pub fn recipients(&self) -> usize {
        self.queued + self.dropped + self.kicked + self.closed
    }
}

impl Hub {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `sub` to `room` and, under the room's lock, runs `confirm` (which
    /// queues the `subscribed` reply). Returns whether this is the room's first
    /// local subscriber. The caller guarantees a connection joins a room once.
    pub fn join(&self, room: &RoomKey, sub: Subscriber, confirm: impl FnOnce()) -> bool {
        let mut rooms = write(&self.rooms);
        let entry = rooms.entry(room.clone()).or_default();
        let mut subs = lock(entry);
        let first = subs.is_empty();
        subs.push(sub);
        confirm();
        first
    }

    /// Removes `conn` from `room` and, under the room's lock, runs `confirm`.
    /// Returns `None` if it was not subscribed, else whether the room is now empty
    /// on this node.
    pub fn leave(&self, room: &RoomKey, conn: ConnId, confirm: impl FnOnce()) -> Option<bool> {
        let mut rooms = write(&self.rooms);
        let entry = rooms.get(room)?;
        let mut subs = lock(entry);
        let at = subs.iter().position(|s| s.conn == conn)?;
        subs.swap_remove(at);
        confirm();
        let empty = subs.is_empty();
        drop(subs);
        if empty {
            rooms.remove(room);
        }
        Some(empty)
    }

    /// Queues `item` for every local subscriber of `room`.
    pub fn fanout(&self, room: &RoomKey, item: &Outbound) -> Fanout {
        let Some(entry) = read(&self.rooms).get(room).cloned() else {
            return Fanout::default();
        };
        let subs = lock(&entry);
        let mut report = Fanout::default();
        for sub in subs.iter() {
            match sub.outbox.push(item.clone()) {
                Pushed::Queued => report.queued += 1,
                Pushed::Dropped => report.dropped += 1,
                Pushed::Kicked => report.kicked += 1,
                Pushed::Closed => report.closed += 1,
            }
        }
        report
    }

    /// The number of rooms with local subscribers.
    pub fn room_count(&self) -> usize {
        read(&self.rooms).len()
    }

    /// The number of local subscribers of `room`.
    pub fn subscriber_count(&self, room: &RoomKey) -> usize {
        read(&self.rooms).get(room).map_or(0, |r| lock(r).len())
    }
}

// The hub's critical sections are single collection operations that cannot
// leave it inconsistent if a panic unwinds through them, so poisoning is ignored.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}
fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::outbox::{Next, SlowConsumerPolicy};
    use crate::protocol::ServerFrameType;
    use crate::room::{RoomName, Tenant};

    fn room(name: &str) -> RoomKey {
        RoomKey::new(Tenant::default_tenant(), RoomName::parse(name).unwrap())
    }

    fn sub(conn: ConnId, capacity: usize) -> Subscriber {
        Subscriber {
            conn,
            outbox: Arc::new(Outbox::new(capacity, SlowConsumerPolicy::Drop)),
        }
    }

    fn item(text: &str) -> Outbound {
        Outbound {
            frame: text.into(),
            frame_type: ServerFrameType::Message,
            published_at: None,
        }
    }

    async fn drain(outbox: &Outbox) -> Vec<String> {
        let mut batch = VecDeque::new();
        match outbox.next(&mut batch).await {
            Next::Write => batch.iter().map(|o| o.frame.to_string()).collect(),
            Next::Close { .. } => vec![],
        }
    }

    #[test]
    fn join_and_leave_track_first_and_last_subscriber() {
        let hub = Hub::new();
        let lobby = room("lobby");
        assert!(hub.join(&lobby, sub(1, 4), || {}));
        assert!(!hub.join(&lobby, sub(2, 4), || {}));
        assert_eq!(hub.subscriber_count(&lobby), 2);
        assert_eq!(hub.leave(&lobby, 1, || {}), Some(false));
        assert_eq!(hub.leave(&lobby, 1, || {}), None, "already left");
        assert_eq!(hub.leave(&lobby, 2, || {}), Some(true));
        assert_eq!(hub.room_count(), 0, "an empty room is forgotten");
        assert_eq!(hub.leave(&room("never"), 9, || {}), None);
    }

    #[tokio::test]
    async fn fanout_reaches_only_the_rooms_subscribers() {
        let hub = Hub::new();
        let (a, b, c) = (sub(1, 4), sub(2, 4), sub(3, 4));
        hub.join(&room("x"), a.clone(), || {});
        hub.join(&room("x"), b.clone(), || {});
        hub.join(&room("y"), c.clone(), || {});
        let report = hub.fanout(&room("x"), &item("m1"));
        assert_eq!(
            report,
            Fanout {
                queued: 2,
                ..Fanout::default()
            }
        );
        assert_eq!(drain(&a.outbox).await, ["m1"]);
        assert_eq!(drain(&b.outbox).await, ["m1"]);
        assert_eq!(hub.fanout(&room("nobody"), &item("m2")).recipients(), 0);
        hub.fanout(&room("y"), &item("m3"));
        assert_eq!(drain(&c.outbox).await, ["m3"]);
    }

    #[tokio::test]
    async fn confirmation_is_ordered_with_fanout() {
        let hub = Hub::new();
        let lobby = room("lobby");
        let s = sub(1, 8);
        let outbox = s.outbox.clone();
        hub.join(&lobby, s, || {
            outbox.push(item("subscribed"));
        });
        hub.fanout(&lobby, &item("m"));
        hub.leave(&lobby, 1, || {
            outbox.push(item("unsubscribed"));
        });
        hub.fanout(&lobby, &item("after"));
        assert_eq!(drain(&outbox).await, ["subscribed", "m", "unsubscribed"]);
    }

    #[tokio::test]
    async fn tenants_never_share_a_room() {
        let hub = Hub::new();
        let acme = RoomKey::new(
            Tenant::parse("acme").unwrap(),
            RoomName::parse("lobby").unwrap(),
        );
        let globex = RoomKey::new(
            Tenant::parse("globex").unwrap(),
            RoomName::parse("lobby").unwrap(),
        );
        let (a, g) = (sub(1, 4), sub(2, 4));
        hub.join(&acme, a.clone(), || {});
        hub.join(&globex, g.clone(), || {});
        assert_eq!(hub.fanout(&acme, &item("for acme")).queued, 1);
        assert_eq!(drain(&a.outbox).await, ["for acme"]);
        hub.fanout(&globex, &item("for globex"));
        assert_eq!(drain(&g.outbox).await, ["for globex"]);
    }

    #[test]
    fn a_full_subscriber_does_not_stop_the_others() {
        let hub = Hub::new();
        let lobby = room("lobby");
        hub.join(&lobby, sub(1, 1), || {});
        hub.join(&lobby, sub(2, 8), || {});
        hub.fanout(&lobby, &item("1"));
        let report = hub.fanout(&lobby, &item("2"));
        assert_eq!(
            report,
            Fanout {
                queued: 1,
                dropped: 1,
                ..Fanout::default()
            }
        );
    }
}
