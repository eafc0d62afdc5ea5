//! A published message in flight between the publisher and the node(s) that
//! deliver it, and the ids and clocks it carries.

use std::cell::OnceCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::trace::SpanContext;
use serde_json::value::RawValue;

use wsgate_protocol::room::RoomKey;

/// One published message, as the broker carries it.
#[derive(Debug)]
pub(crate) struct Envelope {
    /// Server-assigned, unique across nodes and restarts (see [`MessageIds`]).
    /// Shared, because every span and header of the message carries it.
    pub(crate) id: Arc<str>,
    /// The room, within its tenant.
    pub(crate) room: RoomKey,
    /// The payload exactly as published; valid JSON by construction.
    pub(crate) data: Box<RawValue>,
    /// The context of the `send` span: the parent of every node's `process` span.
    /// Invalid when tracing is off and the publisher sent no trace context.
    pub(crate) trace: SpanContext,
    pub(crate) published_at: PublishedAt,
}

/// When a message was accepted, for the delivery-latency histogram.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PublishedAt {
    /// Accepted on this node: a monotonic clock, immune to wall-clock steps.
    Local(Instant),
    /// Accepted on another node: only a wall clock is comparable across machines,
    /// so latency includes any skew between the two clocks.
    Remote(SystemTime),
}

impl PublishedAt {
    pub(crate) fn now() -> Self {
        Self::Local(Instant::now())
    }

    /// Time from acceptance to `delivered`; zero when a skewed remote clock
    /// would make it negative.
    pub(crate) fn latency(&self, delivered: &DeliveredAt) -> Duration {
        match self {
            Self::Local(at) => delivered.now.saturating_duration_since(*at),
            Self::Remote(at) => delivered.wall().duration_since(*at).unwrap_or_default(),
        }
    }

    /// The wall-clock time of acceptance, for carrying to other nodes.
    pub(crate) fn wall_clock(&self) -> SystemTime {
        match self {
            Self::Local(at) => SystemTime::now() - at.elapsed(),
            Self::Remote(at) => *at,
        }
    }
}

/// The moment a batch of frames reached the socket: the monotonic clock, read
/// once per batch, and the wall clock, read only if a remote message needs it.
#[derive(Debug)]
pub(crate) struct DeliveredAt {
    now: Instant,
    wall: OnceCell<SystemTime>,
}

impl DeliveredAt {
    pub(crate) fn now() -> Self {
        Self {
            now: Instant::now(),
            wall: OnceCell::new(),
        }
    }

    fn wall(&self) -> SystemTime {
        *self.wall.get_or_init(SystemTime::now)
    }
}

/// Generates message ids: a random per-process prefix and a counter.
///
/// The 48-bit random prefix makes ids unique across nodes and restarts without
/// coordination; the counter makes them cheap and ordered within a process.
#[derive(Debug)]
pub(crate) struct MessageIds {
    prefix: String,
    next: AtomicU64,
}

impl MessageIds {
    pub(crate) fn new() -> Self {
        let prefix = format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        Self {
            prefix,
            next: AtomicU64::new(1),
        }
    }

    pub(crate) fn next_id(&self) -> Arc<str> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut id = String::with_capacity(self.prefix.len() + 21);
        id.push_str(&self.prefix);
        id.push('-');
        // A decimal counter without the formatting machinery.
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut rest = n;
        loop {
            at -= 1;
            digits[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        id.extend(digits[at..].iter().map(|&d| char::from(d)));
        Arc::from(id)
    }
}

impl Default for MessageIds {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_within_and_across_generators() {
        let a = MessageIds::new();
        let b = MessageIds::new();
        let ids: std::collections::HashSet<Arc<str>> =
            (0..1000).flat_map(|_| [a.next_id(), b.next_id()]).collect();
        assert_eq!(ids.len(), 2000);
    }

    #[test]
    fn ids_are_prefix_dash_counter() {
        let ids = MessageIds::new();
        let first = ids.next_id();
        let (prefix, n) = first.split_once('-').unwrap();
        assert_eq!(prefix.len(), 12);
        assert_eq!(n, "1");
        for expected in 2..=1000 {
            let id = ids.next_id();
            assert_eq!(id.split_once('-').unwrap().1, expected.to_string());
        }
    }

    #[test]
    fn remote_clock_in_the_future_gives_zero_not_a_panic() {
        let future = PublishedAt::Remote(SystemTime::now() + Duration::from_secs(60));
        assert_eq!(future.latency(&DeliveredAt::now()), Duration::ZERO);
    }

    #[test]
    fn latency_reads_the_clock_of_the_node_that_accepted() {
        let local = PublishedAt::Local(Instant::now() - Duration::from_secs(2));
        let remote = PublishedAt::Remote(SystemTime::now() - Duration::from_secs(3));
        let at = DeliveredAt::now();
        let (local, remote) = (local.latency(&at), remote.latency(&at));
        assert!((2.0..2.5).contains(&local.as_secs_f64()), "{local:?}");
        assert!((3.0..3.5).contains(&remote.as_secs_f64()), "{remote:?}");
    }
}
