//! Warnings that someone else can make the node repeat: logged at most once per
//! interval for each kind, with the number left out since the last line, and
//! every occurrence counted in `wsgate_warnings_total{kind}`.
//!
//! A warning per event lets whoever causes the events write the logs: with
//! NATS down, 100,000 subscribes once wrote 137,000 lines (48 MB). Here the
//! log says that something is happening and how often; the counter says
//! exactly how often, and `rate()` over it is what alerts should read.
//!
//! The limiter is two atomics per kind: the hot path (a flood of dropped
//! messages) pays a load and an add, never a lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opentelemetry::metrics::Meter;

use super::counters::LabelledCounter;
use crate::labels::{LabelSet as _, WarningKind};

/// The rate-limited warnings of one node, one limiter per [`WarningKind`].
/// Cheap to clone: one `Arc`.
///
/// How a warning is logged (crate-internal, so not a doctest; the unit tests
/// below drive the same calls):
///
/// ```ignore
/// # use std::time::Duration;
/// # use wsgate::telemetry::{WarningKind, Warnings};
/// # let meter = opentelemetry::global::meter("doc");
/// let warnings = Warnings::new(&meter, Duration::from_secs(10));
/// # let (room, error) = ("lobby", "not connected to NATS");
/// if let Some(suppressed) = warnings.admit(WarningKind::BrokerSubscribeFailed) {
///     tracing::warn!(room, error, suppressed, "subscribe failed");
/// }
/// ```
#[derive(Clone)]
pub struct Warnings(Arc<Inner>);

struct Inner {
    /// Indexed by `WarningKind::index`.
    limiters: Box<[WarnLimiter]>,
    counts: LabelledCounter<WarningKind>,
}

impl Warnings {
    pub fn new(meter: &Meter, interval: Duration) -> Self {
        Self(Arc::new(Inner {
            limiters: WarningKind::ALL
                .iter()
                .map(|_| WarnLimiter::new(interval))
                .collect(),
            counts: LabelledCounter::new(
                meter,
                "wsgate.warnings",
                "Occurrences of conditions logged as rate-limited warnings, by kind, whether their line was logged or suppressed.",
                "{warning}",
                "kind",
            ),
        }))
    }

    /// Counts one occurrence of `kind`. Returns `Some(suppressed)` when this one
    /// should be logged, `suppressed` being how many occurrences of the kind
    /// were not logged since its last line (put it on the line).
    #[must_use = "log the warning when this returns Some"]
    pub fn admit(&self, kind: WarningKind) -> Option<u64> {
        self.0.counts.add(kind, 1);
        self.0.limiters[kind.index()].admit()
    }
}

/// Lets one occurrence through per interval and counts the others, which the
/// next occurrence let through reports. Nothing is lost from the count: every
/// occurrence is either let through or reported by a later one (or still
/// pending, when none has come since).
#[derive(Debug)]
pub struct WarnLimiter {
    interval: u64,
    origin: Instant,
    /// Nanoseconds after `origin` before which nothing is let through.
    next: AtomicU64,
    suppressed: AtomicU64,
}

impl WarnLimiter {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval: nanos(interval),
            origin: Instant::now(),
            next: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// One occurrence now: `Some(suppressed since the last)` if it is let through.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(self.origin.elapsed())
    }

    /// One occurrence at `now` (time since the limiter was made).
    fn admit_at(&self, now: Duration) -> Option<u64> {
        let now = nanos(now);
        let next = self.next.load(Ordering::Relaxed);
        // Of concurrent callers past `next`, the one that moves it wins; the
        // others count as suppressed, reported on the next line.
        if now >= next
            && self
                .next
                .compare_exchange(
                    next,
                    now.saturating_add(self.interval),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn one_line_per_interval_carries_the_count_of_the_others() {
        let limiter = WarnLimiter::new(SECOND);
        let at = |ms: u64| limiter.admit_at(Duration::from_millis(ms));
        assert_eq!(at(0), Some(0), "the first is logged");
        for ms in 1..1000 {
            assert_eq!(at(ms), None, "within the interval, at {ms} ms");
        }
        assert_eq!(at(1000), Some(999), "the next line reports the rest");
        assert_eq!(at(1500), None);
        assert_eq!(at(5000), Some(1), "a quiet spell, then one more");
        assert_eq!(at(5001), None);
    }

    #[test]
    fn concurrent_occurrences_are_all_accounted_for() {
        const THREADS: u64 = 4;
        const EACH: u64 = 10_000;
        let limiter = Arc::new(WarnLimiter::new(Duration::from_micros(50)));
        let logged: Vec<(u64, u64)> = (0..THREADS)
            .map(|_| {
                let limiter = limiter.clone();
                std::thread::spawn(move || {
                    let mut lines = 0;
                    let mut reported = 0;
                    for _ in 0..EACH {
                        if let Some(suppressed) = limiter.admit() {
                            lines += 1;
                            reported += suppressed;
                        }
                    }
                    (lines, reported)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .collect();
        let lines: u64 = logged.iter().map(|l| l.0).sum();
        let reported: u64 = logged.iter().map(|l| l.1).sum();
        let pending = limiter.suppressed.load(Ordering::Relaxed);
        assert!(lines >= 1);
        assert_eq!(lines + reported + pending, THREADS * EACH);
    }

    #[test]
    fn a_zero_interval_logs_every_uncontended_occurrence() {
        let limiter = WarnLimiter::new(Duration::ZERO);
        for _ in 0..10 {
            assert_eq!(limiter.admit(), Some(0));
        }
    }
}
