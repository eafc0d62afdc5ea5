//! The command line: the load flags keep working beside the `scenarios`
//! subcommand, and the subcommand's own flags.

use clap::Parser as _;

use super::{Name, ScenarioArgs};
use crate::{Cli, Command};

fn parse(args: &[&str]) -> Result<Cli, String> {
    Cli::try_parse_from(std::iter::once("wsgate-bench").chain(args.iter().copied()))
        .map_err(|e| e.to_string())
}

fn scenario_args(args: &[&str]) -> ScenarioArgs {
    match parse(args).unwrap().command {
        Some(Command::Scenarios(a)) => a,
        None => panic!("no subcommand in {args:?}"),
    }
}

#[test]
fn the_flat_load_flags_still_run_a_load() {
    let cli = parse(&["-c", "100", "-m", "1000"]).unwrap();
    assert!(cli.command.is_none());
    let plan = cli.load.plan().unwrap();
    assert_eq!((plan.connections, plan.messages), (100, 1000));
    assert!(parse(&[]).unwrap().command.is_none());
}

#[test]
fn scenarios_is_a_subcommand() {
    let a = scenario_args(&["scenarios"]);
    assert!(!a.smoke);
    assert_eq!(
        a.scenarios(),
        [
            Name::Fanout,
            Name::Rooms,
            Name::Idle,
            Name::Scrape,
            Name::Telemetry
        ]
    );
    assert_eq!(a.telemetry_rounds, 5);
    let a = scenario_args(&["scenarios", "--smoke"]);
    assert_eq!(a.scenarios(), [Name::Fanout, Name::Rooms]);
    let a = scenario_args(&["scenarios", "idle", "fanout", "--server", "/x/wsgate"]);
    assert_eq!(a.scenarios(), [Name::Idle, Name::Fanout]);
    assert_eq!(a.server.as_deref(), Some(std::path::Path::new("/x/wsgate")));
}

#[test]
fn unknown_scenarios_and_mixed_flags_are_refused() {
    let e = parse(&["scenarios", "nope"]).unwrap_err();
    assert!(e.contains("fanout"), "{e}");
    // Load flags and the subcommand exclude each other.
    assert!(parse(&["-c", "10", "scenarios"]).is_err());
    assert!(parse(&["scenarios", "-c", "10"]).is_err());
}

#[test]
fn a_missing_server_binary_is_named() {
    let a = scenario_args(&["scenarios", "--server", "/nonexistent/wsgate"]);
    let e = a.server_bin().unwrap_err().to_string();
    assert!(e.contains("/nonexistent/wsgate"), "{e}");
}

#[test]
fn only_the_smoke_run_may_run_unpinned() {
    let e = super::run_pinned(&scenario_args(&["scenarios", "fanout"]), false).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot pin to CPUs 0 and 1; the full run needs two cores"
    );
}
