//! `--max-msgs-per-sec`: how many frames one connection may send, and what
//! happens to a client that ignores the limit.
//!
//! Every frame a client sends counts: text, binary, ping and pong. Subscribes
//! and unsubscribes are text frames, so churning rooms (which turns into NATS
//! SUB/UNSUB traffic) is limited like publishing.
//!
//! - Up to the limit (a token bucket whose burst is one second's worth) a
//!   frame is handled.
//! - Over it, the frame is refused: not handled, counted, and answered with a
//!   `rate_limited` error at most once a second, so refusing costs the server
//!   less than the client's sending does.
//! - A client that sends more than twice the limit in each of three
//!   consecutive seconds is closed with 1008: it is not slowing down.
//!
//! The bucket is the generic cell rate algorithm, written here rather than
//! taken from `governor` (which wsgate used before): the bucket and the abuse
//! windows then run on one clock, the frame's arrival time the read loop has
//! already read, and on tokio's clock, which tests can pause and advance.
//! `governor` reads a clock of its own on every check.

use tokio::time::{Duration, Instant};

/// Seconds in a row over twice the limit that get a client closed.
const ABUSIVE_SECONDS: u8 = 3;
/// The most `rate_limited` error frames a client gets per this interval.
const NOTIFY_EVERY: Duration = Duration::from_secs(1);
const WINDOW: Duration = Duration::from_secs(1);

/// What to do with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Within the limit: handle it.
    Allowed,
    /// Over the limit: refuse it; `notify` says whether to send an error frame.
    Refused { notify: bool },
    /// The client has been far over the limit for too long: close it.
    Abusive,
}

pub(super) struct FrameRate {
    /// One frame's share of a second: the bucket refills one frame per step.
    step: Duration,
    /// How far ahead of now the bucket may run: a second's worth of frames
    /// less one, the burst.
    burst: Duration,
    /// The theoretical arrival time of the next frame under the limit.
    next_due: Instant,
    /// Frames per window beyond which a window counts as abusive.
    abusive_above: u32,
    window_start: Instant,
    window_frames: u32,
    /// Consecutive abusive windows, the current one included once it crossed.
    abusive_windows: u8,
    last_notified: Option<Instant>,
}

impl FrameRate {
    /// `None` when the limit is 0 (unlimited).
    pub(super) fn new(per_second: u32) -> Option<Self> {
        if per_second == 0 {
            return None;
        }
        let step = WINDOW / per_second;
        let now = Instant::now();
        Some(Self {
            step,
            burst: step * (per_second - 1),
            next_due: now,
            abusive_above: per_second.saturating_mul(2),
            window_start: now,
            window_frames: 0,
            abusive_windows: 0,
            last_notified: None,
        })
    }

    /// Counts one frame received at `now` and decides its fate.
    pub(super) fn check(&mut self, now: Instant) -> Verdict {
        self.count(now);
        if self.abusive_windows >= ABUSIVE_SECONDS {
            return Verdict::Abusive;
        }
        let due = self.next_due.max(now);
        if due.duration_since(now) <= self.burst {
            self.next_due = due + self.step;
            return Verdict::Allowed;
        }
        let notify = self
            .last_notified
            .is_none_or(|at| now.duration_since(at) >= NOTIFY_EVERY);
        if notify {
            self.last_notified = Some(now);
        }
        Verdict::Refused { notify }
    }

    fn count(&mut self, now: Instant) {
        let elapsed = now.duration_since(self.window_start);
        if elapsed >= WINDOW {
            let previous_abusive = self.window_frames > self.abusive_above;
            // A gap of a whole window or more without frames breaks a streak.
            if !previous_abusive || elapsed >= WINDOW * 2 {
                self.abusive_windows = 0;
            }
            let windows = (elapsed.as_nanos() / WINDOW.as_nanos()) as u32;
            self.window_start += WINDOW * windows;
            self.window_frames = 0;
        }
        self.window_frames += 1;
        if self.window_frames == self.abusive_above + 1 {
            self.abusive_windows += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `per_second` frames evenly through each of `seconds` seconds from
    /// `start`, returning every verdict.
    fn send(rate: &mut FrameRate, start: Instant, per_second: u32, seconds: u32) -> Vec<Verdict> {
        let step = WINDOW / per_second;
        (0..per_second * seconds)
            .map(|i| rate.check(start + step * i))
            .collect()
    }

    fn count(verdicts: &[Verdict], wanted: impl Fn(&Verdict) -> bool) -> usize {
        verdicts.iter().filter(|v| wanted(v)).count()
    }

    #[tokio::test(start_paused = true)]
    async fn within_the_limit_everything_is_allowed() {
        let mut rate = FrameRate::new(50).unwrap();
        let start = Instant::now();
        tokio::time::advance(Duration::from_secs(10)).await;
        let verdicts = send(&mut rate, start, 40, 5);
        assert!(verdicts.iter().all(|v| *v == Verdict::Allowed));
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_is_closed_in_its_third_second_with_one_error_frame_a_second() {
        let mut rate = FrameRate::new(50).unwrap();
        let start = Instant::now();
        let verdicts = send(&mut rate, start, 950, 5);
        let closed_at = verdicts
            .iter()
            .position(|v| *v == Verdict::Abusive)
            .expect("closed");
        assert!(
            (950 * 2..950 * 3).contains(&closed_at),
            "closed at frame {closed_at}"
        );
        let before = &verdicts[..closed_at];
        let notified = count(before, |v| *v == Verdict::Refused { notify: true });
        assert!((2..=3).contains(&notified), "{notified} error frames");
    }

    #[tokio::test(start_paused = true)]
    async fn between_the_limit_and_twice_it_is_refused_but_not_closed() {
        let mut rate = FrameRate::new(50).unwrap();
        let start = Instant::now();
        let verdicts = send(&mut rate, start, 90, 10);
        assert_eq!(count(&verdicts, |v| *v == Verdict::Abusive), 0);
        assert!(count(&verdicts, |v| matches!(v, Verdict::Refused { .. })) > 300);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_second_breaks_the_streak() {
        let mut rate = FrameRate::new(10).unwrap();
        let start = Instant::now();
        let mut verdicts = send(&mut rate, start, 100, 2);
        // Nothing at all during the third second.
        verdicts.extend(send(&mut rate, start + WINDOW * 3, 100, 2));
        assert_eq!(count(&verdicts, |v| *v == Verdict::Abusive), 0);
    }
}
