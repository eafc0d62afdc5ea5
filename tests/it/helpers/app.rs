//! A gateway in this test process, on port 0, with its own metrics registry.

use std::net::SocketAddr;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wsgate::telemetry::Telemetry;
use wsgate::{Application, Config};

use super::*;

/// A gateway running in this test process.
pub struct TestApp {
    pub addr: SocketAddr,
    /// The admin listener (`--admin-listen`), where `/metrics` is then served.
    pub admin_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Starts a gateway on an ephemeral port with `configure` applied to the
/// defaults. It has its own metrics registry and no tracing.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = flags(&[]);
    configure(&mut config);
    config.validate().expect("valid test config");
    let telemetry = Telemetry::metrics_only().expect("telemetry");
    let app = Application::build(&config, &telemetry)
        .await
        .expect("app builds");
    let addr = app.local_addr();
    let admin_addr = app.admin_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        // Keep the providers alive as long as the app runs.
        let _telemetry = telemetry;
        app.run_until(async {
            let _ = stopped.await;
        })
        .await
        .map(drop)
    });
    TestApp {
        addr,
        admin_addr,
        stop: Some(stop),
        server: Some(server),
    }
}

/// The configuration `args` give on the command line, on an ephemeral port.
fn flags(args: &[&str]) -> Config {
    use clap::Parser as _;
    let mut argv = vec!["wsgate", "--listen", "127.0.0.1:0"];
    argv.extend_from_slice(args);
    wsgate::Cli::try_parse_from(argv)
        .expect("valid flags")
        .serve
}

/// Starts a gateway configured by command-line flags, as a user would.
pub async fn spawn_app_with_args(args: &[&str]) -> TestApp {
    let config = flags(args);
    spawn_app_with(move |c| *c = config).await
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

impl TestApp {
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn connect(&self) -> Client {
        let (ws, _) = within(tokio_tungstenite::connect_async(self.ws_url()))
            .await
            .expect("websocket connects");
        Client { ws }
    }

    /// Tries to connect with a request adjusted by `adjust` (headers, query),
    /// returning the handshake's error instead of failing.
    pub async fn try_connect_with(
        &self,
        path_and_query: &str,
        adjust: impl FnOnce(&mut tokio_tungstenite::tungstenite::handshake::client::Request),
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let url = format!("ws://{}{path_and_query}", self.addr);
        let mut request = url.into_client_request().expect("a request");
        adjust(&mut request);
        let (ws, _) = within(tokio_tungstenite::connect_async(request)).await?;
        Ok(Client { ws })
    }

    /// `/metrics`, parsed.
    pub async fn metrics(&self) -> Metrics {
        Metrics::parse(&self.metrics_text().await)
    }

    /// `path` on the admin listener, or on the main one without `--admin-listen`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr.unwrap_or(self.addr))
    }

    pub async fn metrics_text(&self) -> String {
        let response = within(reqwest::get(self.admin_url("/metrics")))
            .await
            .expect("scrape");
        assert_eq!(response.status(), 200);
        response.text().await.expect("metrics body")
    }

    /// Polls `/metrics` until `ready` holds, failing after the deadline.
    pub async fn metrics_when(&self, what: &str, ready: impl Fn(&Metrics) -> bool) -> Metrics {
        super::metrics_when(what, ready, async || self.metrics().await).await
    }

    /// Stops the gateway the way a signal would, and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            within(server)
                .await
                .expect("server task joins")
                .expect("server shut down cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}
