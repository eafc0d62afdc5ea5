//! The connect phase: open every connection at `--connect-rate`, overlapping
//! up to a bound, each subscribed before the phase ends. `--connect-rate 0`
//! opens them all at once, unbounded: a reconnect storm.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout};

use super::args::{Plan, Target};
use super::client::{self, Subscribed, Ws};
use super::frames;

/// One connection's attempt: the connection and its `subscribed`, or why not.
type Connected = Result<(Ws, Subscribed), String>;
use super::ui::Ui;

/// Connects overlapping at once: a bound below the kernel's accept backlog.
const MAX_IN_FLIGHT: usize = 1000;
/// One connect plus subscribe, however long the run may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The connections, by index (`None`: failed), and what went wrong.
pub struct Ramp {
    /// Each connection and what its `subscribed` said.
    pub conns: Vec<Option<(Ws, Subscribed)>>,
    pub failures: BTreeMap<String, u64>,
    pub connected: usize,
    pub secs: f64,
    pub timed_out: bool,
}

/// Resolves every target once, so 15,000 connects do not mean 15,000 lookups.
pub async fn resolve(targets: &[Target]) -> anyhow::Result<Vec<SocketAddr>> {
    let mut addrs = Vec::with_capacity(targets.len());
    for t in targets {
        let addr = tokio::net::lookup_host((t.host.as_str(), t.port))
            .await
            .ok()
            .and_then(|mut found| found.next())
            .ok_or_else(|| anyhow::anyhow!("--url {}: cannot resolve {:?}", t.url, t.host))?;
        addrs.push(addr);
    }
    Ok(addrs)
}

/// Opens connection i to target i mod targets and subscribes it to room i mod
/// rooms, at most `connect_rate` new connections per second (0: all at once).
pub async fn connect_all(
    plan: &Arc<Plan>,
    addrs: &[SocketAddr],
    deadline: Instant,
    ui: Ui,
) -> Ramp {
    let n = plan.connections;
    let started = Instant::now();
    let bar = ui.bar(n as u64, "connecting");
    let (spacing, max_in_flight) = match plan.connect_rate {
        0 => (0.0, n),
        rate => (1.0 / f64::from(rate), MAX_IN_FLIGHT),
    };
    let in_flight = Arc::new(Semaphore::new(max_in_flight));
    let mut tasks = JoinSet::new();
    let mut ramp = Ramp {
        conns: (0..n).map(|_| None).collect(),
        failures: BTreeMap::new(),
        connected: 0,
        secs: 0.0,
        timed_out: false,
    };
    for i in 0..n {
        let due = started + Duration::from_secs_f64(i as f64 * spacing);
        let permit = tokio::select! {
            () = sleep_until(deadline.into()) => {
                ramp.timed_out = true;
                break;
            }
            permit = async {
                sleep_until(due.into()).await;
                in_flight.clone().acquire_owned().await
            } => permit.expect("the semaphore is never closed"),
        };
        while let Some(done) = tasks.try_join_next() {
            ramp.record(done);
            bar.inc(1);
        }
        let target = &plan.targets[i % addrs.len()];
        let (addr, url, room) = (
            addrs[i % addrs.len()],
            target.url.clone(),
            plan.room_name(plan.room_of(i)),
        );
        tasks.spawn(async move {
            let _permit = permit;
            let result = timeout(
                CONNECT_TIMEOUT,
                client::connect_with(addr, &url, &room, &frames::subscribe(&room)),
            )
            .await
            .unwrap_or_else(|_| Err("timeout".to_owned()));
            (i, result)
        });
    }
    while !ramp.timed_out {
        tokio::select! {
            () = sleep_until(deadline.into()) => ramp.timed_out = true,
            done = tasks.join_next() => match done {
                Some(done) => {
                    ramp.record(done);
                    bar.inc(1);
                }
                None => break,
            },
        }
    }
    // Dropping the set aborts whatever --timeout interrupted.
    drop(tasks);
    bar.finish_and_clear();
    ramp.connected = ramp.conns.iter().filter(|c| c.is_some()).count();
    let settled = ramp.connected as u64 + ramp.failures.values().sum::<u64>();
    if settled < n as u64 {
        ramp.failures.insert(
            "not connected before --timeout".to_owned(),
            n as u64 - settled,
        );
    }
    ramp.secs = started.elapsed().as_secs_f64();
    ramp
}

impl Ramp {
    fn record(&mut self, done: Result<(usize, Connected), tokio::task::JoinError>) {
        match done {
            Ok((i, Ok(conn))) => self.conns[i] = Some(conn),
            Ok((_, Err(reason))) => *self.failures.entry(reason).or_default() += 1,
            Err(_) => *self.failures.entry("task failed".to_owned()).or_default() += 1,
        }
    }
}
