//! What one connection observed, kept by its reader task alone (no lock, no
//! shared counter per message), and the totals merged from all of them at the end.

use std::collections::BTreeMap;
use std::time::Instant;

use hdrhistogram::Histogram;

use super::tracker::{Seen, SeqTracker};

/// Significant digits of every latency histogram.
const SIGFIG: u8 = 3;
/// Latencies are clamped to an hour (in microseconds).
const MAX_MICROS: u64 = 3_600_000_000;

/// One connection's observations.
#[derive(Debug)]
pub struct ConnStats {
    /// Publish→delivery latency in microseconds. Created at the first delivery
    /// and grown as needed, so idle connections cost nothing; u32 counts halve
    /// its size (~32 KiB for latencies up to 100 ms).
    pub latency: Option<Histogram<u32>>,
    /// Sequence numbers seen, one tracker per publisher of this room, by slot.
    pub from: Vec<SeqTracker>,
    /// For a publisher: the acks of its own publishes.
    pub acks: Option<SeqTracker>,
    /// Error frames, by code.
    pub error_frames: BTreeMap<String, u64>,
    /// Frames the bench could not attribute: unparsable, foreign, out of range,
    /// or a repeated ack.
    pub unexpected: u64,
    /// How the server ended the connection during the run: the close code, or
    /// 1006 when it vanished without a close frame.
    pub closed: Option<u16>,
    pub last_delivery: Option<Instant>,
    /// The publisher behind each slot of `from`.
    pub publisher_ids: Vec<usize>,
    /// `--drop-every`: what this receiver's drops and resumes did.
    pub resumes: Resumes,
}

/// A receiver's connection drops and what its resumes were told.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Resumes {
    /// Connections dropped on purpose.
    pub drops: u64,
    /// Resumes answered `recovered: true`.
    pub recovered: u64,
    /// Resumes answered `recovered: false` (or without `recovered`).
    pub not_recovered: u64,
    /// Reconnects that failed (the receiver then stops).
    pub failures: u64,
}

impl std::ops::AddAssign for Resumes {
    fn add_assign(&mut self, o: Self) {
        self.drops += o.drops;
        self.recovered += o.recovered;
        self.not_recovered += o.not_recovered;
        self.failures += o.failures;
    }
}

/// One publisher's deliveries across every receiver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublisherTally {
    pub delivered: u64,
    pub duplicated: u64,
}

impl ConnStats {
    pub fn new(publishers_in_room: usize, messages: u64, is_publisher: bool) -> Self {
        Self {
            latency: None,
            from: vec![SeqTracker::new(messages); publishers_in_room],
            acks: is_publisher.then(|| SeqTracker::new(messages)),
            error_frames: BTreeMap::new(),
            unexpected: 0,
            closed: None,
            last_delivery: None,
            publisher_ids: Vec::new(),
            resumes: Resumes::default(),
        }
    }

    /// Records message `seq` from the publisher in `slot`, sent at `sent_ns`;
    /// true when it is a new delivery.
    pub fn delivery(&mut self, slot: usize, seq: u64, sent_ns: u64, now_ns: u64) -> bool {
        let Some(tracker) = self.from.get_mut(slot) else {
            self.unexpected += 1;
            return false;
        };
        match tracker.record(seq) {
            Seen::New => {}
            Seen::Duplicate => return false,
            Seen::OutOfRange => {
                self.unexpected += 1;
                return false;
            }
        }
        // An auto-resizing histogram records anything below an hour.
        let micros = (now_ns.saturating_sub(sent_ns) / 1_000).min(MAX_MICROS);
        let _ = self
            .latency
            .get_or_insert_with(new_histogram)
            .record(micros);
        self.last_delivery = Some(Instant::now());
        true
    }

    /// Records the ack of our publish `seq`; true when it is the first.
    pub fn ack(&mut self, seq: u64) -> bool {
        let new = self
            .acks
            .as_mut()
            .is_some_and(|acks| acks.record(seq) == Seen::New);
        if !new {
            self.unexpected += 1;
        }
        new
    }

    pub fn error_frame(&mut self, code: &str) {
        *self.error_frames.entry(code.to_owned()).or_default() += 1;
    }
}

pub fn new_histogram<T: hdrhistogram::Counter>() -> Histogram<T> {
    Histogram::new(SIGFIG).expect("3 significant digits is a valid histogram")
}

/// Everything merged.
#[derive(Debug)]
pub struct Totals {
    pub latency: Histogram<u64>,
    /// Distinct deliveries.
    pub delivered: u64,
    pub duplicated: u64,
    pub acked: u64,
    pub error_frames: BTreeMap<String, u64>,
    /// Connections the server ended during the run, by close code.
    pub closes: BTreeMap<String, u64>,
    pub unexpected: u64,
    pub last_delivery: Option<Instant>,
    pub resumes: Resumes,
    /// By publisher index.
    pub per_publisher: BTreeMap<usize, PublisherTally>,
}

impl Default for Totals {
    fn default() -> Self {
        Self {
            latency: new_histogram(),
            delivered: 0,
            duplicated: 0,
            acked: 0,
            error_frames: BTreeMap::new(),
            closes: BTreeMap::new(),
            unexpected: 0,
            last_delivery: None,
            resumes: Resumes::default(),
            per_publisher: BTreeMap::new(),
        }
    }
}

impl Totals {
    pub fn add(&mut self, conn: ConnStats) {
        if let Some(h) = &conn.latency {
            // Same precision, so each bucket's value lands in the same bucket
            // here; the total auto-resizes, so recording cannot fail.
            for v in h.iter_recorded() {
                let _ = self
                    .latency
                    .record_n(v.value_iterated_to(), u64::from(v.count_at_value()));
            }
        }
        for (slot, t) in conn.from.iter().enumerate() {
            self.delivered += t.distinct();
            self.duplicated += t.duplicates();
            if let Some(&p) = conn.publisher_ids.get(slot) {
                let tally = self.per_publisher.entry(p).or_default();
                tally.delivered += t.distinct();
                tally.duplicated += t.duplicates();
            }
        }
        self.resumes += conn.resumes;
        self.acked += conn.acks.as_ref().map_or(0, SeqTracker::distinct);
        for (code, n) in conn.error_frames {
            *self.error_frames.entry(code).or_default() += n;
        }
        if let Some(code) = conn.closed {
            *self.closes.entry(code.to_string()).or_default() += 1;
        }
        self.unexpected += conn.unexpected;
        self.last_delivery = self.last_delivery.max(conn.last_delivery);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_connections() {
        let mut a = ConnStats::new(2, 3, true);
        assert!(a.delivery(0, 0, 1_000_000, 3_000_000));
        assert!(a.delivery(1, 0, 0, 1_000));
        assert!(!a.delivery(1, 0, 0, 1_000));
        assert!(!a.delivery(2, 0, 0, 1_000));
        assert!(!a.delivery(0, 7, 0, 1_000));
        assert!(a.ack(0));
        assert!(!a.ack(0));
        a.error_frame("internal");
        let mut b = ConnStats::new(2, 3, false);
        assert!(b.delivery(0, 2, 5_000, 4_000)); // clock skew: clamped to 0
        assert!(!b.ack(1));
        b.error_frame("internal");
        b.closed = Some(1008);

        let mut t = Totals::default();
        t.add(a);
        t.add(b);
        assert_eq!((t.delivered, t.duplicated, t.acked), (3, 1, 1));
        assert_eq!(t.unexpected, 4);
        assert_eq!(t.error_frames["internal"], 2);
        assert_eq!(t.closes["1008"], 1);
        assert_eq!(t.latency.len(), 3);
        assert_eq!(t.latency.max(), 2000);
        assert_eq!(t.latency.min(), 0);
    }

    #[test]
    fn merged_latency_matches_one_histogram() {
        let mut direct = new_histogram::<u64>();
        let mut conns = [
            ConnStats::new(1, 100_000, false),
            ConnStats::new(1, 100_000, false),
        ];
        for seq in 0..100_000u64 {
            let micros = (seq * 7919) % 250_000;
            direct.record(micros).unwrap();
            conns[(seq % 2) as usize].delivery(0, seq, 0, micros * 1_000);
        }
        let mut t = Totals::default();
        for c in conns {
            t.add(c);
        }
        assert_eq!(t.latency.len(), direct.len());
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                t.latency.value_at_quantile(q),
                direct.value_at_quantile(q),
                "q={q}"
            );
        }
        assert_eq!(t.latency.max(), direct.max());
    }
}
