//! WebSocket clients: one that speaks wire protocol v1, and one that never
//! writes a byte after the handshake.

use std::net::SocketAddr;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::*;

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

    /// Subscribes, resuming after `since` (offset, epoch) when given, and
    /// returns `subscribed`.
    pub async fn subscribe_since(&mut self, room: &str, since: Option<(u64, &str)>) -> Value {
        let mut frame = json!({"type": "subscribe", "room": room});
        if let Some((offset, epoch)) = since {
            frame["since"] = json!({"offset": offset, "epoch": epoch});
        }
        self.send_json(frame).await;
        let subscribed = self.expect("subscribed").await;
        assert_eq!(subscribed["room"], room);
        subscribed
    }

    /// Publishes `n` messages with `data.n` and ids numbered from `from`, and
    /// returns their acks' offsets (each `None` without history), skipping
    /// the client's own messages.
    pub async fn publish_numbered(&mut self, room: &str, from: u64, n: u64) -> Vec<Option<u64>> {
        for i in from..from + n {
            self.send_json(
                json!({"type": "publish", "room": room, "data": {"n": i}, "id": format!("p{i}")}),
            )
            .await;
        }
        let mut offsets = Vec::with_capacity(n as usize);
        while offsets.len() < n as usize {
            let frame = self.recv().await;
            match frame["type"].as_str() {
                Some("ack") => offsets.push(frame["offset"].as_u64()),
                Some("message") => {}
                _ => panic!("expected acks, got {frame}"),
            }
        }
        offsets
    }

    /// The next `n` message frames' offset and `data.n`.
    pub async fn numbered_messages(&mut self, n: usize) -> Vec<(u64, u64)> {
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            let frame = self.expect("message").await;
            got.push((
                frame["offset"].as_u64().expect("an offset"),
                frame["data"]["n"].as_u64().expect("data.n"),
            ));
        }
        got
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
