//! `wsgate-bench`: the load generator, a program of its own in the manner of
//! `nats bench` (which lives in the NATS CLI, not in nats-server). It drives
//! running gateways over the real wire protocol and reports exactly what was
//! lost or duplicated, throughput and latency. It does not depend on the
//! gateway: only on `wsgate-protocol`, the wire format both sides share.
//!
//! - `args`: flags and the validated [`Plan`].
//! - `ramp`: the rate-limited connect phase.
//! - `client`: connecting, subscribing, and each connection's reader task.
//! - `publisher`: a publisher's writer task, closed or open loop.
//! - `churn`: connections that join and leave a room while the publishers run.
//! - `frames`: the client side of the protocol (the bench is a client: this is
//!   the one place besides `protocol` that knows JSON).
//! - `tracker`: per-publisher sequence tracking, for exact loss and duplicates.
//! - `stats`: per-connection observations and their merge.
//! - `orchestrator`: the phases, each bounded by `--timeout`.
//! - `report`: the result as a table or JSON.
//! - `ui`: progress bars and phase lines on stderr.
//! - `mix`, `mix_run`, `http_post`: `--mix dashboards`, the error traffic
//!   the dashboards and alert rules need, until a duration or a signal.
//! - `cli`: the command line: the load flags, or the `scenarios` subcommand.
//! - `scenarios`: the standard scenarios against a gateway it starts, with the
//!   server's CPU time per delivery (docs/bench.md).

mod args;
mod churn;
mod cli;
mod client;
mod frames;
mod http_post;
mod mix;
mod mix_run;
mod orchestrator;
mod publisher;
mod ramp;
mod report;
mod resume;
pub mod scenarios;
mod stats;
mod tracker;
mod ui;

use std::io::Write as _;
use std::process::ExitCode;

pub use args::{ArgsError, BenchArgs, ChurnPlan, Mix, Pace, Plan};
pub use churn::ChurnReport;
pub use cli::{Cli, Command};
pub use mix_run::run as run_mix;
pub use orchestrator::{Observer, execute, execute_observed, execute_with};
pub use report::{Latency, PublisherLoss, Report};
pub use stats::Resumes;
pub use tracker::{Seen, SeqTracker};
pub use ui::Ui;

/// Runs `wsgate-bench`: exit status 0 for a clean run, 1 when anything was lost,
/// duplicated or failed, 2 when the arguments make no sense.
pub fn run(args: BenchArgs) -> ExitCode {
    if let Some(mix) = args.mix {
        return mix_run::main(mix, &args);
    }
    let plan = match args.plan() {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("wsgate-bench: error: {e}");
            return ExitCode::from(2);
        }
    };
    match raise_open_files_limit() {
        Ok(limit) if limit < plan.connections as u64 + 64 => eprintln!(
            "wsgate-bench: warning: the open-files limit ({limit}) is too low for {} connections",
            plan.connections
        ),
        Ok(_) => {}
        Err(e) => eprintln!("wsgate-bench: warning: cannot raise the open-files limit: {e}"),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("wsgate-bench: error: starting the tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let json = args.json;
    let result = runtime.block_on(execute_with(plan, Ui::for_terminal(json), |report| {
        let text = if json {
            report.to_json() + "\n"
        } else {
            report.to_table()
        };
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }));
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(report) if report.ok => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("wsgate-bench: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
#[cfg(unix)]
pub(crate) fn raise_open_files_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not everywhere
    Ok(limit.rlim_cur as u64)
}

#[cfg(not(unix))]
pub(crate) fn raise_open_files_limit() -> std::io::Result<u64> {
    Ok(u64::MAX)
}
