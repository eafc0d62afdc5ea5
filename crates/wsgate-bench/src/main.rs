//! The `wsgate-bench` binary. See docs/bench.md.

use std::process::ExitCode;

use clap::Parser as _;
use wsgate_bench::Cli;

fn main() -> ExitCode {
    Cli::parse().run()
}
