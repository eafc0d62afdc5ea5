//! The `wsgate-bench` binary. See docs/bench.md.

use std::process::ExitCode;

use clap::Parser as _;
use wsgate_bench::BenchArgs;

fn main() -> ExitCode {
    wsgate_bench::run(BenchArgs::parse())
}
