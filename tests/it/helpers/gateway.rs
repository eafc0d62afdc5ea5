//! The real `wsgate` binary as a child process, as users and operators run it.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::helpers::{Client, Metrics, poll_until, within};

/// A running `wsgate` process with its JSON log lines captured.
pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    /// The admin listener (`--admin-listen`), where `/metrics` is then served.
    pub admin_addr: Option<SocketAddr>,
    logs: Arc<Mutex<Vec<Value>>>,
}

impl Gateway {
    /// Starts the binary on an ephemeral port with `env` added (and every
    /// inherited `OTEL_*`/`WSGATE_*` variable removed, so the test decides).
    pub async fn start(env: &[(&str, &str)], args: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wsgate"));
        for (key, _) in std::env::vars() {
            if key.starts_with("OTEL_") || key.starts_with("WSGATE_") || key == "RUST_LOG" {
                command.env_remove(key);
            }
        }
        command
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("wsgate starts");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                let mut addr_tx = Some(addr_tx);
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                        eprintln!("wsgate (non-JSON): {line}");
                        continue;
                    };
                    if entry["fields"]["message"] == "wsgate listening"
                        && let Some(tx) = addr_tx.take()
                    {
                        let field = |name: &str| entry["fields"][name].as_str().map(str::to_owned);
                        let _ = tx.send((field("addr").unwrap_or_default(), field("admin_addr")));
                    }
                    logs.lock().expect("logs").push(entry);
                }
            });
        }
        let (addr, admin_addr) = within(addr_rx)
            .await
            .expect("wsgate logged its listening address");
        let addr = addr.parse().expect("a socket address");
        let admin_addr = admin_addr.map(|a| a.parse().expect("an admin socket address"));
        Self {
            child,
            addr,
            admin_addr,
            logs,
        }
    }

    pub async fn connect(&self) -> Client {
        self.connect_to("/ws").await
    }

    /// Connects to `path_and_query` (e.g. `/ws?token=…`), failing the test if
    /// the handshake does.
    pub async fn connect_to(&self, path_and_query: &str) -> Client {
        let url = format!("ws://{}{path_and_query}", self.addr);
        let (ws, _) = within(tokio_tungstenite::connect_async(url))
            .await
            .expect("websocket connects");
        Client { ws }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `path` on the admin listener, or on the main one without `--admin-listen`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr.unwrap_or(self.addr))
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<Value> {
        self.logs.lock().expect("logs").clone()
    }

    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "SIGTERM delivered");
    }

    /// `/metrics`, parsed.
    pub async fn metrics(&self) -> Metrics {
        let text = within(reqwest::get(self.admin_url("/metrics")))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("body");
        Metrics::parse(&text)
    }

    /// Polls `/metrics` until `ready` holds.
    pub async fn metrics_when(&self, what: &str, ready: impl Fn(&Metrics) -> bool) -> Metrics {
        super::metrics_when(what, ready, async || self.metrics().await).await
    }

    /// The status `/readyz` answers now.
    pub async fn readiness(&self) -> u16 {
        within(reqwest::get(self.url("/readyz")))
            .await
            .expect("readyz")
            .status()
            .as_u16()
    }

    /// Polls `/readyz` until it answers `status`.
    pub async fn readiness_becomes(&self, status: u16) {
        poll_until(async || match self.readiness().await {
            now if now == status => Ok(()),
            now => Err(format!("/readyz to answer {status}, not {now}")),
        })
        .await;
    }

    /// Polls `/readyz` until it answers 200 (with NATS: once connected).
    pub async fn wait_ready(&self) {
        self.readiness_becomes(200).await;
    }

    /// The process's resident memory, read from `/proc` now (the `/metrics`
    /// process values are refreshed in the background, so may be seconds old).
    pub fn resident_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        kib * 1024
    }

    /// Kills the process outright (SIGKILL): no shutdown, no flush.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit on its own.
    pub async fn wait(mut self) -> ExitStatus {
        poll_until(async || {
            let exited = self.child.try_wait().expect("wait");
            exited.ok_or_else(|| "wsgate to exit".to_owned())
        })
        .await
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
