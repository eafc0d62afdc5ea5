//! `--churn`: extra connections that join and leave a room over and over while
//! the publishers run, so a run shows what membership churn costs the fan-out
//! (a subscribe and an unsubscribe take the room's lock that fan-out holds).
//!
//! Churners are not receivers: their deliveries are neither expected nor
//! tracked, and they never publish. Each one alternates `subscribe` and
//! `unsubscribe` on its room, waiting for the confirmation each time, paced so
//! that all of them together make `--churn` joins (and as many leaves) a
//! second. Messages that arrive while a churner is in the room are read and
//! ignored.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use super::args::Plan;
use super::client;
use super::frames::{self, Kind};

/// What the churners did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChurnReport {
    /// Joins asked for per second (`--churn`).
    pub target_joins_per_sec: f64,
    /// Churn connections (`--churners`).
    pub connections: usize,
    /// Confirmed subscribes and unsubscribes.
    pub joins: u64,
    pub leaves: u64,
    /// Confirmed joins per second over the time the churners ran.
    pub joins_per_sec: f64,
    /// Churners that could not connect, or whose connection ended early.
    pub failures: u64,
}

/// Joins, leaves and failures, counted by every churner as they happen, so a
/// churner stopped mid-way has already reported what it did.
#[derive(Debug, Default)]
struct Tally {
    joins: AtomicU64,
    leaves: AtomicU64,
    failures: AtomicU64,
}

/// The churners of a run, running until [`Churn::stop`].
pub struct Churn {
    tasks: JoinSet<()>,
    tally: Arc<Tally>,
    stop: watch::Sender<bool>,
    started: tokio::time::Instant,
    target: f64,
    connections: usize,
}

impl Churn {
    /// Starts `--churners` connections on room 0 of the run (the room of the
    /// first publisher), spread over the targets like the other connections.
    pub fn start(plan: &Arc<Plan>, addrs: &[SocketAddr]) -> Option<Self> {
        let churn = plan.churn?;
        let (stop, stopped) = watch::channel(false);
        let tally = Arc::new(Tally::default());
        // Each churner makes one join and one leave per period.
        let period = Duration::from_secs_f64(churn.churners as f64 / churn.joins_per_sec);
        let mut tasks = JoinSet::new();
        for i in 0..churn.churners {
            let target = i % plan.targets.len();
            let addr = addrs[target];
            let url = plan.targets[target].url.clone();
            let room = plan.room_name(0);
            let mut stopped = stopped.clone();
            let tally = tally.clone();
            // Spread the churners' phases over the period.
            let offset = period.mul_f64(i as f64 / churn.churners as f64);
            tasks.spawn(async move {
                tokio::select! {
                    () = churn_one(addr, &url, &room, period, offset, &tally) => {}
                    _ = stopped.wait_for(|stop| *stop) => {}
                }
            });
        }
        Some(Self {
            tasks,
            tally,
            stop,
            started: tokio::time::Instant::now(),
            target: churn.joins_per_sec,
            connections: churn.churners,
        })
    }

    /// Stops every churner and reports what they did.
    pub async fn stop(mut self) -> ChurnReport {
        let secs = self.started.elapsed().as_secs_f64();
        let _ = self.stop.send(true);
        let mut panicked = 0;
        while let Some(done) = self.tasks.join_next().await {
            panicked += u64::from(done.is_err());
        }
        let joins = self.tally.joins.load(Ordering::Relaxed);
        ChurnReport {
            target_joins_per_sec: self.target,
            connections: self.connections,
            joins,
            leaves: self.tally.leaves.load(Ordering::Relaxed),
            joins_per_sec: if secs > 0.0 { joins as f64 / secs } else { 0.0 },
            failures: self.tally.failures.load(Ordering::Relaxed) + panicked,
        }
    }
}

/// One churner: connect and subscribe, then leave and join again once per
/// `period`, until cancelled or its connection fails.
async fn churn_one(
    addr: SocketAddr,
    url: &str,
    room: &str,
    period: Duration,
    offset: Duration,
    tally: &Tally,
) {
    tokio::time::sleep(offset).await;
    let Ok(ws) = client::connect(addr, url, room).await else {
        tally.failures.fetch_add(1, Ordering::Relaxed);
        return;
    };
    tally.joins.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut stream) = ws.split();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for (frame, expected, count) in [
            (frames::unsubscribe(room), Kind::Unsubscribed, &tally.leaves),
            (frames::subscribe(room), Kind::Subscribed, &tally.joins),
        ] {
            if sink.send(Message::text(frame)).await.is_err()
                || !confirmed(&mut stream, expected).await
            {
                tally.failures.fetch_add(1, Ordering::Relaxed);
                return;
            }
            count.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Reads until the confirmation `expected` arrives, skipping messages;
/// `false` if the connection ends or the server refuses.
async fn confirmed(stream: &mut client::Stream, expected: Kind) -> bool {
    while let Some(Ok(message)) = stream.next().await {
        if let Message::Text(text) = message
            && let Some(frame) = frames::parse(&text)
        {
            if frame.kind == expected {
                return true;
            }
            if frame.kind == Kind::Error {
                return false;
            }
        }
    }
    false
}
