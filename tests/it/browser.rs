//! The demo page in a real browser: headless Chromium, driven over the
//! DevTools protocol (a WebSocket, so the test's own client library suffices).

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::{poll_until, require_tool, spawn_app, within};

/// A headless Chromium showing one page, and a DevTools session on that page.
pub(crate) struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    devtools: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Browser {
    /// Opens `url`, or returns `None` (loudly) when Chromium is not installed
    /// outside CI.
    pub(crate) async fn open(url: &str) -> Option<Self> {
        let chromium = require_tool("chromium")?;
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                "--window-size=1000,640",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        // Chromium announces its DevTools endpoint on stderr.
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(endpoint) = line.strip_prefix("DevTools listening on ")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(endpoint.to_owned());
                }
            }
        });
        let browser_endpoint = within(rx).await.expect("DevTools endpoint");
        let port = browser_endpoint
            .trim_start_matches("ws://127.0.0.1:")
            .split('/')
            .next()
            .expect("port")
            .to_owned();
        let page = find_page(&port).await;
        let (devtools, _) = within(tokio_tungstenite::connect_async(page))
            .await
            .expect("DevTools session");
        Some(Self {
            child,
            _profile: profile,
            devtools,
            next_id: 1,
        })
    }

    /// Sends one DevTools command and returns its result.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let command = json!({"id": id, "method": method, "params": params});
        within(self.devtools.send(Message::text(command.to_string())))
            .await
            .expect("send to DevTools");
        loop {
            let message = within(self.devtools.next())
                .await
                .expect("DevTools open")
                .expect("frame");
            let Message::Text(text) = message else {
                continue;
            };
            let reply: Value = serde_json::from_str(&text).expect("DevTools speaks JSON");
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// Evaluates a JavaScript expression in the page and returns its value.
    pub(crate) async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        result["result"]["value"].clone()
    }

    /// Polls an expression until `ready` holds for its value.
    pub(crate) async fn eval_until(
        &mut self,
        what: &str,
        expression: &str,
        ready: impl Fn(&Value) -> bool,
    ) -> Value {
        poll_until(async || {
            let value = self.eval(expression).await;
            if ready(&value) {
                Ok(value)
            } else {
                Err(format!("{what}; last {value}"))
            }
        })
        .await
    }

    async fn screenshot_png(&mut self) -> Vec<u8> {
        use base64::Engine as _;
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("image data"))
            .expect("base64")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The DevTools WebSocket URL of the browser's first page.
async fn find_page(port: &str) -> String {
    poll_until(async || {
        if let Ok(response) = reqwest::get(format!("http://127.0.0.1:{port}/json/list")).await
            && let Ok(text) = response.text().await
            && let Ok(targets) = serde_json::from_str::<Vec<Value>>(&text)
            && let Some(page) = targets.iter().find(|t| t["type"] == "page")
        {
            let url = page["webSocketDebuggerUrl"].as_str().expect("debugger url");
            return Ok(url.to_owned());
        }
        Err("a page target".to_owned())
    })
    .await
}

#[tokio::test]
async fn the_demo_page_and_websocket_clients_hear_each_other() {
    let app = spawn_app().await;
    let mut watcher = app.connect().await;
    watcher.subscribe("demo").await;
    let url = app.http_url("/?room=demo&autopublish=hello%20from%20the%20browser");
    let Some(mut browser) = Browser::open(&url).await else {
        return;
    };

    // The page connected and subscribed by itself, then published once.
    let frame = watcher.expect("message").await;
    assert_eq!(
        frame["data"],
        json!({"text": "hello from the browser", "from": "demo page"})
    );
    let trace = frame["traceparent"]
        .as_str()
        .expect("the page starts a trace")
        .split('-')
        .nth(1)
        .expect("trace id")
        .to_owned();
    assert_eq!(trace.len(), 32);
    browser
        .eval_until(
            "the page shows its own message with its trace id",
            "document.getElementById('log').innerText",
            |v| {
                v.as_str()
                    .is_some_and(|t| t.contains("hello from the browser") && t.contains(&trace))
            },
        )
        .await;
    assert_eq!(
        browser
            .eval("document.getElementById('status').textContent")
            .await,
        "connected"
    );

    watcher
        .publish_acked("demo", json!({"text": "hello from a test client"}), "w1")
        .await;
    browser
        .eval_until(
            "the page shows the test client's message",
            "document.getElementById('log').innerText",
            |v| {
                v.as_str()
                    .is_some_and(|t| t.contains("hello from a test client"))
            },
        )
        .await;

    // Refreshes docs/demo.png when asked: WSGATE_DEMO_SCREENSHOT=docs/demo.png.
    if let Ok(path) = std::env::var("WSGATE_DEMO_SCREENSHOT") {
        let png = browser.screenshot_png().await;
        std::fs::write(&path, png).expect("write screenshot");
    }
}
