//! What every scenario uses: the settings of this run, starting a server with
//! a scenario's environment, running the bench against it with the CPU window
//! taken at the bench's phase boundaries, the collector for the as-shipped
//! settings, and the rows and failures collected so far.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser as _;

use crate::{BenchArgs, Report, Ui, execute_observed};

use super::collector::{self, Collector};
use super::measure::{self, Measure, OnHold};
use super::pin;
use super::server::Server;
use super::table::Row;

/// A server's environment: `(VAR, value)` pairs on top of this process's.
pub type Env = Vec<(String, String)>;

/// Builds an [`Env`] from string pairs.
pub fn env(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The state of one `wsgate-bench scenarios` run.
pub struct Runner {
    pub smoke: bool,
    pub pinned: bool,
    pub server_bin: PathBuf,
    pub rotel: Option<PathBuf>,
    pub telemetry_rounds: usize,
    /// Where the server and collector logs go.
    pub work: PathBuf,
    collector: Option<Collector>,
    pub rows: Vec<Row>,
    pub failed: Vec<String>,
}

impl Runner {
    pub fn new(
        smoke: bool,
        pinned: bool,
        server_bin: PathBuf,
        rotel: Option<PathBuf>,
        telemetry_rounds: usize,
        work: PathBuf,
    ) -> Self {
        Self {
            smoke,
            pinned,
            server_bin,
            rotel,
            telemetry_rounds,
            work,
            collector: None,
            rows: Vec::new(),
            failed: Vec::new(),
        }
    }

    /// A progress line on stderr, bold on a terminal as the script's was.
    pub fn say(&self, what: &str) {
        eprintln!("\x1b[1m==> {what}\x1b[0m");
    }

    fn cpu(&self, cpu: usize) -> Option<usize> {
        self.pinned.then_some(cpu)
    }

    /// The collector's OTLP/gRPC endpoint, starting it on first use.
    pub async fn collector_endpoint(&mut self) -> anyhow::Result<String> {
        if self.collector.is_none() {
            let rotel = collector::find_rotel(self.rotel.as_deref())?;
            let log = self.work.join("collector.log");
            let started = Collector::start(&rotel, &log, self.cpu(pin::BENCH_CPU)).await?;
            self.collector = Some(started);
        }
        Ok(self
            .collector
            .as_ref()
            .map(|c| c.endpoint.clone())
            .unwrap_or_default())
    }

    /// The gateway as shipped: metrics on, 1 % of traces exported over
    /// OTLP/gRPC to a real collector. The smoke run skips the collector.
    pub async fn as_shipped(&mut self) -> anyhow::Result<Env> {
        if self.smoke {
            return Ok(env(&[("OTEL_TRACES_EXPORTER", "none")]));
        }
        let endpoint = self.collector_endpoint().await?;
        Ok(env(&[
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.01"),
        ]))
    }

    /// A gateway for `scenario` with `env`, its log `server-<scenario>.log`.
    pub async fn start_server(&self, scenario: &str, env: &Env) -> anyhow::Result<Server> {
        let log = self.work.join(format!("server-{scenario}.log"));
        Server::start(&self.server_bin, env, log, self.cpu(pin::SERVER_CPU))
            .await
            .with_context(|| format!("{scenario}: starting the server"))
    }

    /// Runs the bench with `flags` (words, as on its command line) against
    /// `server`, measuring the server as [`Measure`] does.
    pub async fn run_bench(
        &self,
        scenario: &str,
        server: &Server,
        flags: &str,
        on_hold: OnHold,
    ) -> anyhow::Result<(Report, Measure)> {
        let url = server.ws_url();
        let argv = ["wsgate-bench", "--url", &url]
            .into_iter()
            .chain(flags.split_whitespace());
        let plan = BenchArgs::try_parse_from(argv)
            .map_err(|e| anyhow::anyhow!("{scenario}: bench flags {flags:?}: {e}"))?
            .plan()
            .with_context(|| format!("{scenario}: bench flags {flags:?}"))?;
        let mut measure = Measure::new(server.pid(), server.addr, on_hold);
        let report = execute_observed(plan, Ui::silent(), &mut measure)
            .await
            .with_context(|| format!("{scenario}: the bench failed"))?;
        if let Some(e) = &measure.error {
            anyhow::bail!("{scenario}: {e}");
        }
        Ok((report, measure))
    }

    /// Adds a publishing scenario's row; loss or duplicates fail the run.
    pub fn publishing_row(
        &mut self,
        scenario: &str,
        report: &Report,
        measure: &Measure,
        notes: String,
    ) {
        self.rows.push(Row::publishing(
            scenario,
            report,
            measure.cpu_ns,
            measure.rss_after_kib.unwrap_or(0),
            notes,
        ));
        if report.lost != 0 || report.duplicated != 0 {
            self.failed
                .push(format!("{scenario}: lost or duplicated deliveries"));
        }
    }

    /// After an as-shipped run: the 1 % of traces must really have been
    /// exported (the batch processor's default delay is 5 s, hence the wait).
    /// With enough messages, at least half the expected 2 spans per sampled
    /// message; with few (the fanout's 1,000), at least one span, which a
    /// sampled upgrade may supply.
    pub async fn check_shipped_spans(&mut self, scenario: &str, server: &Server, report: &Report) {
        if self.smoke {
            return;
        }
        let published = report.published;
        let min = if published >= 10_000 {
            super::telemetry::SPANS_PER_MESSAGE * published / 100 / 2
        } else {
            1
        };
        let spans = measure::wait_for_span_export(server.addr, min).await;
        if spans < min {
            self.failed.push(format!(
                "{scenario}: {spans} spans exported for {published} messages (at least {min} expected)"
            ));
        }
    }

    /// Stops the collector, if one was started.
    pub async fn stop_collector(&mut self) {
        if let Some(c) = self.collector.take() {
            c.stop().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenarios::table::test_report;

    fn runner() -> Runner {
        Runner::new(true, false, "wsgate".into(), None, 5, std::env::temp_dir())
    }

    #[test]
    fn loss_or_duplicates_fail_the_run() {
        let measure = Measure::new(1, "127.0.0.1:1".parse().unwrap(), OnHold::Release);
        let mut r = runner();
        r.publishing_row("fanout", &test_report(), &measure, String::new());
        assert!(r.failed.is_empty());
        assert_eq!(
            r.rows[0].0[3], "n/a",
            "no CPU window without a publishing phase"
        );
        for (lost, duplicated) in [(1, 0), (0, 1)] {
            let report = Report {
                lost,
                duplicated,
                ..test_report()
            };
            r.publishing_row("rooms", &report, &measure, String::new());
        }
        assert_eq!(r.failed, ["rooms: lost or duplicated deliveries"; 2]);
    }

    #[tokio::test]
    async fn the_smoke_run_needs_no_collector() {
        let shipped = runner().as_shipped().await.unwrap();
        assert_eq!(shipped, env(&[("OTEL_TRACES_EXPORTER", "none")]));
    }
}
