//! The run, phase by phase: connect (see `ramp`), start a reader per connection,
//! publish, settle, collect and merge, report, hold, close. Every phase before
//! the report is bounded by `--timeout`; the close by a few seconds.

use std::future::Future as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::args::Plan;
use super::churn::Churn;
use super::client::{self, Reader, Shared, Sink, Stop};
use super::publisher::{self, Outcome, Publisher};
use super::ramp;
use super::report::Report;
use super::resume;
use super::stats::{ConnStats, Totals};
use super::ui::Ui;

/// How often the settle phase looks at the delivery counters.
const POLL: Duration = Duration::from_millis(5);
/// How long the close handshakes (and collecting stats) may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// One open connection, seen from the orchestrator.
struct Conn {
    shared: Arc<Shared>,
    stop_reader: Option<oneshot::Sender<()>>,
    stats: oneshot::Receiver<ConnStats>,
    /// `None` while a publisher's writer owns it.
    sink: Option<Sink>,
}

/// Runs `plan` silently and returns its report (for tests and embedding).
pub async fn execute(plan: Plan) -> anyhow::Result<Report> {
    execute_with(plan, Ui::silent(), |_| {}).await
}

/// Runs `plan`, calls `on_report` as soon as the report is ready, then holds the
/// connections for `--hold` and closes them.
pub async fn execute_with(
    plan: Plan,
    ui: Ui,
    on_report: impl FnOnce(&Report),
) -> anyhow::Result<Report> {
    execute_observed(plan, ui, &mut OnReport(Some(on_report))).await
}

/// What a caller hears at the phase boundaries of a run, at the moments the
/// phase lines are printed: `wsgate-bench scenarios` reads the server's CPU
/// time here instead of parsing those lines.
pub trait Observer {
    /// The publishers are about to start (only when there are any).
    fn publishing(&mut self) {}
    /// Deliveries have settled, or the settle phase ran out of time.
    fn settled(&mut self) {}
    /// The report is ready.
    fn report(&mut self, _report: &Report) {}
    /// The connections are being held (`--hold`): the hold ends when this
    /// resolves, when `--hold` elapses or on SIGINT/SIGTERM, whichever is first.
    fn holding(&mut self) -> impl std::future::Future<Output = ()> {
        std::future::pending()
    }
}

/// The observer of [`execute_with`]: only the report.
struct OnReport<F>(Option<F>);

impl<F: FnOnce(&Report)> Observer for OnReport<F> {
    fn report(&mut self, report: &Report) {
        if let Some(on_report) = self.0.take() {
            on_report(report);
        }
    }
}

/// Runs `plan` and tells `observer` about each phase boundary; see [`Observer`].
pub async fn execute_observed(
    plan: Plan,
    ui: Ui,
    observer: &mut impl Observer,
) -> anyhow::Result<Report> {
    let addrs = ramp::resolve(&plan.targets).await?;
    let plan = Arc::new(plan);
    let deadline = Instant::now() + plan.timeout;
    let pace = match plan.connect_rate {
        0 => "all at once".to_owned(),
        rate => format!("{rate}/s"),
    };
    ui.line(format_args!(
        "connecting {} to {} ({pace})",
        plan.connections,
        plan.targets
            .iter()
            .map(|t| t.url.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    ));
    let mut ramp = ramp::connect_all(&plan, &addrs, deadline, ui).await;
    let connected = ramp.connected;
    ui.line(format_args!(
        "connected {connected}/{} in {:.3} s",
        plan.connections, ramp.secs
    ));
    let mut timed_out = ramp.timed_out;

    // Readers first, so every connection listens before anyone publishes.
    let mut readers = JoinSet::new();
    let mut conns: Vec<Option<Conn>> = Vec::with_capacity(plan.connections);
    let mut writers_ready = Vec::new();
    for (i, conn) in std::mem::take(&mut ramp.conns).into_iter().enumerate() {
        let Some((ws, subscribed)) = conn else {
            conns.push(None);
            continue;
        };
        let shared = Arc::new(Shared::default());
        let (stop_reader, stop) = Stop::new();
        let (stats_tx, stats) = oneshot::channel();
        if let (Some(mean), false) = (plan.drop_every, i < plan.publishers) {
            // A receiver that drops and resumes owns its whole connection.
            let reader = Reader {
                plan: plan.clone(),
                conn: i,
                shared: shared.clone(),
                answers: None,
                stop,
                stats: stats_tx,
            };
            let target = i % plan.targets.len();
            let (addr, url) = (addrs[target], plan.targets[target].url.clone());
            readers.spawn(resume::read_resuming(
                ws, subscribed, reader, addr, url, mean,
            ));
            conns.push(Some(Conn {
                shared,
                stop_reader: Some(stop_reader),
                stats,
                sink: None,
            }));
            continue;
        }
        let (sink, stream) = ws.split();
        let answers = (i < plan.publishers)
            .then(|| Arc::new(Semaphore::new(plan.window().unwrap_or(0) as usize)));
        readers.spawn(client::read(
            stream,
            Reader {
                plan: plan.clone(),
                conn: i,
                shared: shared.clone(),
                answers: answers.clone(),
                stop,
                stats: stats_tx,
            },
        ));
        let sink = match answers {
            Some(answers) if !timed_out => {
                writers_ready.push((i, sink, answers, shared.clone()));
                None
            }
            _ => Some(sink),
        };
        conns.push(Some(Conn {
            shared,
            stop_reader: Some(stop_reader),
            stats,
            sink,
        }));
    }

    // Publish.
    let publishing = writers_ready.len();
    let planned = publishing as u64 * plan.messages;
    if publishing > 0 {
        ui.line(format_args!(
            "publishing {publishing} × {} messages",
            plan.messages
        ));
        observer.publishing();
    }
    let start = (Instant::now(), client::unix_nanos());
    let padding: Arc<str> = "x".repeat(plan.payload).into();
    let mut writers = JoinSet::new();
    let mut stop_writers = Vec::with_capacity(publishing);
    let mut publisher_shared = Vec::with_capacity(publishing);
    let mut publisher_rooms = Vec::with_capacity(publishing);
    for (i, sink, answers, shared) in writers_ready {
        let (tx, stop) = Stop::new();
        stop_writers.push(tx);
        publisher_shared.push(shared.clone());
        publisher_rooms.push(plan.room_of(i));
        let p = Publisher {
            plan: plan.clone(),
            conn: i,
            room: plan.room_name(plan.room_of(i)),
            padding: padding.clone(),
            shared,
            answers,
            stop,
            start,
        };
        writers.spawn(async move { (i, publisher::publish(sink, p).await) });
    }
    let churn = Churn::start(&plan, &addrs);
    let bar = ui.bar(planned, "acked");
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(publishing);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            done = writers.join_next() => match done {
                Some(Ok((i, (sink, outcome)))) => {
                    if let Some(conn) = conns[i].as_mut() {
                        conn.sink = Some(sink);
                    }
                    outcomes.push(outcome);
                }
                Some(Err(_)) => {}
                None => break,
            },
            _ = tick.tick() => {
                bar.set_position(publisher_shared.iter().map(|s| s.acked.load(Ordering::Relaxed)).sum());
            }
            () = sleep_until(deadline.into()), if !timed_out => {
                timed_out = true;
                for stop in stop_writers.drain(..) {
                    let _ = stop.send(());
                }
            }
        }
    }
    bar.finish_and_clear();
    let publish_end = Instant::now();
    let churned = match churn {
        Some(churn) => Some(churn.stop().await),
        None => None,
    };

    // Settle: wait for deliveries still in flight, as many as can still come:
    // what was published, times the connected members of its room.
    let mut members = vec![0u64; plan.rooms];
    for (i, _) in conns.iter().enumerate().filter(|(_, c)| c.is_some()) {
        members[plan.room_of(i)] += 1;
    }
    let deliverable: u64 = publisher_shared
        .iter()
        .zip(&publisher_rooms)
        .map(|(s, room)| s.published.load(Ordering::Relaxed) * members[*room])
        .sum();
    let expected = plan.expected_deliveries();
    let settle_end = (publish_end + plan.settle).min(deadline);
    if publishing > 0 && !timed_out {
        ui.line(format_args!(
            "publishing done in {:.3} s; settling (up to {:?})",
            (publish_end - start.0).as_secs_f64(),
            plan.settle
        ));
    }
    let delivered = || -> u64 {
        conns
            .iter()
            .flatten()
            .map(|c| c.shared.delivered.load(Ordering::Relaxed))
            .sum()
    };
    while !timed_out && delivered() < deliverable {
        if Instant::now() >= settle_end {
            timed_out = settle_end >= deadline;
            break;
        }
        sleep(POLL).await;
    }
    ui.line(format_args!(
        "settled: {}/{expected} deliveries",
        delivered()
    ));
    observer.settled();

    // Collect and merge every reader's stats.
    let mut totals = Totals::default();
    let collect = async {
        for conn in conns.iter_mut().flatten() {
            if let Some(stop) = conn.stop_reader.take() {
                let _ = stop.send(());
            }
        }
        for conn in conns.iter_mut().flatten() {
            if let Ok(stats) = (&mut conn.stats).await {
                totals.add(stats);
            }
        }
    };
    let _ = timeout(CLOSE_TIMEOUT, collect).await;

    let mut report = Report::new(
        &plan,
        &ramp,
        &outcomes,
        totals,
        start.0,
        publish_end,
        timed_out,
    );
    report.churn = churned;
    report.judge();
    observer.report(&report);

    if !plan.hold.is_zero() {
        // Register for the signals before announcing the hold: whoever reads
        // the announcement may signal at once, and an unregistered SIGTERM
        // would kill the process instead of ending the hold.
        let signalled = signal();
        tokio::pin!(signalled);
        // Polling once registers the handlers (and is Pending unless a signal
        // already arrived).
        let registered = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(signalled.as_mut().poll(cx).is_pending())
        })
        .await;
        ui.line(format_args!(
            "holding {connected} connections for {} (SIGINT or SIGTERM ends it)",
            humantime::format_duration(plan.hold)
        ));
        if registered {
            tokio::select! {
                () = sleep(plan.hold) => {}
                () = &mut signalled => ui.line(format_args!("signal received: ending the hold")),
                () = observer.holding() => {}
            }
        }
    }

    // Close every connection: our close frame, the server's echo ends the reader.
    let closing = async {
        let mut closes = JoinSet::new();
        for mut sink in conns.into_iter().flatten().filter_map(|c| c.sink) {
            closes.spawn(async move {
                let frame = CloseFrame {
                    code: CloseCode::Normal,
                    reason: "bench done".into(),
                };
                let _ = sink.send(Message::Close(Some(frame))).await;
            });
        }
        while closes.join_next().await.is_some() {}
        while readers.join_next().await.is_some() {}
    };
    let _ = timeout(CLOSE_TIMEOUT, closing).await;
    Ok(report)
}

/// Resolves on SIGINT or SIGTERM.
async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
