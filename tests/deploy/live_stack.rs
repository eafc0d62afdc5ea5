//! The real parts of the live dashboard check: the stack (the gateway,
//! nats-server, Prometheus) as child processes that are stopped when the test
//! ends however it ends, and Prometheus's HTTP API read as JSON.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value as Json, json};

use crate::checks::root;

/// A child process whose output goes to a log file; killed when dropped.
pub struct Proc {
    pub name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    pub fn start(name: &'static str, command: &mut Command, dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).expect("log file");
        let child = command
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        Proc { name, child, log }
    }

    /// An error when the process has exited: it must run the whole check.
    pub fn alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited ({status}):\n{}",
                self.name,
                self.log_tail()
            )),
            Err(e) => Err(format!("{}: {e}", self.name)),
        }
    }

    /// The end of its log, for a failure message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on now (the OS's choice; released at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Seconds since the epoch, as Prometheus's API takes times.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// Polls `ready` every 250 ms until it holds; an error after `deadline` or
/// as soon as one of `procs` exits.
pub async fn wait_until(
    what: &str,
    deadline: Duration,
    procs: &mut [Proc],
    mut ready: impl AsyncFnMut() -> bool,
) -> Result<(), String> {
    let start = Instant::now();
    while start.elapsed() < deadline {
        for p in procs.iter_mut() {
            p.alive()?;
        }
        if ready().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(format!("timed out after {deadline:?} waiting for {what}"))
}

/// How long a process may take to be ready.
const STARTUP: Duration = Duration::from_secs(20);

/// The real gateway (on a nats-server when given one), scraped every second
/// by a real Prometheus that also evaluates prometheus/alerts.yml.
pub struct Stack {
    pub procs: Vec<Proc>,
    pub prom: Prom,
    /// The gateway's WebSocket URL.
    pub ws_url: String,
    dir: tempfile::TempDir,
}

impl Stack {
    pub fn new() -> Stack {
        Stack {
            procs: Vec::new(),
            prom: Prom::new(String::new()),
            ws_url: String::new(),
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    /// Starts everything and waits until each is ready. On an error what
    /// started stays in `procs`, for its logs.
    pub async fn start(
        &mut self,
        prometheus: &Path,
        nats_server: Option<&Path>,
        job: &str,
    ) -> Result<(), String> {
        let dir = self.dir.path().to_owned();
        let mut gateway_args = vec![];
        if let Some(nats) = nats_server {
            let port = free_port();
            let args = ["-a", "127.0.0.1", "-p", &port.to_string()];
            self.procs.push(Proc::start(
                "nats-server",
                Command::new(nats).args(args),
                &dir,
            ));
            wait_until("nats-server", STARTUP, &mut self.procs, async || {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            })
            .await?;
            gateway_args = vec!["--nats-url".to_owned(), format!("nats://127.0.0.1:{port}")];
        }
        // /metrics on an admin listener, as compose.yaml runs the gateways.
        let (port, admin) = (free_port(), free_port());
        let gateway = Prom::new(format!("http://127.0.0.1:{port}"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_wsgate"));
        command
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(["--node-id", "gateway-a"])
            .args(&gateway_args)
            .env("OTEL_TRACES_EXPORTER", "none")
            .env("RUST_LOG", "warn");
        self.procs.push(Proc::start("wsgate", &mut command, &dir));
        wait_until(
            "the gateway's /readyz",
            STARTUP,
            &mut self.procs,
            async || gateway.get_ok("/readyz").await,
        )
        .await?;

        let prom_port = free_port();
        let alerts = root().join("prometheus/alerts.yml");
        let config = json!({ // JSON is YAML
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [alerts],
            // No target labels: the dashboards and the rules must work with what
            // every Prometheus attaches (job, instance).
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [format!("127.0.0.1:{admin}")]}]}],
        });
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config.to_string()).expect("writing prometheus.yml");
        let mut command = Command::new(prometheus);
        command.args([
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
            "--storage.tsdb.retention.time=1h".to_owned(),
            "--log.level=warn".to_owned(),
        ]);
        self.procs
            .push(Proc::start("prometheus", &mut command, &dir));
        self.prom = Prom::new(format!("http://127.0.0.1:{prom_port}"));
        let prom = &self.prom;
        wait_until(
            "Prometheus /-/ready",
            STARTUP,
            &mut self.procs,
            async || prom.get_ok("/-/ready").await,
        )
        .await?;
        self.ws_url = format!("ws://127.0.0.1:{port}/ws");
        Ok(())
    }
}

/// Prometheus's HTTP API.
pub struct Prom {
    pub base: String,
    http: reqwest::Client,
}

impl Prom {
    pub fn new(base: String) -> Prom {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .expect("an HTTP client");
        Prom { base, http }
    }

    /// `data` of a successful answer, or the error Prometheus gave.
    pub async fn api(
        &self,
        path: &str,
        params: &[(&str, String)],
        get: bool,
    ) -> Result<Json, String> {
        let url = format!("{}{path}", self.base);
        let request = if get {
            self.http.get(url).query(params)
        } else {
            self.http.post(url).form(params)
        };
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response.text().await.map_err(|e| e.to_string())?;
        let json: Json = serde_json::from_str(&body).map_err(|_| format!("HTTP {status}"))?;
        if json["status"] != "success" {
            let text = |key: &str| json[key].as_str().unwrap_or("?").to_owned();
            return Err(format!("{}: {}", text("errorType"), text("error")));
        }
        Ok(json["data"].clone())
    }

    pub async fn get_ok(&self, path: &str) -> bool {
        let response = self.http.get(format!("{}{path}", self.base)).send().await;
        response.is_ok_and(|r| r.status().is_success())
    }

    pub async fn query(&self, expr: &str, at: f64) -> Result<Json, String> {
        let params = [("query", expr.to_owned()), ("time", format!("{at:.3}"))];
        self.api("/api/v1/query", &params, false).await
    }

    pub async fn query_range(
        &self,
        expr: &str,
        start: f64,
        end: f64,
        step: &str,
    ) -> Result<Json, String> {
        let params = [
            ("query", expr.to_owned()),
            ("start", format!("{start:.3}")),
            ("end", format!("{end:.3}")),
            ("step", step.to_owned()),
        ];
        self.api("/api/v1/query_range", &params, false).await
    }

    /// The first value of an instant query, if it has one.
    pub async fn scalar(&self, expr: &str) -> Option<f64> {
        let data = self.query(expr, now()).await.ok()?;
        data["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

fn finite(value: &Json) -> bool {
    value
        .as_str()
        .and_then(|v| v.parse::<f64>().ok())
        .is_some_and(f64::is_finite)
}

/// Series with a finite value (NaN from an idle histogram_quantile is no data).
pub fn count_instant(data: &Json) -> usize {
    match data["resultType"].as_str() {
        Some("scalar" | "string") => usize::from(finite(&data["result"][1])),
        _ => data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| finite(&s["value"][1]))
            .count(),
    }
}

/// Series with at least one finite value in the range.
pub fn count_range(data: &Json) -> usize {
    data["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| {
            s["values"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|v| finite(&v[1]))
        })
        .count()
}
