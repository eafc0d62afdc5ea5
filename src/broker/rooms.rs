//! The rooms a node listens to on NATS, and when it may forget one.
//!
//! An entry exists while someone uses it: a local subscriber holds interest, or
//! an `acquire` or `release` is working on it. Whoever stops using an entry
//! last removes it, so a subscribe that failed (NATS down, a confirmation that
//! timed out) leaves nothing behind: with NATS down, 100,000 subscribes to new
//! rooms once left 100,000 entries (about 270 bytes each) for good.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::task::JoinHandle;

use wsgate_protocol::room::RoomKey;

type Entry = Arc<tokio::sync::Mutex<Interest>>;

/// Rooms this node listens to.
#[derive(Default)]
pub(super) struct Rooms {
    /// The std mutex is held only to find, create or forget an entry, never
    /// across an `.await`. Each entry's tokio mutex is held across the
    /// subscribe and its confirmation, so concurrent first subscribers to a
    /// room wait for one subscription instead of creating two.
    map: Mutex<HashMap<RoomKey, Entry>>,
}

/// This node's interest in one room.
#[derive(Default)]
pub(super) struct Interest {
    /// Local subscribers that acquired the room.
    pub(crate) refs: usize,
    /// The task reading the room's NATS subscription; dropping its subscriber
    /// (by aborting it) unsubscribes. Set whenever `refs > 0`.
    pub(crate) listener: Option<JoinHandle<()>>,
    /// With history: the offset this node has delivered the room through,
    /// shared with the listener. Set with `listener`.
    pub(crate) gate: Option<super::inbound::Gate>,
}

impl Interest {
    fn unused(&self) -> bool {
        self.refs == 0 && self.listener.is_none()
    }
}

impl Rooms {
    /// How many rooms have an entry: listened to, or being worked on.
    pub(crate) fn len(&self) -> usize {
        self.map().len()
    }

    /// Takes a hold on `room`'s entry, creating it if needed. Dropping the
    /// claim forgets the room if it was the last hold and left no interest,
    /// whether the work under it succeeded, failed or was cancelled.
    pub(crate) fn claim<'a>(&'a self, room: &'a RoomKey) -> Claim<'a> {
        let entry = self.map().entry(room.clone()).or_default().clone();
        Claim {
            rooms: self,
            room,
            entry: Some(entry),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<RoomKey, Entry>> {
        crate::sync::lock(&self.map)
    }

    /// Gives a hold back, forgetting the room if nothing uses it.
    ///
    /// Holds are only taken under the map lock (`claim`) and given back under
    /// it (here, where ours is dropped before the lock is released). So under
    /// the lock, a count of two (the map's and ours) means no one else holds
    /// the entry, or waits on its mutex, or can get it, and whoever gives back
    /// last sees that count. Checking the count after releasing the lock would
    /// leave a gap in which two holders each see the other and neither
    /// forgets the room.
    fn put_back(&self, room: &RoomKey, entry: Entry) {
        let mut map = self.map();
        let last =
            Arc::strong_count(&entry) == 2 && map.get(room).is_some_and(|e| Arc::ptr_eq(e, &entry));
        // With no other holder nobody can be holding the mutex either (a
        // guard borrows from a hold); a failed `try_lock` would only mean a
        // guard outlived its claim, and then keeping the room is the safe side.
        let unused = last && entry.try_lock().is_ok_and(|interest| interest.unused());
        drop(entry);
        if unused {
            map.remove(room);
        }
    }
}

/// A hold on one room's entry; see [`Rooms::claim`]. Lock it to read or
/// change the interest, and drop the guard before the claim (declaring the
/// guard after the claim does that).
pub(super) struct Claim<'a> {
    rooms: &'a Rooms,
    room: &'a RoomKey,
    /// Always `Some` until dropped.
    entry: Option<Entry>,
}

impl Claim<'_> {
    pub(crate) async fn lock(&self) -> tokio::sync::MutexGuard<'_, Interest> {
        match &self.entry {
            Some(entry) => entry.lock().await,
            None => unreachable!("a claim holds its entry until dropped"),
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            self.rooms.put_back(self.room, entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsgate_protocol::room::{RoomName, Tenant};

    fn key(room: &str) -> RoomKey {
        RoomKey::new(Tenant::default_tenant(), RoomName::parse(room).unwrap())
    }

    /// Stands in for a subscription: interest with a listener.
    fn listen(interest: &mut Interest) {
        if interest.listener.is_none() {
            interest.listener = Some(tokio::spawn(std::future::pending()));
        }
        interest.refs += 1;
    }

    fn unlisten(interest: &mut Interest) {
        interest.refs = interest.refs.saturating_sub(1);
        if interest.refs == 0
            && let Some(listener) = interest.listener.take()
        {
            listener.abort();
        }
    }

    #[tokio::test]
    async fn a_room_is_kept_while_it_has_interest_and_forgotten_after() {
        let rooms = Rooms::default();
        let lobby = key("lobby");
        {
            let claim = rooms.claim(&lobby);
            let _looked = claim.lock().await;
            // A failed subscribe: looked, changed nothing.
        }
        assert_eq!(rooms.len(), 0, "a failed subscribe leaves nothing");
        {
            let claim = rooms.claim(&lobby);
            listen(&mut *claim.lock().await);
        }
        assert_eq!(rooms.len(), 1);
        {
            let claim = rooms.claim(&lobby);
            unlisten(&mut *claim.lock().await);
        }
        assert_eq!(rooms.len(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_subscribe_leaves_nothing() {
        let rooms = Rooms::default();
        let lobby = key("lobby");
        let blocker = rooms.claim(&lobby);
        let held = blocker.lock().await;
        // A subscribe waiting for the room's mutex, then dropped mid-wait.
        let waiting = async {
            let claim = rooms.claim(&lobby);
            let _interest = claim.lock().await;
        };
        assert!(
            tokio::time::timeout(std::time::Duration::ZERO, waiting)
                .await
                .is_err()
        );
        drop(held);
        drop(blocker);
        assert_eq!(rooms.len(), 0);
    }

    /// Many tasks on a few rooms, each holding its room's mutex across yields
    /// as a subscribe does: whatever the interleaving, exactly the rooms with
    /// interest remain.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_subscribes_and_releases_leave_exactly_the_rooms_in_use() {
        let rooms = Arc::new(Rooms::default());
        let names: Vec<RoomKey> = (0..4).map(|i| key(&format!("r{i}"))).collect();
        let tasks: Vec<_> = (0..64)
            .map(|task| {
                let rooms = rooms.clone();
                let names = names.clone();
                tokio::spawn(async move {
                    for round in 0..200 {
                        let room = &names[(task + round) % names.len()];
                        let claim = rooms.claim(room);
                        let mut interest = claim.lock().await;
                        tokio::task::yield_now().await;
                        // Fail two subscribes in three; release the others.
                        if round % 3 == 0 {
                            listen(&mut interest);
                            drop(interest);
                            drop(claim);
                            tokio::task::yield_now().await;
                            let claim = rooms.claim(room);
                            unlisten(&mut *claim.lock().await);
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task");
        }
        assert_eq!(rooms.len(), 0);
        // And a room still in use survives the same churn around it.
        let kept = &names[0];
        let claim = rooms.claim(kept);
        listen(&mut *claim.lock().await);
        drop(claim);
        let churn: Vec<_> = (0..16)
            .map(|_| {
                let rooms = rooms.clone();
                let kept = kept.clone();
                tokio::spawn(async move {
                    for _ in 0..100 {
                        let claim = rooms.claim(&kept);
                        let _interest = claim.lock().await;
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for task in churn {
            task.await.expect("task");
        }
        assert_eq!(rooms.len(), 1);
    }
}
