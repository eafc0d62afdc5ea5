//! `wsgate-bench scenarios`: the standard scenarios of docs/bench.md. For each
//! scenario a fresh release gateway runs on a free port pinned to CPU 0, the
//! bench runs in this process pinned to CPU 1, the server's CPU time is read
//! from `/proc` at the bench's phase boundaries (an [`Observer`](crate::Observer),
//! not its output), and one markdown table is printed at the end.
//!
//! - `runner`: the run's state, starting servers, running the bench.
//! - `standard`: fanout, rooms, idle, scrape; `telemetry`: the telemetry one.
//! - `measure`: the observer that takes the CPU window, RSS and the hold's work.
//! - `server`, `collector`: the gateway and rotel as child processes.
//! - `procfs`, `pin`, `http`: `/proc`, CPU affinity, a timed HTTP GET.
//! - `table`: the rows and their formats.
//!
//! Adding a scenario: write an `async fn(&mut Runner)` that starts a server
//! with its own environment (`r.start_server`), runs `r.run_bench`, adds a row
//! and stops the server; then add it to [`Name`] and [`run_one`].

mod collector;
mod http;
mod measure;
mod pin;
mod procfs;
mod runner;
mod server;
mod standard;
mod table;
mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::ValueEnum;

use runner::Runner;

/// `wsgate-bench scenarios` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ScenarioArgs {
    /// Tiny fanout and rooms that check only that nothing was lost or
    /// duplicated (CI); unpinned when pinning to CPUs 0 and 1 fails.
    #[arg(long)]
    pub smoke: bool,

    /// The gateway binary [default: `wsgate` next to this executable].
    #[arg(long, env = "WSGATE_BIN", value_name = "PATH")]
    pub server: Option<PathBuf>,

    /// rotel-agent, the OTLP collector of the as-shipped and traced runs
    /// [default: the nearest .venv's, installed by `scripts/venv rotel` if missing].
    #[arg(long, env = "WSGATE_ROTEL", value_name = "PATH")]
    pub rotel: Option<PathBuf>,

    /// Rounds of the telemetry scenario.
    #[arg(long, env = "TELEMETRY_ROUNDS", default_value_t = 5)]
    pub telemetry_rounds: usize,

    /// Keep the server and collector logs (their directory is printed).
    #[arg(long, env = "BENCH_KEEP")]
    pub keep: bool,

    /// Scenarios to run [default: all of them; with --smoke: fanout rooms].
    #[arg(value_enum, value_name = "NAME")]
    pub names: Vec<Name>,
}

/// A scenario (docs/bench.md describes each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "lower")]
pub enum Name {
    Fanout,
    Rooms,
    Idle,
    Scrape,
    Telemetry,
}

impl ScenarioArgs {
    /// The scenarios to run, in the order given.
    pub fn scenarios(&self) -> Vec<Name> {
        match (self.names.is_empty(), self.smoke) {
            (false, _) => self.names.clone(),
            (true, true) => vec![Name::Fanout, Name::Rooms],
            (true, false) => Name::value_variants().to_vec(),
        }
    }

    /// The gateway binary: `--server`, or `wsgate` next to this executable.
    pub fn server_bin(&self) -> anyhow::Result<PathBuf> {
        let bin = match &self.server {
            Some(path) => path.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("this executable has no directory")?
                .join("wsgate"),
        };
        if !bin.is_file() {
            bail!(
                "no executable at {} (cargo build --release --workspace --bins, or --server PATH)",
                bin.display()
            );
        }
        Ok(bin)
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    /// The header line, a blank line and the markdown table.
    pub table: String,
    /// The table's rows, cell by cell (the columns of the table's header).
    pub rows: Vec<[String; 10]>,
    /// Why the run failed, one line per problem; empty when it passed.
    pub failed: Vec<String>,
}

/// Runs `wsgate-bench scenarios`: exit status 0 when every check passed, 1
/// otherwise, 2 when the arguments make no sense.
pub fn run(args: ScenarioArgs) -> ExitCode {
    // Pinned before the runtime starts, so its threads inherit the mask.
    let pinned = pin::pin_bench();
    match run_pinned(&args, pinned) {
        Ok(outcome) => {
            println!("\n{}\n", outcome.table);
            if !outcome.failed.is_empty() {
                for f in &outcome.failed {
                    println!("FAILED: {f}");
                }
                return ExitCode::from(1);
            }
            if args.smoke {
                println!("smoke: OK (nothing lost, nothing duplicated)");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wsgate-bench scenarios: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Runs the scenarios from a thread already pinned to the bench's CPU (or
/// not, `pinned` says), in a runtime of its own.
pub fn run_pinned(args: &ScenarioArgs, pinned: bool) -> anyhow::Result<Outcome> {
    if !pinned && !args.smoke {
        bail!("cannot pin to CPUs 0 and 1; the full run needs two cores");
    }
    let server_bin = args.server_bin()?;
    if let Err(e) = crate::raise_open_files_limit() {
        eprintln!("wsgate-bench scenarios: warning: cannot raise the open-files limit: {e}");
    }
    let work = std::env::temp_dir().join(format!(
        "wsgate-bench.{}.{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let mut runner = Runner::new(
        args.smoke,
        pinned,
        server_bin.clone(),
        args.rotel.clone(),
        args.telemetry_rounds,
        work.clone(),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let result = runtime.block_on(async {
        let mut result = Ok(());
        for name in args.scenarios() {
            runner.say(
                name.to_possible_value()
                    .expect("no skipped variants")
                    .get_name(),
            );
            result = run_one(&mut runner, name).await;
            if result.is_err() {
                break;
            }
        }
        runner.stop_collector().await;
        result
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    if args.keep {
        eprintln!("logs kept in {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    result?;
    let mut pinning = if pinned {
        "server pinned to CPU 0, bench to CPU 1".to_owned()
    } else {
        "unpinned".to_owned()
    };
    if args.smoke {
        pinning.push_str(", smoke");
    }
    let header = format!(
        "{}, {} CPUs, {pinning}",
        version(&server_bin),
        online_cpus()
    );
    Ok(Outcome {
        table: format!("{header}\n\n{}", table::render(&runner.rows)),
        rows: runner.rows.into_iter().map(|r| r.0).collect(),
        failed: runner.failed,
    })
}

async fn run_one(r: &mut Runner, name: Name) -> anyhow::Result<()> {
    match name {
        Name::Fanout => standard::fanout(r).await,
        Name::Rooms => standard::rooms(r).await,
        Name::Idle => standard::idle(r).await,
        Name::Scrape => standard::scrape(r).await,
        Name::Telemetry => telemetry::telemetry(r).await,
    }
}

/// What `wsgate --version` says (shown, not parsed).
fn version(bin: &std::path::Path) -> String {
    std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| bin.display().to_string())
}

fn online_cpus() -> libc::c_long {
    // SAFETY: sysconf only reads a system setting.
    unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }
}

#[cfg(test)]
#[path = "args_tests.rs"]
mod args_tests;
