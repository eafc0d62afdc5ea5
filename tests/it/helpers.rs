//! The test vocabulary: a gateway on port 0, WebSocket clients that speak the
//! protocol, and `/metrics` as a map. Tests poll with deadlines; none sleeps to
//! synchronise.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wsgate::telemetry::Telemetry;
use wsgate::{Application, Config};

/// How long any single expectation may take before the test fails. Generous:
/// it bounds waits on a loaded CI machine running debug builds, and costs
/// nothing when things work.
pub const DEADLINE: Duration = Duration::from_secs(30);

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
        poll_until(async || {
            let metrics = self.metrics().await;
            if ready(&metrics) {
                Ok(metrics)
            } else {
                Err(format!("metrics: {what}"))
            }
        })
        .await
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

/// Now, in Unix seconds: what a token's `exp` and `nbf` are measured in.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A JSON Web Token signed with HS256 and `secret`, for gateways started with
/// `--jwt-secret`.
pub fn hs256_token(secret: &str, claims: &serde_json::Value) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing cannot fail")
}

/// Polls `probe` until it returns `Ok`, failing the test after [`DEADLINE`]
/// with the last `Err`, which says what was awaited and what was seen instead.
pub async fn poll_until<T>(mut probe: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(waiting) => assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting: {waiting}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Awaits `future`, failing the test after [`DEADLINE`].
pub async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(DEADLINE, future)
        .await
        .expect("timed out")
}

/// A WebSocket client that speaks wire protocol v1.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a connection ended, seen from the client.
#[derive(Debug, PartialEq)]
pub enum Closed {
    /// A close frame with this code and reason.
    Frame(u16, String),
    /// The connection ended without a close frame.
    Abrupt(String),
}

impl Client {
    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        within(self.ws.send(Message::text(text)))
            .await
            .expect("send");
    }

    /// The next text frame as JSON; pings and pongs are skipped.
    pub async fn recv(&mut self) -> Value {
        // One deadline for the whole wait: the server's heartbeat pings must
        // not restart it, or a frame that never comes would hang the test.
        within(async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(text))) => {
                        return serde_json::from_str(&text).expect("server sends JSON");
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    other => panic!("expected a text frame, got {other:?}"),
                }
            }
        })
        .await
    }

    /// The next frame, expected to be of `type` `kind`.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let frame = self.recv().await;
        assert_eq!(frame["type"], kind, "unexpected frame {frame}");
        frame
    }

    pub async fn subscribe(&mut self, room: &str) {
        self.send_json(json!({"type": "subscribe", "room": room}))
            .await;
        let frame = self.expect("subscribed").await;
        assert_eq!(frame["room"], room);
    }

    pub async fn unsubscribe(&mut self, room: &str) {
        self.send_json(json!({"type": "unsubscribe", "room": room}))
            .await;
        let frame = self.expect("unsubscribed").await;
        assert_eq!(frame["room"], room);
    }

    /// Publishes and waits for the ack, skipping the client's own messages.
    pub async fn publish_acked(&mut self, room: &str, data: Value, id: &str) {
        self.send_json(json!({"type": "publish", "room": room, "data": data, "id": id}))
            .await;
        loop {
            let frame = self.recv().await;
            match frame["type"].as_str() {
                Some("ack") => {
                    assert_eq!(frame["id"], id);
                    assert_eq!(frame["room"], room);
                    return;
                }
                Some("message") => continue,
                _ => panic!("expected an ack, got {frame}"),
            }
        }
    }

    /// Expects an error frame with `code` (and the client's `id`, if any).
    pub async fn expect_error(&mut self, code: &str, id: Option<&str>) {
        let frame = self.expect("error").await;
        assert_eq!(frame["code"], code, "{frame}");
        assert!(frame["message"].as_str().is_some_and(|m| !m.is_empty()));
        match id {
            Some(id) => assert_eq!(frame["id"], id, "{frame}"),
            None => assert!(frame.get("id").is_none(), "{frame}"),
        }
    }

    /// Reads until the connection ends and says how.
    pub async fn closed(&mut self) -> Closed {
        // One deadline for the whole wait, whatever frames arrive meanwhile.
        within(async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Close(Some(frame)))) => {
                        return Closed::Frame(u16::from(frame.code), frame.reason.to_string());
                    }
                    Some(Ok(Message::Close(None))) => {
                        return Closed::Frame(u16::from(CloseCode::Status), String::new());
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Closed::Abrupt(e.to_string()),
                    None => return Closed::Abrupt("stream ended".into()),
                }
            }
        })
        .await
    }

    /// Closes from the client side with 1000 and waits for the server's reply.
    pub async fn close(mut self) {
        let normal = tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        };
        within(self.ws.close(Some(normal))).await.expect("close");
        within(async { while let Some(Ok(_)) = self.ws.next().await {} }).await;
    }
}

/// `/metrics` as `series → value`, where a series is written exactly as in the
/// exposition, e.g. `websocket_errors_total{error_type="too_large"}`.
#[derive(Debug)]
pub struct Metrics(pub BTreeMap<String, f64>);

impl Metrics {
    pub fn parse(text: &str) -> Self {
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let (name, value) = l.rsplit_once(' ').expect("series and value");
                (name.to_owned(), value.parse().expect("numeric value"))
            })
            .collect();
        Self(series)
    }

    /// The value of one series; a missing series fails the test.
    #[track_caller]
    pub fn get(&self, series: &str) -> f64 {
        *self
            .0
            .get(series)
            .unwrap_or_else(|| panic!("no series {series}; have: {:#?}", self.0))
    }

    /// The value of a series, or 0 when it does not exist (yet).
    pub fn get_or_zero(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }
}

/// Whether tests may skip when an external tool is missing: never in CI.
pub fn require_tool(tool: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !in_ci,
            "{tool} is required in CI (CI=true) but is not on PATH; ./scripts/test installs it"
        );
        eprintln!(
            "\n*** SKIPPING: {tool} is not installed; run ./scripts/test to install it ***\n"
        );
    }
    found
}

/// A client that completes the opening handshake and then never writes a
/// byte: it cannot answer pings, as a frozen peer would not.
pub struct SilentClient {
    stream: TcpStream,
}

impl SilentClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = within(TcpStream::connect(addr)).await.expect("connect");
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("handshake");
        // Read the response head byte by byte so no frame bytes are consumed.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            within(stream.read_exact(&mut byte))
                .await
                .expect("response");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        Self { stream }
    }

    /// Reads everything the server sent until it closed the connection, and
    /// returns the frames as (opcode, payload).
    pub async fn frames_until_eof(mut self) -> Vec<(u8, Vec<u8>)> {
        use tokio::io::AsyncReadExt as _;
        let mut bytes = Vec::new();
        within(self.stream.read_to_end(&mut bytes))
            .await
            .expect("read until the server closes");
        let mut frames = Vec::new();
        let mut at = 0;
        while at + 2 <= bytes.len() {
            let opcode = bytes[at] & 0x0f;
            let (len, header) = match bytes[at + 1] & 0x7f {
                126 => (
                    usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]])),
                    4,
                ),
                127 => panic!("no test frame is that large"),
                n => (usize::from(n), 2),
            };
            let start = at + header;
            frames.push((opcode, bytes[start..start + len].to_vec()));
            at = start + len;
        }
        frames
    }
}
