//! Sends `--mix dashboards` (see `mix`) until stopped: long-lived connections
//! that publish, ping, resubscribe and now and then send an invalid frame;
//! short-lived connections that close normally (1000) or with an oversize
//! frame (1009); and `POST /api/publish`, valid and not.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::args::{BenchArgs, Mix, Target};
use crate::client::{self, unix_nanos};
use crate::frames;
use crate::mix::{self, OVERSIZE, OVERSIZE_EVERY, ROOMS, Step, Tally};

/// `wsgate-bench --mix`: runs the mix against the first --url until
/// --duration or SIGINT/SIGTERM and prints the counts (one JSON object with
/// --json). Exit status 1 when no publish was acked: nothing reached a
/// gateway, so no dashboard would have data.
pub fn main(mix: Mix, args: &BenchArgs) -> ExitCode {
    let Mix::Dashboards = mix;
    let Some(url) = args.urls.first() else {
        eprintln!("wsgate-bench: error: --mix needs a --url");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("wsgate-bench: error: starting the tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let duration = args.duration;
    eprintln!(
        "wsgate-bench: --mix dashboards: {} connections against {url}, until {}",
        args.connections,
        if duration.is_zero() {
            "SIGINT or SIGTERM".to_owned()
        } else {
            format!("{} or a signal", humantime::format_duration(duration))
        }
    );
    let stop = async move {
        let timer = async {
            if duration.is_zero() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(duration).await;
        };
        tokio::select! {
            () = timer => {}
            () = signalled() => {}
        }
    };
    let counts = match runtime.block_on(run(url, args.connections, stop)) {
        Ok(counts) => counts,
        Err(e) => {
            eprintln!("wsgate-bench: error: {e:#}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        println!("{}", serde_json::to_string(&counts).unwrap_or_default());
    } else {
        let line: Vec<String> = counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("mix done: {}", line.join(" "));
    }
    if counts.get("recv_ack").copied().unwrap_or(0) == 0 {
        eprintln!("wsgate-bench: error: no publish was acked");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// Resolves on SIGINT or SIGTERM (SIGINT alone where there is no SIGTERM).
async fn signalled() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// What every task of the mix shares.
struct Ctx {
    target: Target,
    addr: SocketAddr,
    prefix: String,
    tally: Tally,
    stop: watch::Receiver<bool>,
}

impl Ctx {
    fn room(&self, i: usize) -> String {
        format!("{}-{}", self.prefix, i % ROOMS)
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps `d`, or less when the mix is stopped; true when it is.
    async fn pause(&self, d: Duration) -> bool {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => true,
            () = tokio::time::sleep(d) => self.stopped(),
        }
    }
}

/// Runs the mix against one gateway with `connections` long-lived clients
/// until `stop` resolves, then closes everything cleanly (within 5 s) and
/// returns what was sent and received, by key.
pub async fn run(
    url: &str,
    connections: usize,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
    let target = crate::args::target(url)?;
    let addr = crate::ramp::resolve(std::slice::from_ref(&target)).await?[0];
    let (stopper, stop_rx) = watch::channel(false);
    let ctx = Arc::new(Ctx {
        target,
        addr,
        prefix: format!("mix-{:08x}", rand::random::<u32>()),
        tally: Tally::default(),
        stop: stop_rx,
    });
    let mut tasks = JoinSet::new();
    for n in 0..connections {
        tasks.spawn(keep_long_lived(ctx.clone(), n));
    }
    tasks.spawn(short_lived(ctx.clone()));
    tasks.spawn(http_publisher(ctx.clone()));
    stop.await;
    let _ = stopper.send(true);
    if tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        ctx.tally.add("stop_timeout");
        tasks.abort_all();
    }
    Ok(ctx.tally.counts())
}

/// One long-lived client, reconnecting after an error until the mix stops.
async fn keep_long_lived(ctx: Arc<Ctx>, n: usize) {
    let mut rng = StdRng::seed_from_u64(1000 + n as u64);
    while !ctx.stopped() {
        if let Err(why) = long_lived(&ctx, n, &mut rng).await {
            ctx.tally.add(format!("conn_error: {why}"));
            ctx.pause(Duration::from_millis(500)).await;
        }
    }
}

async fn long_lived(ctx: &Ctx, n: usize, rng: &mut StdRng) -> Result<(), String> {
    let first = rng.random_range(0..ROOMS);
    let mut rooms = vec![ctx.room(first)];
    if rng.random_bool(0.5) {
        rooms.push(ctx.room(first + 1));
    }
    let ws = client::connect(ctx.addr, &ctx.target.url, &rooms[0]).await?;
    let (mut sink, mut stream) = ws.split();
    for room in &rooms[1..] {
        send(&mut sink, Message::text(frames::subscribe(room))).await?;
    }
    let reader = async {
        while let Some(Ok(message)) = stream.next().await {
            if let Message::Text(text) = &message {
                ctx.tally.add(mix::received_key(mix::kind(text)));
            }
        }
    };
    let writer = async {
        let mut seq = 0;
        while !ctx.stopped() {
            seq += 1;
            match mix::step(rng.random(), rng.random_range(0..usize::MAX)) {
                Step::Publish => {
                    let room = if rng.random_bool(0.8) {
                        rooms[rng.random_range(0..rooms.len())].clone()
                    } else {
                        ctx.room(rng.random_range(0..ROOMS))
                    };
                    let frame = frames::publish(&room, n, seq, unix_nanos(), "hello");
                    send(&mut sink, Message::text(frame)).await?;
                    ctx.tally.add("publish");
                }
                Step::Ping => {
                    send(&mut sink, Message::text(mix::ping(&format!("p{n}-{seq}")))).await?;
                    ctx.tally.add("ping");
                }
                Step::Resubscribe => {
                    send(&mut sink, Message::text(frames::unsubscribe(&rooms[0]))).await?;
                    send(&mut sink, Message::text(frames::subscribe(&rooms[0]))).await?;
                    ctx.tally.add("resubscribe");
                }
                Step::Invalid(kind) => {
                    send(&mut sink, kind.frame(&ctx.prefix)).await?;
                    ctx.tally.add(kind.key());
                }
            }
            let pause = Duration::from_millis(rng.random_range(200..600));
            ctx.pause(pause).await;
        }
        // A normal close (1000); the reader ends when the server answers it.
        let _ = sink.close().await;
        Ok::<(), String>(())
    };
    let (written, ()) = tokio::join!(writer, reader);
    written
}

async fn send(sink: &mut client::Sink, message: Message) -> Result<(), String> {
    sink.send(message)
        .await
        .map_err(|_| "write failed".to_owned())
}

/// A connection every ~0.3 s that subscribes, then publishes and closes
/// normally, or (every `OVERSIZE_EVERY`th) sends an oversize frame and waits
/// for the server's close.
async fn short_lived(ctx: Arc<Ctx>) {
    let mut rng = StdRng::seed_from_u64(7);
    let mut i: u64 = 0;
    while !ctx.stopped() {
        i += 1;
        let room = ctx.room(rng.random_range(0..ROOMS));
        match client::connect(ctx.addr, &ctx.target.url, &room).await {
            Ok(mut ws) if i.is_multiple_of(OVERSIZE_EVERY) => {
                let _ = ws.send(Message::text("x".repeat(OVERSIZE))).await;
                let code = tokio::time::timeout(Duration::from_secs(2), closed_with(&mut ws)).await;
                ctx.tally.add(match code {
                    Ok(Some(1009)) => "short_closed_1009".to_owned(),
                    Ok(Some(other)) => format!("short_closed_{other}"),
                    Ok(None) | Err(_) => "short_not_closed".to_owned(),
                });
            }
            Ok(mut ws) => {
                let frame = frames::publish(&room, usize::MAX, i, unix_nanos(), "short");
                let _ = ws.send(Message::text(frame)).await;
                ctx.pause(Duration::from_millis(rng.random_range(50..400)))
                    .await;
                let _ = ws
                    .close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: "".into(),
                    }))
                    .await;
                ctx.tally.add("short_closed_1000");
            }
            Err(why) => ctx.tally.add(format!("short_error: {why}")),
        }
        ctx.pause(Duration::from_millis(300)).await;
    }
}

/// The close code the server ends the connection with, if it sends one.
async fn closed_with(ws: &mut client::Ws) -> Option<u16> {
    while let Some(Ok(message)) = ws.next().await {
        if let Message::Close(frame) = message {
            return Some(frame.map_or(1005, |f| u16::from(f.code)));
        }
    }
    None
}

/// `POST /api/publish` every 0.25 s; see `mix::http_body` for which fail.
async fn http_publisher(ctx: Arc<Ctx>) {
    let mut rng = StdRng::seed_from_u64(11);
    let mut i: u64 = 0;
    while !ctx.stopped() {
        i += 1;
        let room = ctx.room(rng.random_range(0..ROOMS));
        let (content_type, body) = mix::http_body(i, &room);
        let host = format!("{}:{}", ctx.target.host, ctx.target.port);
        match crate::http_post::post(ctx.addr, &host, "/api/publish", content_type, &body).await {
            Ok(status) => ctx.tally.add(format!("http_{status}")),
            Err(e) => ctx.tally.add(format!("http_error: {}", e.kind())),
        }
        ctx.pause(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn the_mix_stops_when_asked_even_with_no_gateway() {
        // Nothing listens on a port just released: every client fails and
        // retries, and the mix still stops promptly and reports the errors.
        let addr = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let counts = tokio::time::timeout(
            Duration::from_secs(10),
            run(
                &format!("ws://{addr}/ws"),
                2,
                tokio::time::sleep(Duration::from_millis(300)),
            ),
        )
        .await
        .expect("the mix stops within its 5 s grace")
        .unwrap();
        assert!(
            counts.keys().any(|k| k.starts_with("conn_error")),
            "{counts:?}"
        );
        assert!(!counts.contains_key("stop_timeout"), "{counts:?}");
    }
}
