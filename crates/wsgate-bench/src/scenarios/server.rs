//! The gateway under test: a child process on a free port, with the
//! environment a scenario gives it, its JSON log in a file. Where it listens
//! comes from its `wsgate listening` log line, read as JSON.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;
use tokio::process::{Child, Command};

use super::pin;

/// How long the server may take to say where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a SIGTERM may take before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A running gateway.
pub struct Server {
    child: Child,
    pid: u32,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Server {
    /// Starts `bin` on 127.0.0.1 with a free port, `OTEL_TRACES_EXPORTER=none`
    /// unless `env` says otherwise (on top of this process's environment),
    /// logging JSON to `log`, pinned to `cpu` if given.
    pub async fn start(
        bin: &Path,
        env: &[(String, String)],
        log: PathBuf,
        cpu: Option<usize>,
    ) -> anyhow::Result<Self> {
        let mut command = Command::new(bin);
        command
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .env("OTEL_TRACES_EXPORTER", "none")
            .envs(env.iter().map(|(k, v)| (k, v)));
        let mut child = pin::spawn_logged(command, &log, cpu)?;
        let pid = child.id().context("the server has no process id")?;
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(addr) = listening_addr(&text) {
                return Ok(Self {
                    child,
                    pid,
                    addr,
                    log,
                });
            }
            if let Some(status) = child.try_wait()? {
                bail!("the server did not start ({status}): {text}");
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("the server did not say where it listens: {text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// SIGTERM, then SIGKILL if it has not exited in 15 s.
    pub async fn stop(mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.pid) {
            // SAFETY: kill only sends a signal to our own child, which has
            // not been reaped yet (we hold its `Child`), so the pid is its.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        if tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The messages of the JSON log at `path` that say spans were dropped
/// unexported: the OpenTelemetry SDK batch processor's warnings, the first
/// when it starts dropping and one with the count at shutdown.
pub fn dropped_span_warnings_in(path: &Path) -> Vec<String> {
    dropped_span_warnings(&std::fs::read_to_string(path).unwrap_or_default())
}

/// The `addr` of the first `wsgate listening` entry of a JSON log.
fn listening_addr(log: &str) -> Option<SocketAddr> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["fields"]["message"] == "wsgate listening")?["fields"]["addr"]
        .as_str()?
        .parse()
        .ok()
}

fn dropped_span_warnings(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|e| e["fields"]["message"].as_str().map(str::to_owned))
        .filter(|m| m.contains("dropped a Span") || m.contains("Spans were dropped"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_listening_address_in_the_json_log() {
        let log = r#"{"timestamp":"t","level":"INFO","fields":{"message":"config","listen":"127.0.0.1:0"}}
not json at all
{"timestamp":"t","level":"INFO","fields":{"message":"wsgate listening","addr":"127.0.0.1:40123"}}
"#;
        assert_eq!(
            listening_addr(log),
            Some("127.0.0.1:40123".parse().unwrap())
        );
        assert_eq!(
            listening_addr("{\"fields\":{\"message\":\"starting\"}}"),
            None
        );
    }

    #[test]
    fn finds_the_sdk_warnings_about_dropped_spans() {
        let log = r#"{"fields":{"message":"BatchSpanProcessor dropped a Span due to queue full.","name":"BatchSpanProcessor.SpanDroppingStarted"}}
{"fields":{"message":"wsgate listening","addr":"127.0.0.1:1"}}
{"fields":{"message":"Spans were dropped due to a queue being full.","dropped_span_count":3}}
"#;
        assert_eq!(dropped_span_warnings(log).len(), 2);
        assert!(dropped_span_warnings("{\"fields\":{\"message\":\"ok\"}}").is_empty());
    }
}
