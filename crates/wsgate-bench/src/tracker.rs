//! Which sequence numbers of one publisher a receiver has seen: exact counts of
//! distinct deliveries and duplicates, in constant memory while messages arrive in
//! order.
//!
//! Everything below `base` has been seen. Above it, a bitset of 64-bit words
//! records out-of-order arrivals; a word is dropped (and `base` moves on) once all
//! of its 64 bits are set. In order, the set holds one word. After a gap the
//! word holding the missing number never fills, so the set grows by one bit per
//! later message: at most `messages / 8` bytes, paid only when something was lost
//! or reordered.

use std::collections::VecDeque;

/// The outcome of recording one sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First time: a delivery.
    New,
    /// Seen before: a duplicate.
    Duplicate,
    /// At or past the number of messages each publisher sends: not ours.
    OutOfRange,
}

/// The sequence numbers seen from one publisher, `0..limit`.
#[derive(Debug, Clone)]
pub struct SeqTracker {
    limit: u64,
    /// Every number below `base` was seen; `base` is a multiple of 64.
    base: u64,
    /// Bit `i` of `words[k]` is number `base + 64 k + i`.
    words: VecDeque<u64>,
    distinct: u64,
    duplicates: u64,
}

impl SeqTracker {
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            base: 0,
            words: VecDeque::new(),
            distinct: 0,
            duplicates: 0,
        }
    }

    pub fn record(&mut self, seq: u64) -> Seen {
        if seq >= self.limit {
            return Seen::OutOfRange;
        }
        if seq < self.base {
            self.duplicates += 1;
            return Seen::Duplicate;
        }
        let offset = seq - self.base;
        // The offset is below `limit`, which is a u64, but a word index is a usize.
        let Ok(word) = usize::try_from(offset / 64) else {
            return Seen::OutOfRange;
        };
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let bit = 1u64 << (offset % 64);
        if self.words[word] & bit != 0 {
            self.duplicates += 1;
            return Seen::Duplicate;
        }
        self.words[word] |= bit;
        self.distinct += 1;
        while self.words.front() == Some(&u64::MAX) {
            self.words.pop_front();
            self.base += 64;
        }
        Seen::New
    }

    /// Distinct numbers seen.
    pub fn distinct(&self) -> u64 {
        self.distinct
    }

    /// Numbers seen more than once (each extra arrival counts).
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Numbers in `0..limit` never seen.
    pub fn missing(&self) -> u64 {
        self.limit - self.distinct
    }

    /// Whether every number in `0..limit` was seen.
    pub fn is_complete(&self) -> bool {
        self.distinct == self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_exactly() {
        // (case, limit, arrivals, distinct, duplicates, missing)
        type Case = (&'static str, u64, Vec<u64>, u64, u64, u64);
        let cases: &[Case] = &[
            ("nothing", 5, vec![], 0, 0, 5),
            ("in order", 5, vec![0, 1, 2, 3, 4], 5, 0, 0),
            ("out of order", 5, vec![3, 0, 4, 2, 1], 5, 0, 0),
            ("duplicate", 5, vec![0, 1, 1, 2, 3, 4, 4, 4], 5, 3, 0),
            ("gap", 5, vec![0, 1, 3, 4], 4, 0, 1),
            ("gap at the end", 5, vec![0, 1, 2], 3, 0, 2),
            (
                "late arrival fills the gap",
                5,
                vec![0, 2, 3, 4, 1],
                5,
                0,
                0,
            ),
            (
                "duplicate of a late arrival",
                5,
                vec![0, 2, 1, 2, 1],
                3,
                2,
                2,
            ),
            (
                "duplicate below the base",
                200,
                (0..130).chain([5, 64]).collect(),
                130,
                2,
                70,
            ),
            (
                "across words out of order",
                300,
                (0..300).rev().collect(),
                300,
                0,
                0,
            ),
            (
                "gap then many late ones",
                1000,
                (0..1000).filter(|s| *s != 10).chain([10, 999]).collect(),
                1000,
                1,
                0,
            ),
        ];
        for (case, limit, arrivals, distinct, duplicates, missing) in cases {
            let mut t = SeqTracker::new(*limit);
            for s in arrivals {
                t.record(*s);
            }
            assert_eq!(t.distinct(), *distinct, "{case}: distinct");
            assert_eq!(t.duplicates(), *duplicates, "{case}: duplicates");
            assert_eq!(t.missing(), *missing, "{case}: missing");
            assert_eq!(t.is_complete(), *missing == 0, "{case}: complete");
        }
    }

    #[test]
    fn each_arrival_is_classified() {
        let mut t = SeqTracker::new(3);
        assert_eq!(t.record(1), Seen::New);
        assert_eq!(t.record(1), Seen::Duplicate);
        assert_eq!(t.record(0), Seen::New);
        assert_eq!(t.record(3), Seen::OutOfRange);
        assert_eq!(t.record(u64::MAX), Seen::OutOfRange);
        assert_eq!(t.distinct(), 2);
    }

    #[test]
    fn in_order_arrivals_keep_one_word() {
        let mut t = SeqTracker::new(1_000_000);
        for s in 0..1_000_000 {
            assert_eq!(t.record(s), Seen::New);
            assert!(t.words.len() <= 1);
        }
        assert!(t.is_complete());
    }
}
