//! `wsgate bench` against gateways in this process: the real load generator,
//! with small numbers, must see every delivery exactly once. And
//! `wsgate-bench scenarios --smoke`, CI's bench run, end to end against the
//! real gateway binary.

use std::time::Duration;

use clap::Parser as _;
use wsgate_bench::{BenchArgs, Report, execute};

use crate::helpers::{NatsServer, TestApp, poll_until, spawn_app, spawn_app_with, within};

pub(crate) async fn bench(args: &[&str]) -> Report {
    let argv = std::iter::once("bench").chain(args.iter().copied());
    let plan = BenchArgs::try_parse_from(argv)
        .expect("arguments parse")
        .plan()
        .expect("a valid plan");
    within(execute(plan)).await.expect("the bench runs")
}

/// Polls `/readyz` until the node is connected to its broker.
async fn ready(app: &TestApp) {
    poll_until(async || {
        let status = within(reqwest::get(app.http_url("/readyz")))
            .await
            .map(|r| r.status().as_u16());
        match status {
            Ok(200) => Ok(()),
            other => Err(format!("/readyz to answer 200, not {other:?}")),
        }
    })
    .await;
}

#[track_caller]
fn assert_clean(report: &Report) {
    assert_eq!(report.lost, 0, "{report:#?}");
    assert_eq!(report.duplicated, 0, "{report:#?}");
    assert_eq!(report.delivered, report.expected_deliveries, "{report:#?}");
    assert!(report.ok, "{report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_over_several_rooms_loses_nothing() {
    let app = spawn_app().await;
    let url = format!("--url={}", app.ws_url());
    let report = bench(&[&url, "-c=30", "-r=3", "-p=4", "-m=100", "-w=4", "-s=16"]).await;
    assert_clean(&report);
    // Rooms of 10; four publishers of 100 messages each.
    assert_eq!(report.expected_deliveries, 4 * 100 * 10);
    assert_eq!((report.published, report.acked), (400, 400));
    assert_eq!(report.connected, 30);
    assert_eq!(report.latency_ms.samples, 4000);
    assert!(report.latency_ms.max >= report.latency_ms.p50);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_loses_nothing() {
    let app = spawn_app().await;
    let url = format!("--url={}", app.ws_url());
    let report = bench(&[&url, "-c=10", "-p=2", "-m=50", "--rate=1000"]).await;
    assert_clean(&report);
    assert_eq!(report.rate, Some(1000.0));
    assert_eq!(report.window, None);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_through_nats_lose_nothing() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let a = spawn_app_with(|c| c.nats_url = Some(nats.url().into())).await;
    let b = spawn_app_with(|c| c.nats_url = Some(nats.url().into())).await;
    for app in [&a, &b] {
        ready(app).await;
    }
    // Connections alternate between the nodes, so each room spans both and a
    // publisher's ack may come before its own copy.
    let urls = format!("--url={},{}", a.ws_url(), b.ws_url());
    let report = bench(&[&urls, "-c=20", "-r=2", "-p=4", "-m=100", "-w=8"]).await;
    assert_clean(&report);
    assert_eq!(report.urls.len(), 2);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_gateway_is_reported_not_waited_for() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("--url=ws://127.0.0.1:{port}/ws");
    let started = std::time::Instant::now();
    let report = bench(&[&url, "-c=5", "-m=10", "--timeout=5s"]).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!report.ok);
    assert_eq!(report.connected, 0);
    assert_eq!(
        report.connect_failures.values().sum::<u64>(),
        5,
        "{report:#?}"
    );
    assert_eq!(report.lost, report.expected_deliveries);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_storm_connects_everyone_at_once() {
    let app = spawn_app().await;
    let url = format!("--url={}", app.ws_url());
    // --connect-rate 0: no pacing and no cap on connects in flight.
    let report = bench(&[&url, "-c=300", "-r=3", "-p=3", "-m=10", "--connect-rate=0"]).await;
    assert_clean(&report);
    assert_eq!(report.connected, 300);
    assert!(report.connect_failures.is_empty(), "{report:#?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_joins_and_leaves_the_room_while_nothing_is_lost() {
    let app = spawn_app().await;
    let url = format!("--url={}", app.ws_url());
    // Two seconds of publishing at 100 msgs/s while 5 churners make 50 joins
    // (and 50 leaves) a second in the publishers' room.
    let report = bench(&[
        &url,
        "-c=20",
        "-r=1",
        "-p=1",
        "-m=200",
        "--rate=100",
        "--churn=50",
        "--churners=5",
    ])
    .await;
    assert_clean(&report);
    let churn = report.churn.as_ref().expect("a churn report");
    assert_eq!(churn.failures, 0, "{churn:?}");
    assert!(churn.joins >= 50 && churn.leaves >= 50, "{churn:?}");
    // Churners are not receivers: only the 20 members' deliveries count.
    assert_eq!(report.expected_deliveries, 200 * 20);
    app.stop().await;
}

/// The phase callbacks `wsgate-bench scenarios` takes its CPU window from:
/// in order, once each, and a `holding` that resolves ends a ten-minute hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_hears_each_phase_and_can_end_the_hold() {
    #[derive(Default)]
    struct Phases(Vec<&'static str>);
    impl wsgate_bench::Observer for Phases {
        fn publishing(&mut self) {
            self.0.push("publishing");
        }
        fn settled(&mut self) {
            self.0.push("settled");
        }
        fn report(&mut self, report: &Report) {
            assert!(report.ok, "{report:#?}");
            self.0.push("report");
        }
        async fn holding(&mut self) {
            self.0.push("holding");
        }
    }
    let app = spawn_app().await;
    let url = format!("--url={}", app.ws_url());
    let argv = [
        "bench",
        url.as_str(),
        "-c=10",
        "-p=2",
        "-m=20",
        "--hold=10m",
    ];
    let plan = BenchArgs::try_parse_from(argv)
        .expect("arguments parse")
        .plan()
        .expect("a valid plan");
    let mut phases = Phases::default();
    let report = within(wsgate_bench::execute_observed(
        plan,
        wsgate_bench::Ui::silent(),
        &mut phases,
    ))
    .await
    .expect("the bench runs");
    assert_clean(&report);
    assert_eq!(phases.0, ["publishing", "settled", "report", "holding"]);
    app.stop().await;
}

/// CI's smoke run, as `wsgate-bench scenarios --smoke` runs it, against this
/// build's gateway binary (unpinned: pinning would pin the test harness).
/// Every row must be clean and carry a CPU time per delivery, which only the
/// orchestrator's phase callbacks can have measured.
#[test]
fn scenarios_smoke_runs_the_real_gateway_end_to_end() {
    let cli = wsgate_bench::Cli::try_parse_from([
        "wsgate-bench",
        "scenarios",
        "--smoke",
        "--server",
        env!("CARGO_BIN_EXE_wsgate"),
    ])
    .expect("arguments parse");
    let Some(wsgate_bench::Command::Scenarios(args)) = cli.command else {
        panic!("`scenarios` is a subcommand");
    };
    let started = std::time::Instant::now();
    let outcome = wsgate_bench::scenarios::run_pinned(&args, false).expect("the scenarios run");
    assert!(started.elapsed() < Duration::from_secs(60), "{outcome:?}");
    assert!(outcome.failed.is_empty(), "{outcome:?}");
    assert!(
        outcome.table.contains("unpinned, smoke"),
        "{}",
        outcome.table
    );
    let names: Vec<&str> = outcome.rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(names, ["fanout", "rooms"], "{}", outcome.table);
    // fanout: 50 subscribers × 200 messages; rooms: 4 rooms of 5 × 4 × 200.
    for (row, deliveries) in outcome.rows.iter().zip(["10000", "4000"]) {
        assert_eq!(row[1], deliveries, "{}", outcome.table);
        assert_eq!(
            (row[6].as_str(), row[7].as_str()),
            ("0", "0"),
            "{}",
            outcome.table
        );
        let cpu: f64 = row[3]
            .parse()
            .unwrap_or_else(|_| panic!("a CPU time: {}", outcome.table));
        assert!(cpu > 0.0, "{}", outcome.table);
    }
}
