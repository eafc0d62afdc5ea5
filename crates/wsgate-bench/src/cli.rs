//! The `wsgate-bench` command line: the load flags of [`BenchArgs`] run a
//! load, as they always have; `wsgate-bench scenarios …` runs the standard
//! scenarios instead. The two exclude each other.

use clap::{Parser, Subcommand};

use super::args::BenchArgs;
use super::scenarios::ScenarioArgs;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "wsgate-bench",
    version,
    about = "Load-generate against running wsgate gateways: loss, duplicates, throughput, latency",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub load: BenchArgs,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run the standard scenarios (docs/bench.md) against a gateway this
    /// starts: server pinned to CPU 0, bench to CPU 1, the server's CPU time
    /// per delivery, one markdown table.
    Scenarios(ScenarioArgs),
}

impl Cli {
    /// Runs what the command line asks for.
    pub fn run(self) -> std::process::ExitCode {
        match self.command {
            Some(Command::Scenarios(args)) => super::scenarios::run(args),
            None => super::run(self.load),
        }
    }
}
