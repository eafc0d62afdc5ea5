//! Argument parsing and validation: defaults, room arithmetic, refusals.

use super::*;

fn plan(args: &[&str]) -> Result<Plan, String> {
    let argv = std::iter::once("bench").chain(args.iter().copied());
    let args = BenchArgs::try_parse_from(argv).map_err(|e| e.to_string())?;
    args.plan().map_err(|e| e.to_string())
}

#[test]
fn defaults() {
    let p = plan(&[]).unwrap();
    assert_eq!(p.targets.len(), 1);
    assert_eq!(
        (p.targets[0].host.as_str(), p.targets[0].port),
        ("127.0.0.1", 8080)
    );
    assert_eq!((p.connections, p.rooms, p.publishers), (100, 1, 1));
    assert_eq!(p.pace, Pace::Window(8));
    assert_eq!(p.timeout, Duration::from_secs(120));
    assert_eq!(p.settle, Duration::from_secs(5));
    assert_eq!(p.hold, Duration::ZERO);
    assert_eq!(p.expected_deliveries(), 1000 * 100);
}

#[test]
fn connect_rate_zero_is_a_storm() {
    assert_eq!(plan(&[]).unwrap().connect_rate, 2000);
    assert_eq!(plan(&["--connect-rate=0"]).unwrap().connect_rate, 0);
}

#[test]
fn urls_repeat_or_split_on_commas() {
    let p = plan(&["--url=ws://a:1/ws,ws://b:2/ws", "--url", "ws://[::1]:3/x"]).unwrap();
    let hosts: Vec<_> = p
        .targets
        .iter()
        .map(|t| (t.host.as_str(), t.port))
        .collect();
    assert_eq!(hosts, [("a", 1), ("b", 2), ("::1", 3)]);
}

#[test]
fn rooms_and_expected_deliveries() {
    // 10 connections over 3 rooms: sizes 4, 3, 3. Publishers 0..4 sit in rooms
    // 0, 1, 2, 0.
    let p = plan(&["-c=10", "-r=3", "-p=4", "-m=5"]).unwrap();
    assert_eq!((0..3).map(|r| p.members(r)).collect::<Vec<_>>(), [4, 3, 3]);
    assert_eq!(
        (0..3).map(|r| p.publishers_in(r)).collect::<Vec<_>>(),
        [2, 1, 1]
    );
    assert_eq!(p.publisher_slot(3), 1);
    assert_eq!(p.expected_deliveries(), 5 * (4 + 3 + 3 + 4));
    let rate = plan(&["-c=10", "-p=4", "--rate=100"]).unwrap();
    assert_eq!(
        rate.pace,
        Pace::Rate {
            per_publisher: 25.0
        }
    );
}

#[test]
fn nonsense_is_refused_with_a_reason() {
    for (args, needle) in [
        (
            &["--connections=0"][..],
            "--connections must be greater than zero",
        ),
        (
            &["-c=2", "-p=3"],
            "--publishers (3) cannot exceed --connections (2)",
        ),
        (&["-c=2", "-r=3"], "every room needs a subscriber"),
        (&["--rooms=0"], "--rooms must be greater than zero"),
        (&["--window=0"], "--window must be greater than zero"),
        (&["--window=4", "--rate=10"], "cannot be used with"),
        (&["--rate=0"], "positive number"),
        (&["--rate=-3"], "positive number"),
        (&["--rate=NaN"], "positive number"),
        (&["--payload=1048577"], "larger than 1 MiB"),
        (&["--timeout=0s"], "--timeout must be greater"),
        (&["--timeout=soon"], "examples: 30s"),
        (&["--ack-timeout=0ms"], "--ack-timeout must be greater"),
        (&["--url=http://127.0.0.1/ws"], "must start with ws://"),
        (&["--url=wss://127.0.0.1/ws"], "wss is not supported"),
        (&["--url=ws://"], "not a URL"),
        (&["--url=not a url"], "not a URL"),
        (&["--url="], "not a URL"),
        (&["--connections=-1"], "invalid value"),
        (&["--churn=0"], "positive number of joins"),
        (&["--churn=inf"], "positive number of joins"),
        (
            &["--churn=10", "--churners=0"],
            "--churners must be greater",
        ),
        (&["--churners=5"], "required arguments were not provided"),
    ] {
        let err = plan(args).unwrap_err();
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn window_and_rate_are_refused_even_when_built_by_hand() {
    let mut args = BenchArgs::try_parse_from(["bench"]).unwrap();
    args.window = Some(4);
    args.rate = Some(10.0);
    assert_eq!(args.plan().unwrap_err(), ArgsError::WindowAndRate);
}

#[test]
fn boundaries_are_accepted() {
    plan(&["-c=1", "-r=1", "-p=1", "--payload=1048576"]).unwrap();
    plan(&["-c=5", "-r=5", "-p=0", "-m=0"]).unwrap();
    plan(&["-c=3", "-r=3", "-p=3"]).unwrap();
}

#[test]
fn churn_is_planned_only_when_asked_for() {
    let plain = BenchArgs::try_parse_from(["bench"])
        .unwrap()
        .plan()
        .unwrap();
    assert_eq!(plain.churn, None);
    let churned = BenchArgs::try_parse_from(["bench", "--churn=1000"])
        .unwrap()
        .plan()
        .unwrap();
    assert_eq!(
        churned.churn,
        Some(ChurnPlan {
            joins_per_sec: 1000.0,
            churners: 50
        })
    );
}
