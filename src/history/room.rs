//! One room's history: its stored messages, oldest first, and its position.
//!
//! Offsets are contiguous within an epoch (1, 2, 3, ...), so the entry of an
//! offset is found by subtraction, and "nothing is missing after offset `s`"
//! is one comparison: `s` is at or after the last offset trimmed away. A new
//! room record (a node start, or a room forgotten and seen again) starts a new
//! epoch at offset 0, so an offset is never reused within an epoch.

use std::collections::hash_map::Entry::{Occupied, Vacant};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Appended;
use crate::message::Envelope;

/// Bytes a stored message costs beyond its data, id and de-duplication key:
/// the entry, its `Arc`, the envelope, the queue and map slots (with room to
/// grow) and the allocator's headers. Measured: 100,000 stored messages of the
/// bench's (~150 bytes of data and id) grew the resident set by 576 bytes each;
/// this puts the accounted size at about the same.
const ENTRY_OVERHEAD: usize = 416;

/// Bytes a room record costs with no message in it, besides its key: the
/// record, its lock and `Arc`, the map's slot and the epoch.
pub(super) const ROOM_OVERHEAD: usize = 256;

/// A stored message.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) offset: u64,
    pub(crate) envelope: Envelope,
    /// The publisher's key for `id` de-duplication, when it gave an id.
    dedupe: Option<Arc<str>>,
    stored_at: Instant,
    bytes: usize,
}

/// Messages and bytes taken out of a room by one trim.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Trimmed {
    pub(crate) messages: usize,
    pub(crate) bytes: usize,
}

impl std::ops::AddAssign for Trimmed {
    fn add_assign(&mut self, other: Self) {
        self.messages += other.messages;
        self.bytes += other.bytes;
    }
}

#[derive(Debug)]
pub(crate) struct RoomLog {
    epoch: Arc<str>,
    entries: VecDeque<Arc<Entry>>,
    /// The offset of the newest message ever appended (0: none yet).
    latest: u64,
    /// Every offset up to this one is gone (trimmed, or from before this
    /// epoch); everything after it up to `latest` is stored.
    trimmed_through: u64,
    dedupe: HashMap<Arc<str>, u64>,
    bytes: usize,
    /// The last append or subscriber: an idle, empty record is forgotten
    /// `--history-meta-ttl` after it.
    pub(super) last_used: Instant,
    /// Whether the room had subscribers on this node at the last sweep or
    /// subscribe: such a record is never forgotten, so its offsets and epoch
    /// stay those its subscribers were given.
    pub(super) subscribed: bool,
    /// Set, under the room's lock, by the sweep that forgets the record: an
    /// append that finds it closed starts over with a new record.
    pub(super) closed: bool,
}

impl RoomLog {
    /// A record that costs `overhead` bytes empty.
    pub(super) fn new(epoch: Arc<str>, overhead: usize, now: Instant) -> Self {
        Self {
            epoch,
            entries: VecDeque::new(),
            latest: 0,
            trimmed_through: 0,
            dedupe: HashMap::new(),
            bytes: overhead,
            last_used: now,
            subscribed: false,
            closed: false,
        }
    }

    pub(crate) fn epoch(&self) -> &Arc<str> {
        &self.epoch
    }

    /// The offset of the newest message (0 before the first).
    pub(crate) fn latest(&self) -> u64 {
        self.latest
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes this record holds: its messages and itself.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether every message after `offset` of `epoch` is still stored, so a
    /// client that has everything up to `offset` can be given exactly what it
    /// missed.
    pub(crate) fn continuous_after(&self, epoch: &str, offset: u64) -> bool {
        *self.epoch == *epoch && self.trimmed_through <= offset && offset <= self.latest
    }

    /// Up to `max` stored messages after `offset`, oldest first.
    pub(crate) fn after(&self, offset: u64, max: usize) -> Vec<Arc<Entry>> {
        let start = self.index_after(offset);
        self.entries.range(start..).take(max).cloned().collect()
    }

    /// The stored messages after `offset`: how many, and their data's bytes.
    pub(crate) fn backlog_after(&self, offset: u64) -> (usize, usize) {
        let start = self.index_after(offset);
        let data = self
            .entries
            .range(start..)
            .map(|e| e.envelope.data.get().len())
            .sum();
        (self.entries.len() - start, data)
    }

    /// The newest `max` stored messages, oldest first.
    pub(crate) fn newest(&self, max: usize) -> Vec<Arc<Entry>> {
        let start = self.entries.len().saturating_sub(max);
        self.entries.range(start..).cloned().collect()
    }

    fn index_after(&self, offset: u64) -> usize {
        let first = self.trimmed_through + 1;
        usize::try_from(offset.saturating_add(1).saturating_sub(first))
            .map_or(self.entries.len(), |i| i.min(self.entries.len()))
    }

    /// A publish whose key the message at `offset` already has: the same
    /// data is that message again, other data a conflict.
    fn judge(&self, offset: u64, data: &str) -> Appended {
        match self.entry(offset) {
            Some(entry) if entry.envelope.data.get() == data => Appended::Duplicate {
                offset,
                id: entry.envelope.id.clone(),
            },
            // Other data; or a key without its entry, which cannot happen
            // (trims remove both): refusing is the answer that loses nothing.
            _ => Appended::Conflict { offset },
        }
    }

    fn entry(&self, offset: u64) -> Option<&Arc<Entry>> {
        let index = offset.checked_sub(self.trimmed_through + 1)?;
        self.entries.get(usize::try_from(index).ok()?)
    }

    /// Stores `envelope` as the next offset and returns it, with the bytes it
    /// added; unless `dedupe` (the publisher's key for its id) was seen, then
    /// what it found. One hash of the key either way.
    pub(crate) fn append(
        &mut self,
        envelope: Envelope,
        dedupe: Option<Arc<str>>,
        now: Instant,
    ) -> Result<(Arc<Entry>, usize), Appended> {
        let offset = self.latest + 1;
        if let Some(key) = &dedupe {
            match self.dedupe.entry(key.clone()) {
                Occupied(seen) => {
                    let first = *seen.get();
                    return Err(self.judge(first, envelope.data.get()));
                }
                Vacant(slot) => {
                    slot.insert(offset);
                }
            }
        }
        self.latest = offset;
        // The key is held once, by the entry and the map together.
        let key_bytes = dedupe.as_ref().map_or(0, |k| k.len());
        let bytes = ENTRY_OVERHEAD + envelope.data.get().len() + envelope.id.len() + key_bytes;
        let entry = Arc::new(Entry {
            offset,
            envelope,
            dedupe,
            stored_at: now,
            bytes,
        });
        self.entries.push_back(entry.clone());
        self.bytes += bytes;
        self.last_used = now;
        Ok((entry, bytes))
    }

    /// Drops the oldest messages beyond `keep`.
    pub(crate) fn trim_to(&mut self, keep: usize) -> Trimmed {
        let excess = self.entries.len().saturating_sub(keep);
        self.trim_front(excess)
    }

    /// Drops the messages stored `ttl` or longer ago.
    pub(crate) fn expire(&mut self, now: Instant, ttl: Duration) -> Trimmed {
        let expired = self
            .entries
            .iter()
            .take_while(|e| now.saturating_duration_since(e.stored_at) >= ttl)
            .count();
        self.trim_front(expired)
    }

    /// Drops the oldest messages until the record holds at most `bytes`.
    pub(crate) fn shrink_to(&mut self, bytes: usize) -> Trimmed {
        let mut n = 0;
        let mut held = self.bytes;
        for entry in &self.entries {
            if held <= bytes {
                break;
            }
            held -= entry.bytes;
            n += 1;
        }
        self.trim_front(n)
    }

    fn trim_front(&mut self, n: usize) -> Trimmed {
        let mut trimmed = Trimmed::default();
        for entry in self.entries.drain(..n) {
            if let Some(key) = &entry.dedupe {
                self.dedupe.remove(key);
            }
            self.trimmed_through = entry.offset;
            trimmed.messages += 1;
            trimmed.bytes += entry.bytes;
        }
        self.bytes -= trimmed.bytes;
        trimmed
    }
}

#[cfg(test)]
#[path = "room_tests.rs"]
pub(super) mod tests;
