//! A publisher's writer task: publishes at the planned pace (closed loop with a
//! window, or open loop on a schedule), then waits until every publish is
//! answered. Its reader task (see `client`) hands back one permit per answer.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::SinkExt as _;
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use super::args::{Pace, Plan};
use super::client::{Shared, Sink, Stop, unix_nanos};
use super::frames;

/// Most publishes fed before one flush when several are ready.
const MAX_BATCH: u64 = 64;

/// What a publisher needs besides its socket.
pub struct Publisher {
    pub plan: Arc<Plan>,
    pub conn: usize,
    pub room: String,
    pub padding: Arc<str>,
    pub shared: Arc<Shared>,
    pub answers: Arc<Semaphore>,
    pub stop: Stop,
    /// When publishing started, monotonic and wall clock (for open-loop schedules).
    pub start: (Instant, u64),
}

/// How one publisher's run went.
#[derive(Debug)]
pub struct Outcome {
    pub published: u64,
    /// When every publish had been answered; `None` if that never happened.
    pub finished: Option<Instant>,
    pub write_failed: bool,
    /// Gave up: no ack (nor error) came for `--ack-timeout`.
    pub stalled: bool,
}

/// Publishes `messages` frames at the planned pace, then waits until each one
/// is answered. Stops early when `stop` fires or the connection ends.
pub async fn publish(mut sink: Sink, p: Publisher) -> (Sink, Outcome) {
    let Publisher {
        plan,
        conn,
        room,
        padding,
        shared,
        answers,
        mut stop,
        start,
    } = p;
    let messages = plan.messages;
    let mut seq = 0u64;
    let mut write_failed = false;
    let mut stopped = false;
    let mut stalled = false;
    while seq < messages && !write_failed {
        // The next publishes, each with its send time (unix ns), fed before one flush.
        let batch: Vec<(u64, u64)> = match plan.pace {
            Pace::Window(_) => {
                let permit = tokio::select! {
                    biased;
                    () = stop.fired() => None,
                    permit = timeout(plan.ack_timeout, answers.acquire()) => match permit {
                        Ok(permit) => permit.ok(),
                        Err(_) => {
                            stalled = true;
                            None
                        }
                    },
                };
                let Some(permit) = permit else {
                    stopped = true;
                    break;
                };
                permit.forget();
                let mut n = 1;
                while n < MAX_BATCH && seq + n < messages {
                    match answers.try_acquire() {
                        Ok(more) => {
                            more.forget();
                            n += 1;
                        }
                        Err(_) => break,
                    }
                }
                let now = unix_nanos();
                (seq..seq + n).map(|s| (s, now)).collect()
            }
            Pace::Rate { per_publisher } => {
                // Publishers are staggered over one interval; latency counts from
                // the scheduled time, so a bench that falls behind shows it.
                let stagger = conn as f64 / plan.publishers as f64;
                let due = |s: u64| Duration::from_secs_f64((s as f64 + stagger) / per_publisher);
                tokio::select! {
                    biased;
                    () = stop.fired() => { stopped = true; break; }
                    () = tokio::time::sleep_until((start.0 + due(seq)).into()) => {}
                }
                // Everything already due goes out in one flush.
                let elapsed = start.0.elapsed();
                let mut end = seq + 1;
                while end < messages && end - seq < MAX_BATCH && due(end) <= elapsed {
                    end += 1;
                }
                (seq..end)
                    .map(|s| (s, start.1.saturating_add(due(s).as_nanos() as u64)))
                    .collect()
            }
        };
        for (s, t) in batch {
            let frame = frames::publish(&room, conn, s, t, &padding);
            if sink.feed(Message::text(frame)).await.is_err() {
                write_failed = true;
                break;
            }
            seq = s + 1;
        }
        shared.published.store(seq, Ordering::Relaxed);
        if !write_failed && sink.flush().await.is_err() {
            write_failed = true;
        }
    }
    let finished = if write_failed || stopped {
        None
    } else {
        // Every publish is answered when all window slots are free again, or
        // (open loop) when one permit per publish has come in.
        let needed = match plan.pace {
            Pace::Window(w) => u64::from(w),
            Pace::Rate { .. } => seq,
        };
        match wait_answers(&answers, &mut stop, needed, plan.ack_timeout).await {
            Answers::All => Some(Instant::now()),
            Answers::Stalled => {
                stalled = true;
                None
            }
            Answers::Stopped => None,
        }
    };
    let outcome = Outcome {
        published: seq,
        finished,
        write_failed,
        stalled,
    };
    (sink, outcome)
}

enum Answers {
    All,
    /// No answer came for `--ack-timeout`.
    Stalled,
    /// Stopped by --timeout, or the connection ended.
    Stopped,
}

/// Takes `needed` permits, giving up when none comes in for `ack_timeout`.
async fn wait_answers(
    answers: &Semaphore,
    stop: &mut Stop,
    mut needed: u64,
    ack_timeout: Duration,
) -> Answers {
    while needed > 0 {
        let chunk = u32::try_from(needed).unwrap_or(u32::MAX);
        let before = answers.available_permits();
        let acquired = tokio::select! {
            biased;
            () = stop.fired() => return Answers::Stopped,
            permits = timeout(ack_timeout, answers.acquire_many(chunk)) => permits,
        };
        match acquired {
            Ok(Ok(permits)) => {
                permits.forget();
                needed -= u64::from(chunk);
            }
            Ok(Err(_)) => return Answers::Stopped,
            // Permits handed to the abandoned wait went back: any new one is progress.
            Err(_) if answers.available_permits() == before => return Answers::Stalled,
            Err(_) => {}
        }
    }
    Answers::All
}
