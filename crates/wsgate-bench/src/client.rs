//! One bench connection: connect and subscribe, then a reader task that checks
//! and records everything the server sends. (A publisher also has a writer task:
//! see `publisher`.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, oneshot};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use super::args::Plan;
use super::frames::{self, Kind};
use super::stats::ConnStats;

/// Small buffers: 15,000 connections with tungstenite's 128 KiB defaults would
/// cost the bench 2 GiB.
const READ_BUFFER: usize = 8 * 1024;
const WRITE_BUFFER: usize = 16 * 1024;

pub type Ws = WebSocketStream<TcpStream>;
pub type Sink = SplitSink<Ws, Message>;
pub type Stream = SplitStream<Ws>;

/// Connects to `url` (already resolved to `addr`), subscribes to `room` and waits
/// for `subscribed`. The error is a short reason, the key of a report count.
pub async fn connect(addr: SocketAddr, url: &str, room: &str) -> Result<Ws, String> {
    connect_with(addr, url, room, &frames::subscribe(room))
        .await
        .map(|(ws, _)| ws)
}

/// What `subscribed` said: the room's position, and the answer to a resume.
#[derive(Debug, Clone, Default)]
pub struct Subscribed {
    pub offset: Option<u64>,
    pub epoch: Option<String>,
    pub recovered: Option<bool>,
}

/// Connects and sends `subscribe` (a frame for `room`), then waits for
/// `subscribed`.
pub async fn connect_with(
    addr: SocketAddr,
    url: &str,
    room: &str,
    subscribe: &str,
) -> Result<(Ws, Subscribed), String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("tcp: {}", e.kind()))?;
    let _ = tcp.set_nodelay(true);
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER);
    let (mut ws, _) = client_async_with_config(url, tcp, Some(config))
        .await
        .map_err(|e| match e {
            WsError::Http(response) => format!("handshake: HTTP {}", response.status().as_u16()),
            WsError::Io(e) => format!("handshake: {}", e.kind()),
            _ => "handshake: failed".to_owned(),
        })?;
    ws.send(Message::text(subscribe))
        .await
        .map_err(|_| "subscribe: write failed".to_owned())?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => match frames::parse(&text) {
                Some(f) if f.kind == Kind::Subscribed && f.room == Some(room) => {
                    let subscribed = Subscribed {
                        offset: f.offset,
                        epoch: f.epoch.map(str::to_owned),
                        recovered: f.recovered,
                    };
                    return Ok((ws, subscribed));
                }
                Some(f) if f.kind == Kind::Error => {
                    return Err(format!("subscribe: {}", f.code.unwrap_or("error")));
                }
                _ => {}
            },
            Some(Ok(Message::Close(frame))) => {
                let code = frame.map_or(1005, |f| u16::from(f.code));
                return Err(format!("subscribe: closed {code}"));
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return Err("subscribe: connection lost".to_owned()),
        }
    }
}

/// A stop signal for one task. Each task has its own oneshot, so waiting for it
/// touches no state shared with other tasks (a shared `CancellationToken` would
/// take one mutex per message, for every connection).
#[derive(Debug)]
pub struct Stop(Option<oneshot::Receiver<()>>);

impl Stop {
    pub fn new() -> (oneshot::Sender<()>, Self) {
        let (tx, rx) = oneshot::channel();
        (tx, Self(Some(rx)))
    }

    /// Resolves once the signal was sent or its sender dropped; at once after that.
    pub async fn fired(&mut self) {
        if let Some(rx) = self.0.as_mut() {
            let _ = rx.await;
            self.0 = None;
        }
    }
}

/// Counters the orchestrator polls for progress and settling. Each is written
/// by one task only (a plain store, no contended read-modify-write).
#[derive(Debug, Default)]
pub struct Shared {
    pub delivered: AtomicU64,
    pub acked: AtomicU64,
    pub published: AtomicU64,
}

/// What a reader needs besides its socket.
pub struct Reader {
    pub plan: Arc<Plan>,
    pub conn: usize,
    pub shared: Arc<Shared>,
    /// For a publisher: one permit per answered publish (ack or error).
    pub answers: Option<Arc<Semaphore>>,
    /// Stop recording: send the stats, then only drain until the connection ends.
    pub stop: Stop,
    pub stats: oneshot::Sender<ConnStats>,
}

/// Reads until the connection ends. Its stats go out when `stop` fires or the
/// server ends the connection, whichever is first.
pub async fn read(mut stream: Stream, mut r: Reader) {
    let plan = &*r.plan;
    let room = plan.room_of(r.conn);
    let mut stats = new_stats(plan, r.conn);
    let (mut delivered, mut acked) = (0, 0);
    let ended = loop {
        let next = tokio::select! {
            biased;
            () = r.stop.fired() => break None,
            next = stream.next() => next,
        };
        match next {
            Some(Ok(Message::Text(text))) => {
                let Some(frame) = frames::parse(&text) else {
                    stats.unexpected += 1;
                    continue;
                };
                match frame.kind {
                    Kind::Message => {
                        delivery(plan, room, &frame, &mut stats, &r.shared, &mut delivered)
                    }
                    Kind::Ack => match frame.id.and_then(frames::publish_id) {
                        Some((p, seq)) if p == r.conn && stats.ack(seq) => {
                            acked += 1;
                            r.shared.acked.store(acked, Ordering::Relaxed);
                            if let Some(answers) = &r.answers {
                                answers.add_permits(1);
                            }
                        }
                        Some((p, _)) if p == r.conn => {} // a repeated ack, counted by `ack`
                        _ => stats.unexpected += 1,
                    },
                    Kind::Error => {
                        stats.error_frame(frame.code.unwrap_or("unknown"));
                        // A failed publish frees its window slot: it will never be acked.
                        let ours = frame.id.and_then(frames::publish_id);
                        if let (Some((p, _)), Some(answers)) = (ours, &r.answers)
                            && p == r.conn
                        {
                            answers.add_permits(1);
                        }
                    }
                    Kind::Subscribed | Kind::Unsubscribed | Kind::Pong => {}
                    Kind::Other => stats.unexpected += 1,
                }
            }
            Some(Ok(Message::Binary(_))) => stats.unexpected += 1,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            Some(Ok(Message::Close(frame))) => {
                break Some(frame.map_or(1005, |f| u16::from(f.code)));
            }
            Some(Err(_)) | None => break Some(1006),
        }
    };
    stats.closed = ended;
    if ended.is_some() {
        // Nothing more will be answered: a waiting writer must not wait for it.
        if let Some(answers) = &r.answers {
            answers.close();
        }
    }
    let _ = r.stats.send(stats);
    if ended.is_none() {
        // Keep reading (and so answering the server's pings) until the
        // connection is closed after the report and any --hold.
        while let Some(Ok(message)) = stream.next().await {
            if message.is_close() {
                break;
            }
        }
    }
}

/// The stats of connection `conn`: a tracker for each publisher of its room.
pub fn new_stats(plan: &Plan, conn: usize) -> ConnStats {
    let room = plan.room_of(conn);
    let is_publisher = conn < plan.publishers;
    let mut stats = ConnStats::new(plan.publishers_in(room), plan.messages, is_publisher);
    stats.publisher_ids = (0..plan.publishers_in(room))
        .map(|slot| slot * plan.rooms + room)
        .collect();
    stats
}

/// Records a `message` frame in `room`: a delivery when it is one of this
/// run's, counted in `delivered` (and published to `shared`) when new.
pub fn delivery(
    plan: &Plan,
    room: usize,
    frame: &frames::Incoming<'_>,
    stats: &mut ConnStats,
    shared: &Shared,
    delivered: &mut u64,
) {
    match frame.data {
        Some(m) if m.p < plan.publishers && plan.room_of(m.p) == room => {
            let slot = plan.publisher_slot(m.p);
            if stats.delivery(slot, m.s, m.t, unix_nanos()) {
                *delivered += 1;
                shared.delivered.store(*delivered, Ordering::Relaxed);
            }
        }
        _ => stats.unexpected += 1,
    }
}

/// Wall-clock time in unix nanoseconds; what `t` in a publish carries.
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
