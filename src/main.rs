//! The `wsgate` binary: configuration, telemetry, serve until a signal, flush.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use wsgate::config::Cli;
use wsgate::telemetry::Telemetry;
use wsgate::{Application, Config};

fn main() -> anyhow::Result<ExitCode> {
    // One rustls crypto provider for the whole process, chosen before any TLS
    // client is built: with two compiled in (a dependency may bring aws-lc-rs
    // one day), rustls panics where it has to pick one itself. ring is what
    // async-nats and the OTLP exporters use.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    cli.serve.validate()?;
    // At least two workers even when pinned to one CPU: the gRPC trace exporter
    // deadlocks on a runtime with a single worker.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let result = runtime.block_on(serve(cli.serve));
    // Sessions and requests still running past the shutdown deadline are
    // dropped here, not waited for; so is a telemetry flush that overran.
    runtime.shutdown_timeout(RUNTIME_STOP);
    result.map(|()| ExitCode::SUCCESS)
}

/// What the exit may take beyond the shutdown grace period: the final
/// telemetry flush gets `FLUSH_MARGIN` of it, stopping the runtime
/// `RUNTIME_STOP`. Together they keep the process within `--shutdown-grace`
/// plus one second with room to spare on a loaded machine (the process's own
/// exit and the scheduler take the rest).
const FLUSH_MARGIN: Duration = Duration::from_millis(500);
const RUNTIME_STOP: Duration = Duration::from_millis(100);

async fn serve(config: Config) -> anyhow::Result<()> {
    let node_id = config.node_id();
    let telemetry = Telemetry::from_env(&node_id).context("configuring telemetry")?;
    telemetry.init_logs(config.log_format)?;
    let app = Application::build(&config, &telemetry).await?;
    tracing::info!(
        addr = %app.local_addr(),
        admin_addr = app.admin_addr().map(tracing::field::display),
        node_id,
        "wsgate listening"
    );
    match app.run_until(shutdown_signal()).await {
        Ok(deadline) => {
            telemetry.shutdown_by(deadline + FLUSH_MARGIN).await;
            Ok(())
        }
        Err(e) => {
            telemetry
                .shutdown_by(tokio::time::Instant::now() + FLUSH_MARGIN)
                .await;
            Err(e)
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
