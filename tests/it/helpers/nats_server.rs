//! A real `nats-server` for the tests: started on fixed loopback ports, stopped
//! and restarted at will, observed through its monitoring endpoint.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::helpers::{poll_until, require_tool, within};

/// A `nats-server` on a fixed loopback port, which can be stopped and restarted.
pub struct NatsServer {
    bin: PathBuf,
    port: u16,
    /// The HTTP monitoring port (`/connz`).
    monitor: u16,
    /// More command-line options: TLS (`--tls`, `--tlsverify`), users
    /// (`--user`, `--pass`), a configuration file (`-c`).
    options: Vec<String>,
    child: Option<Child>,
}

/// What the server has done for one client connection, from `/connz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Messages the server has routed to the client.
    pub messages: u64,
    /// Bytes the server holds for the client, not yet written to its socket.
    pub pending_bytes: u64,
}

impl NatsServer {
    /// Starts one, or returns `None` (loudly) when nats-server is not installed
    /// outside CI.
    pub async fn start() -> Option<Self> {
        Self::start_with(&[] as &[&str]).await
    }

    /// Starts one with more command-line `options`; `None` as for `start`.
    pub async fn start_with(options: &[impl AsRef<str>]) -> Option<Self> {
        let mut server = Self::unstarted()?;
        server.options = options.iter().map(|o| o.as_ref().to_owned()).collect();
        server.restart().await;
        Some(server)
    }

    /// Reserves the ports (so [`url`](Self::url) is known) without starting
    /// the server: [`restart`](Self::restart) starts it. `None` as for `start`.
    pub fn unstarted() -> Option<Self> {
        let bin = require_tool("nats-server")?;
        let free_port = || {
            TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port()
        };
        Some(Self {
            bin,
            port: free_port(),
            monitor: free_port(),
            options: Vec::new(),
            child: None,
        })
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The URL that asks for TLS.
    pub fn tls_url(&self) -> String {
        format!("tls://127.0.0.1:{}", self.port)
    }

    /// The `nats://` URL with `userinfo` (`user:pass` or a token) before the
    /// host.
    pub fn url_with_login(&self, userinfo: &str) -> String {
        format!("nats://{userinfo}@127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(&self.bin)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-m", &self.monitor.to_string()])
            .args(&self.options)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        poll_until(async || match tokio::net::TcpStream::connect(&addr).await {
            Ok(_) => Ok(()),
            Err(e) => Err(format!("nats-server to listen ({e})")),
        })
        .await;
    }

    /// Every client connection, from `/connz` with subscriptions.
    async fn connections(&self) -> Vec<Value> {
        let url = format!("http://127.0.0.1:{}/connz?subs=1", self.monitor);
        let body = within(reqwest::get(url))
            .await
            .expect("connz")
            .text()
            .await
            .expect("body");
        let connz: Value = serde_json::from_str(&body).expect("json");
        connz["connections"]
            .as_array()
            .expect("connections")
            .clone()
    }

    /// How many room subscriptions (subjects under `wsgate.`) the clients
    /// hold, from the monitoring endpoint. Each node also holds its round-trip
    /// responder and request inbox, which are not rooms; `/subsz` would also
    /// count the server's own internal subscriptions.
    pub async fn subscriptions(&self) -> u64 {
        self.connections()
            .await
            .iter()
            .flat_map(|c| {
                c["subscriptions_list"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter(|subject| subject.as_str().is_some_and(|s| s.starts_with("wsgate.")))
            .count() as u64
    }

    /// Polls until the server holds `n` subscriptions.
    pub async fn subscriptions_become(&self, n: u64) {
        poll_until(async || match self.subscriptions().await {
            now if now == n => Ok(()),
            now => Err(format!("{n} NATS subscriptions, not {now}")),
        })
        .await;
    }

    /// What the server has sent to the client connection named `name` (a
    /// gateway's is `wsgate <node id>`).
    pub async fn delivered_to(&self, name: &str) -> Delivered {
        let connections = self.connections().await;
        let client = connections
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no NATS client named {name:?}: {connections:#?}"));
        let count = |field: &str| client[field].as_u64().expect(field);
        Delivered {
            messages: count("out_msgs"),
            pending_bytes: count("pending_bytes"),
        }
    }

    /// The TLS version of the connection of the client named `name` (a
    /// gateway's is `wsgate <node id>`), `None` for a connection in clear.
    pub async fn tls_version_of(&self, name: &str) -> Option<String> {
        let connections = self.connections().await;
        let client = connections
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no NATS client named {name:?}: {connections:#?}"));
        client["tls_version"].as_str().map(str::to_owned)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
