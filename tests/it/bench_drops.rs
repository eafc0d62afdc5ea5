//! `wsgate-bench --drop-every`: receivers that drop their connections and
//! resume with `since` lose nothing and see nothing twice when the gateway
//! keeps history, and show what is lost when it does not.

use crate::bench::bench;
use crate::helpers::{spawn_app_with_args, within};
use wsgate_bench::Report;

/// 20 receivers in 4 rooms, 4 publishers at 400 messages a second in all
/// for 2 s, each receiver dropping every 300 ms on average and staying away
/// 50 ms.
const RUN: [&str; 8] = [
    "-c=24",
    "-r=4",
    "-p=4",
    "-m=200",
    "--rate=400",
    "--drop-every=300ms",
    "--drop-for=50ms",
    "--settle=3s",
];

/// Every receiver's every drop was resumed with nothing missing, and no
/// publisher's message was lost or seen twice.
#[track_caller]
fn every_drop_recovered(report: &Report) {
    let resumes = report.resumes.as_ref().expect("a drop report");
    assert!(resumes.drops >= 20, "{report:#?}");
    assert_eq!(resumes.recovered, resumes.drops, "{report:#?}");
    assert_eq!((report.lost, report.duplicated), (0, 0), "{report:#?}");
    assert!(report.ok, "{report:#?}");
    assert!(
        report
            .per_publisher
            .iter()
            .all(|p| p.lost == 0 && p.duplicated == 0),
        "{report:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_history_resuming_receivers_lose_nothing() {
    let app = spawn_app_with_args(&["--history-size", "1000"]).await;
    let url = format!("--url={}", app.ws_url());
    let mut args = vec![url.as_str()];
    args.extend(RUN);
    every_drop_recovered(&bench(&args).await);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_history_dropped_receivers_miss_messages() {
    let app = spawn_app_with_args(&[]).await;
    let url = format!("--url={}", app.ws_url());
    let mut args = vec![url.as_str()];
    args.extend(RUN);
    let report = bench(&args).await;
    let resumes = report.resumes.expect("a drop report");
    assert!(resumes.drops >= 20, "{report:#?}");
    assert_eq!(resumes.recovered, 0, "{report:#?}");
    assert!(
        report.lost > 0,
        "50 ms away at 400 msgs/s loses messages: {report:#?}"
    );
    assert_eq!(
        report.per_publisher.iter().map(|p| p.lost).sum::<u64>(),
        report.lost
    );
    assert!(!report.ok);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_jetstream_resuming_receivers_lose_nothing_on_two_nodes() {
    let store = tempfile::tempdir().expect("a temporary directory");
    let dir = store.path().to_str().expect("UTF-8 path").to_owned();
    let Some(nats) = crate::helpers::NatsServer::start_with(&["-js", "-sd", &dir]).await else {
        return;
    };
    let url = nats.url();
    let flags = ["--nats-url", url.as_str(), "--history-size", "1000"];
    let (a, b) = (
        spawn_app_with_args(&flags).await,
        spawn_app_with_args(&flags).await,
    );
    for app in [&a, &b] {
        crate::helpers::poll_until(async || {
            match within(reqwest::get(app.http_url("/readyz"))).await {
                Ok(r) if r.status() == 200 => Ok(()),
                other => Err(format!("/readyz to answer 200, not {other:?}")),
            }
        })
        .await;
    }
    let urls = format!("--url={},{}", a.ws_url(), b.ws_url());
    let mut args = vec![urls.as_str()];
    args.extend(RUN);
    every_drop_recovered(&bench(&args).await);
    a.stop().await;
    b.stop().await;
}
