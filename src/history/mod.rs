//! The in-memory history: each room's recent messages, so a client that
//! reconnects is given exactly what it missed (or told that it cannot be).
//!
//! On with `--history-size N` (messages kept per room). Trimmed by size
//! (per room), by age (`--history-ttl`) and by the node's total
//! (`--history-max-bytes`: past it, the oldest messages of the largest rooms go
//! first). Every trim is counted by reason.
//!
//! Ordering: a room's lock is held while a message is given its offset,
//! stored and fanned out (the caller's `deliver`), and while a subscriber
//! catches up and joins. So a joining subscriber sees every message either in
//! its catch-up or live, never both and never neither.
//!
//! Locking follows the hub: the map of rooms is locked only to find, create
//! or forget a record, never while a room's lock is held.

mod room;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

pub(crate) use room::{Entry, RoomLog};

use crate::labels::TrimReason;
use crate::message::Envelope;
use crate::sync::{lock, read, write};
use crate::telemetry::HistoryMetrics;
use room::{ROOM_OVERHEAD, Trimmed};
use wsgate_protocol::room::RoomKey;

/// The history flags.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HistoryLimits {
    /// Messages kept per room (`--history-size`, at least 1 here).
    pub(crate) size: usize,
    /// How long a message is kept (`--history-ttl`).
    pub(crate) ttl: Duration,
    /// The node's total (`--history-max-bytes`).
    pub(crate) max_bytes: usize,
    /// How long an empty room's offset and epoch are remembered after its
    /// last message or subscriber (`--history-meta-ttl`).
    pub(crate) meta_ttl: Duration,
}

type RoomRef = Arc<Mutex<RoomLog>>;

pub(crate) struct History {
    limits: HistoryLimits,
    rooms: RwLock<HashMap<RoomKey, RoomRef>>,
    /// This process's part of every epoch: a restarted node never reuses one.
    node: u32,
    /// Room records created, the other part of an epoch.
    records: AtomicU64,
    messages: AtomicUsize,
    bytes: AtomicUsize,
    /// Held by the one caller trimming for `--history-max-bytes`.
    trimming: Mutex<()>,
    metrics: HistoryMetrics,
}

/// The outcome of [`History::append`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Appended {
    /// Stored (and delivered) as `offset`.
    Stored { offset: u64 },
    /// Already accepted as this message; nothing was delivered.
    Duplicate { offset: u64, id: Arc<str> },
    /// The id was accepted for other data; nothing was stored or delivered.
    Conflict { offset: u64 },
}

/// A room's lock, held: the room's record, with the node's totals it updates.
pub(crate) struct Locked<'a> {
    history: &'a History,
    log: &'a mut RoomLog,
    /// When the lock was taken: one clock read for the expiry and the append.
    now: Instant,
}

impl History {
    pub(crate) fn new(limits: HistoryLimits, metrics: HistoryMetrics) -> Self {
        Self {
            limits: HistoryLimits {
                size: limits.size.max(1),
                ..limits
            },
            rooms: RwLock::default(),
            node: rand::random(),
            records: AtomicU64::new(0),
            messages: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            trimming: Mutex::new(()),
            metrics,
        }
    }

    pub(crate) fn limits(&self) -> &HistoryLimits {
        &self.limits
    }

    /// Messages stored across all rooms.
    pub(crate) fn message_count(&self) -> u64 {
        self.messages.load(Ordering::Relaxed) as u64
    }

    /// Bytes held by stored messages and room records.
    pub(crate) fn byte_count(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed) as u64
    }

    /// Gives `envelope` the room's next offset, stores it and, still under the
    /// room's lock, runs `deliver` with it. With a de-duplication key the room
    /// already holds, nothing is stored or delivered.
    pub(crate) fn append(
        &self,
        envelope: Envelope,
        dedupe: Option<Arc<str>>,
        deliver: impl FnOnce(&Envelope, u64),
    ) -> Appended {
        let room_key = envelope.room.clone();
        let appended = self.with_room(&room_key, |room| {
            let (entry, bytes) = match room.log.append(envelope, dedupe, room.now) {
                Ok(stored) => stored,
                Err(refused) => return refused,
            };
            self.messages.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(bytes, Ordering::Relaxed);
            let size = self.limits.size;
            let trimmed = room.log.trim_to(size);
            room.account(trimmed, TrimReason::Size);
            deliver(&entry.envelope, entry.offset);
            Appended::Stored {
                offset: entry.offset,
            }
        });
        if self.bytes.load(Ordering::Relaxed) > self.limits.max_bytes {
            self.trim_memory();
        }
        appended
    }

    /// Runs `f` under `room`'s lock, creating its record (a new epoch) if
    /// there is none, after dropping the messages past `--history-ttl`.
    pub(crate) fn with_room<R>(&self, room: &RoomKey, f: impl FnOnce(&mut Locked<'_>) -> R) -> R {
        if self.bytes.load(Ordering::Relaxed) > self.limits.max_bytes {
            // New records count too: a client subscribing to ever new room
            // names is held to the cap like a publisher. Trimmed before this
            // room's record is looked up, so the trim can never forget the
            // record this call is about to create (it would only make it
            // again, and again).
            self.trim_memory();
        }
        loop {
            let entry = self.find_or_create(room);
            let mut log = lock(&entry);
            if log.closed {
                // Forgotten between the lookup and the lock: start over.
                continue;
            }
            let now = Instant::now();
            let mut locked = Locked {
                history: self,
                log: &mut log,
                now,
            };
            locked.expire(now);
            return f(&mut locked);
        }
    }

    fn find_or_create(&self, room: &RoomKey) -> RoomRef {
        if let Some(entry) = read(&self.rooms).get(room) {
            return entry.clone();
        }
        let mut rooms = write(&self.rooms);
        if let Some(entry) = rooms.get(room) {
            return entry.clone();
        }
        let n = self.records.fetch_add(1, Ordering::Relaxed) + 1;
        let epoch: Arc<str> = Arc::from(format!("{:08x}-{n}", self.node));
        let overhead = ROOM_OVERHEAD + room.tenant.as_str().len() + room.room.as_str().len();
        let entry = Arc::new(Mutex::new(RoomLog::new(epoch, overhead, Instant::now())));
        self.bytes.fetch_add(overhead, Ordering::Relaxed);
        rooms.insert(room.clone(), entry.clone());
        entry
    }

    /// Drops expired messages everywhere, and forgets the records that are
    /// empty, unused for `--history-meta-ttl` and not `in_use` (a room with
    /// subscribers on this node keeps its epoch). Run about once a second.
    pub(crate) fn sweep(&self, in_use: impl Fn(&RoomKey) -> bool) {
        let now = Instant::now();
        let rooms: Vec<(RoomKey, RoomRef)> = read(&self.rooms)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut idle = Vec::new();
        for (key, entry) in rooms {
            let mut log = lock(&entry);
            if log.closed {
                continue;
            }
            let trimmed = log.expire(now, self.limits.ttl);
            self.forget_bytes(trimmed, TrimReason::Ttl);
            log.subscribed = in_use(&key);
            if log.subscribed {
                log.last_used = now;
            } else if log.len() == 0
                && now.saturating_duration_since(log.last_used) >= self.limits.meta_ttl
            {
                idle.push((key, entry.clone()));
            }
        }
        for (key, entry) in idle {
            self.forget(&key, &entry);
        }
    }

    /// Over `--history-max-bytes`: forgets empty records nobody is
    /// subscribed to, then drops the oldest messages of the largest rooms,
    /// each losing at most half of its bytes per pass, largest first, until
    /// the node holds at most 95% of the cap, so the next appends do not each
    /// trim again. Records first: a client cycling through new room names
    /// must not cost other rooms their messages.
    fn trim_memory(&self) {
        let Ok(_only_one) = self.trimming.try_lock() else {
            return;
        };
        let target = self.limits.max_bytes / 20 * 19;
        self.forget_empty(target);
        let mut rooms: Vec<(usize, RoomRef)> = read(&self.rooms)
            .values()
            .map(|e| (lock(e).bytes(), e.clone()))
            .collect();
        rooms.sort_by_key(|r| std::cmp::Reverse(r.0));
        loop {
            let mut progress = false;
            for (_, entry) in &rooms {
                let held = self.byte_count() as usize;
                if held <= target {
                    return;
                }
                let mut log = lock(entry);
                let keep = log
                    .bytes()
                    .saturating_sub(held - target)
                    .max(log.bytes() / 2);
                let trimmed = log.shrink_to(keep);
                progress |= trimmed.messages > 0;
                self.forget_bytes(trimmed, TrimReason::Memory);
            }
            if !progress {
                break;
            }
        }
        self.forget_empty(target);
    }

    /// Forgets empty room records nobody here is subscribed to, least
    /// recently used first, until the node holds `target`. (Records of rooms
    /// nobody publishes to are what a client subscribing to, or asking the
    /// history of, ever new room names would otherwise pile up.) Such a room
    /// starts a new epoch when it is next used; a subscribed one is kept, so
    /// its subscribers' offsets never go back.
    fn forget_empty(&self, target: usize) {
        let mut empty: Vec<(Instant, RoomKey, RoomRef)> = read(&self.rooms)
            .iter()
            .filter_map(|(key, entry)| {
                let log = lock(entry);
                (log.len() == 0 && !log.subscribed)
                    .then(|| (log.last_used, key.clone(), entry.clone()))
            })
            .collect();
        empty.sort_by_key(|e| e.0);
        for (_, key, entry) in empty {
            if self.byte_count() as usize <= target {
                return;
            }
            self.forget(&key, &entry);
        }
    }

    /// Takes an empty record out of the map, unless a message arrived or it
    /// was already replaced.
    fn forget(&self, key: &RoomKey, entry: &RoomRef) {
        let mut rooms = write(&self.rooms);
        let mut log = lock(entry);
        if log.len() == 0 && !log.closed && rooms.get(key).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            log.closed = true;
            rooms.remove(key);
            self.bytes.fetch_sub(log.bytes(), Ordering::Relaxed);
        }
    }

    fn forget_bytes(&self, trimmed: Trimmed, reason: TrimReason) {
        if trimmed.messages == 0 {
            return;
        }
        self.messages.fetch_sub(trimmed.messages, Ordering::Relaxed);
        self.bytes.fetch_sub(trimmed.bytes, Ordering::Relaxed);
        self.metrics.trimmed(reason, trimmed.messages as u64);
    }
}

impl Locked<'_> {
    /// Marks the record used now by a subscriber joining: kept, whatever the
    /// byte cap, until a sweep finds the room without subscribers.
    pub(crate) fn touch(&mut self) {
        self.log.last_used = Instant::now();
        self.log.subscribed = true;
    }

    fn expire(&mut self, now: Instant) {
        let trimmed = self.log.expire(now, self.history.limits.ttl);
        self.account(trimmed, TrimReason::Ttl);
    }

    fn account(&self, trimmed: Trimmed, reason: TrimReason) {
        self.history.forget_bytes(trimmed, reason);
    }
}

impl std::ops::Deref for Locked<'_> {
    type Target = RoomLog;
    fn deref(&self) -> &RoomLog {
        self.log
    }
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
