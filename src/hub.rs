//! Rooms and their local subscribers.
//!
//! The hub knows which of this node's connections are in which room, and hands a
//! frame to each of them. It knows nothing of JSON, brokers, sockets or telemetry:
//! it moves already-encoded frames into outboxes.
//!
//! Ordering: a subscriber's confirmation (`subscribed`/`unsubscribed`) is queued
//! under the same room lock as fan-out, so a client never sees a room's message
//! before its `subscribed`, nor after its `unsubscribed`.
//!
//! Locking: the map of rooms is locked only to find, create or forget a room,
//! never while a room's own lock is awaited. Fan-out to a room of 10,000
//! subscribers holds that room's lock for a while; joins and leaves of *that*
//! room wait for it, but nothing else does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use indexmap::IndexMap;

use crate::outbox::{Outbound, Outbox, Pushed};
use crate::sync::{lock, read, write};
use wsgate_protocol::room::RoomKey;

/// Identifies a connection within this node.
pub(crate) type ConnId = u64;

/// A connection subscribed to a room.
#[derive(Clone)]
pub(crate) struct Subscriber {
    pub(crate) conn: ConnId,
    pub(crate) outbox: Arc<Outbox>,
}

/// The subscribers of one room, in a map that iterates densely (fan-out) and
/// removes in O(1) (a leave swaps the last subscriber into the leaver's slot).
#[derive(Default)]
struct Room {
    subscribers: IndexMap<ConnId, Arc<Outbox>>,
    /// Set by the leave that emptied the room, under the room's lock, before the
    /// room is taken out of the map: a join that finds a closed room retries
    /// with a fresh one instead of joining a room nobody will deliver to.
    closed: bool,
}

/// A std mutex: held while frames are pushed to each outbox (a non-blocking
/// operation) and never across `.await`.
type RoomRef = Arc<Mutex<Room>>;

/// The room could not be created: the node is at `--max-rooms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this node already has its maximum of {0} rooms")]
pub(crate) struct RoomLimit(pub usize);

pub(crate) struct Hub {
    /// Rooms with at least one local subscriber (and, for an instant, a room
    /// being created or forgotten). Fan-out takes the read lock only long enough
    /// to clone one room's `Arc`, so fan-outs to different rooms run in parallel.
    rooms: RwLock<HashMap<RoomKey, RoomRef>>,
    /// Subscriptions across all rooms, for the `websocket.subscriptions.active`
    /// gauge.
    subscriptions: AtomicUsize,
    /// `--max-rooms`: rooms this node may hold at once.
    max_rooms: usize,
}

/// What one fan-out did, for the `process` span and the drop counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fanout {
    /// Subscribers the frame was queued for.
    pub(crate) queued: usize,
    /// Subscribers whose full queue dropped it (`drop` policy).
    pub(crate) dropped: usize,
    /// Subscribers disconnected by this fan-out as slow consumers.
    pub(crate) kicked: usize,
    /// Subscribers already closing.
    pub(crate) closed: usize,
}

impl Fanout {
    pub(crate) fn recipients(&self) -> usize {
        self.queued + self.dropped + self.kicked + self.closed
    }
}

impl Hub {
    pub(crate) fn new(max_rooms: usize) -> Self {
        Self {
            rooms: RwLock::default(),
            subscriptions: AtomicUsize::new(0),
            max_rooms,
        }
    }

    /// Adds `sub` to `room` and, under the room's lock, runs `confirm` (which
    /// queues the `subscribed` reply). Returns whether this is the room's first
    /// local subscriber, or [`RoomLimit`] when the room is new and the node
    /// already holds `--max-rooms`. The caller guarantees a connection joins a
    /// room once.
    pub(crate) fn join(
        &self,
        room: &RoomKey,
        sub: Subscriber,
        confirm: impl FnOnce(),
    ) -> Result<bool, RoomLimit> {
        loop {
            let entry = self.find_or_create(room)?;
            let mut members = lock(&entry);
            if members.closed {
                // The last subscriber left while we looked the room up; make
                // sure the closed room is gone, then start over with a new one.
                drop(members);
                self.forget(room, &entry);
                continue;
            }
            let first = members.subscribers.is_empty();
            members.subscribers.insert(sub.conn, sub.outbox);
            confirm();
            self.subscriptions.fetch_add(1, Ordering::Relaxed);
            return Ok(first);
        }
    }

    /// Removes `conn` from `room` and, under the room's lock, runs `confirm`.
    /// Returns `None` if it was not subscribed, else whether the room is now empty
    /// on this node.
    pub(crate) fn leave(
        &self,
        room: &RoomKey,
        conn: ConnId,
        confirm: impl FnOnce(),
    ) -> Option<bool> {
        let entry = read(&self.rooms).get(room).cloned()?;
        let mut members = lock(&entry);
        if members.closed {
            return None;
        }
        members.subscribers.swap_remove(&conn)?;
        confirm();
        self.subscriptions.fetch_sub(1, Ordering::Relaxed);
        let empty = members.subscribers.is_empty();
        if empty {
            members.closed = true;
        }
        drop(members);
        if empty {
            self.forget(room, &entry);
        }
        Some(empty)
    }

    /// Queues `item` for every local subscriber of `room`.
    pub(crate) fn fanout(&self, room: &RoomKey, item: &Outbound) -> Fanout {
        let Some(entry) = read(&self.rooms).get(room).cloned() else {
            return Fanout::default();
        };
        let members = lock(&entry);
        let mut report = Fanout::default();
        for outbox in members.subscribers.values() {
            match outbox.push(item.clone()) {
                Pushed::Queued => report.queued += 1,
                Pushed::Dropped => report.dropped += 1,
                Pushed::Kicked => report.kicked += 1,
                Pushed::Closed => report.closed += 1,
            }
        }
        report
    }

    /// Whether `room` has local subscribers (a join would not create it).
    pub(crate) fn has_room(&self, room: &RoomKey) -> bool {
        read(&self.rooms).contains_key(room)
    }

    /// The number of rooms with local subscribers.
    pub(crate) fn room_count(&self) -> usize {
        read(&self.rooms).len()
    }

    /// The number of subscriptions across all rooms.
    pub(crate) fn subscription_count(&self) -> usize {
        self.subscriptions.load(Ordering::Relaxed)
    }

    /// The room's entry, created (under the map's write lock, where the room
    /// limit is checked exactly) if there is none.
    fn find_or_create(&self, room: &RoomKey) -> Result<RoomRef, RoomLimit> {
        if let Some(entry) = read(&self.rooms).get(room) {
            return Ok(entry.clone());
        }
        let mut rooms = write(&self.rooms);
        if let Some(entry) = rooms.get(room) {
            return Ok(entry.clone());
        }
        if rooms.len() >= self.max_rooms {
            return Err(RoomLimit(self.max_rooms));
        }
        let entry = RoomRef::default();
        rooms.insert(room.clone(), entry.clone());
        Ok(entry)
    }

    /// Takes a closed room out of the map, unless it was already replaced.
    fn forget(&self, room: &RoomKey, entry: &RoomRef) {
        let mut rooms = write(&self.rooms);
        if rooms.get(room).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            rooms.remove(room);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::outbox::{Next, QueueLimits, QueuedBytes, SlowConsumerPolicy};
    use wsgate_protocol::ServerFrameType;
    use wsgate_protocol::room::{RoomName, Tenant};

    fn room(name: &str) -> RoomKey {
        RoomKey::new(Tenant::default_tenant(), RoomName::parse(name).unwrap())
    }

    fn sub(conn: ConnId, capacity: usize) -> Subscriber {
        Subscriber {
            conn,
            outbox: Arc::new(Outbox::new(
                QueueLimits {
                    frames: capacity,
                    bytes: usize::MAX,
                    policy: SlowConsumerPolicy::Drop,
                },
                QueuedBytes::default(),
            )),
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
        match outbox.next(&mut batch, &mut 0).await {
            Next::Write => batch.iter().map(|o| o.frame.to_string()).collect(),
            Next::Close { .. } => vec![],
        }
    }

    #[test]
    fn join_and_leave_track_first_and_last_subscriber() {
        let hub = Hub::new(usize::MAX);
        let lobby = room("lobby");
        assert_eq!(hub.join(&lobby, sub(1, 4), || {}), Ok(true));
        assert_eq!(hub.join(&lobby, sub(2, 4), || {}), Ok(false));
        assert_eq!(hub.subscription_count(), 2);
        assert_eq!(hub.leave(&lobby, 1, || {}), Some(false));
        assert_eq!(hub.leave(&lobby, 1, || {}), None, "already left");
        assert_eq!(hub.leave(&lobby, 2, || {}), Some(true));
        assert_eq!(hub.room_count(), 0, "an empty room is forgotten");
        assert_eq!(hub.subscription_count(), 0);
        assert_eq!(hub.leave(&room("never"), 9, || {}), None);
    }

    #[tokio::test]
    async fn fanout_reaches_only_the_rooms_subscribers() {
        let hub = Hub::new(usize::MAX);
        let (a, b, c) = (sub(1, 4), sub(2, 4), sub(3, 4));
        hub.join(&room("x"), a.clone(), || {}).unwrap();
        hub.join(&room("x"), b.clone(), || {}).unwrap();
        hub.join(&room("y"), c.clone(), || {}).unwrap();
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
        let hub = Hub::new(usize::MAX);
        let lobby = room("lobby");
        let s = sub(1, 8);
        let outbox = s.outbox.clone();
        hub.join(&lobby, s, || {
            outbox.push(item("subscribed"));
        })
        .unwrap();
        hub.fanout(&lobby, &item("m"));
        hub.leave(&lobby, 1, || {
            outbox.push(item("unsubscribed"));
        });
        hub.fanout(&lobby, &item("after"));
        assert_eq!(drain(&outbox).await, ["subscribed", "m", "unsubscribed"]);
    }

    #[tokio::test]
    async fn tenants_never_share_a_room() {
        let hub = Hub::new(usize::MAX);
        let acme = RoomKey::new(
            Tenant::parse("acme").unwrap(),
            RoomName::parse("lobby").unwrap(),
        );
        let globex = RoomKey::new(
            Tenant::parse("globex").unwrap(),
            RoomName::parse("lobby").unwrap(),
        );
        let (a, g) = (sub(1, 4), sub(2, 4));
        hub.join(&acme, a.clone(), || {}).unwrap();
        hub.join(&globex, g.clone(), || {}).unwrap();
        assert_eq!(hub.fanout(&acme, &item("for acme")).queued, 1);
        assert_eq!(drain(&a.outbox).await, ["for acme"]);
        hub.fanout(&globex, &item("for globex"));
        assert_eq!(drain(&g.outbox).await, ["for globex"]);
    }

    #[test]
    fn a_full_subscriber_does_not_stop_the_others() {
        let hub = Hub::new(usize::MAX);
        let lobby = room("lobby");
        hub.join(&lobby, sub(1, 1), || {}).unwrap();
        hub.join(&lobby, sub(2, 8), || {}).unwrap();
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

    #[test]
    fn the_room_limit_refuses_new_rooms_only() {
        let hub = Hub::new(2);
        hub.join(&room("a"), sub(1, 4), || {}).unwrap();
        hub.join(&room("b"), sub(2, 4), || {}).unwrap();
        let mut confirmed = false;
        assert_eq!(
            hub.join(&room("c"), sub(3, 4), || confirmed = true),
            Err(RoomLimit(2))
        );
        assert!(!confirmed, "a refused join confirms nothing");
        assert_eq!(hub.join(&room("a"), sub(3, 4), || {}), Ok(false));
        hub.leave(&room("b"), 2, || {});
        assert_eq!(hub.join(&room("c"), sub(3, 4), || {}), Ok(true));
        assert_eq!(hub.room_count(), 2);
    }

    #[test]
    fn a_leave_in_the_middle_keeps_everyone_else() {
        let hub = Hub::new(usize::MAX);
        let lobby = room("lobby");
        let subs: Vec<_> = (0..100).map(|c| sub(c, 4)).collect();
        for s in &subs {
            hub.join(&lobby, s.clone(), || {}).unwrap();
        }
        for conn in (0..100).step_by(3) {
            assert_eq!(hub.leave(&lobby, conn, || {}), Some(false));
        }
        let report = hub.fanout(&lobby, &item("m"));
        assert_eq!(report.queued, 100 - (0..100).step_by(3).count());
        for s in &subs {
            let expected = usize::from(s.conn % 3 != 0);
            let queued = s.outbox.queued_frames();
            assert_eq!(queued, expected, "conn {}", s.conn);
        }
    }

    #[test]
    fn joins_and_leaves_racing_on_one_room_never_lose_a_subscriber() {
        let hub = Arc::new(Hub::new(usize::MAX));
        let lobby = room("lobby");
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let (hub, lobby) = (hub.clone(), lobby.clone());
                std::thread::spawn(move || {
                    for i in 0..2_000 {
                        let conn = t * 10_000 + i;
                        hub.join(&lobby, sub(conn, 1), || {}).unwrap();
                        assert!(hub.leave(&lobby, conn, || {}).is_some());
                    }
                    // One stays, so the room must end up present with 4 subscribers.
                    hub.join(&lobby, sub(t * 10_000 + 9_999, 1), || {}).unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(hub.subscription_count(), 4);
        assert_eq!(hub.fanout(&lobby, &item("m")).queued, 4);
        assert_eq!(hub.room_count(), 1);
    }
}
