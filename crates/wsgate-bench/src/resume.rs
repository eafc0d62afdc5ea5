//! `--drop-every`: a receiver that loses its connection at random and resumes.
//!
//! Each receiver drops its TCP connection without a close frame (as a phone
//! switching networks does) after an exponentially distributed time of mean
//! `--drop-every`, stays away `--drop-for`, reconnects to the same gateway and subscribes again with
//! `since`: the offset of the last message it got (or its room's offset in
//! `subscribed`) and the room's epoch. Its drops start once it has a message
//! of its own to resume from: with NATS, a resume from offset 0 (nothing
//! seen yet) cannot be told apart from one whose first messages were trimmed,
//! and is not recovered (docs/protocol.md). Its sequence trackers carry over, so
//! the report's lost and duplicated count what resuming missed or repeated.
//! Without history on the gateway there is no offset: it subscribes plainly,
//! and the messages published while it was away are lost.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::client::{self, Reader, Subscribed, Ws};
use super::frames::{self, Kind};
use super::stats::ConnStats;

/// Where a receiver stands in its room's history.
#[derive(Debug, Default)]
struct Position {
    offset: Option<u64>,
    epoch: Option<String>,
}

impl Position {
    /// After `subscribed`: a recovered resume goes on from where we were
    /// (the replay follows); otherwise from the room's latest offset.
    fn update(&mut self, subscribed: &Subscribed) {
        if subscribed.recovered != Some(true) {
            self.offset = subscribed.offset;
            self.epoch.clone_from(&subscribed.epoch);
        }
    }
}

enum Event {
    Stop,
    Drop,
    Frame(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
}

/// Reads like [`client::read`], dropping and resuming the connection every
/// `mean` on average, until `stop` fires; then reports and closes.
pub async fn read_resuming(
    mut ws: Ws,
    first: Subscribed,
    mut r: Reader,
    addr: SocketAddr,
    url: String,
    mean: Duration,
) {
    let plan = r.plan.clone();
    let room = plan.room_of(r.conn);
    let room_name = plan.room_name(room);
    let mut stats: ConnStats = client::new_stats(&plan, r.conn);
    let mut delivered = 0;
    let mut position = Position::default();
    position.update(&first);
    // Armed by the first message.
    let mut next_drop: Option<Instant> = None;
    let stopped = loop {
        let event = tokio::select! {
            biased;
            () = r.stop.fired() => Event::Stop,
            () = sleep_until(next_drop.unwrap_or_else(Instant::now)), if next_drop.is_some() => Event::Drop,
            next = ws.next() => Event::Frame(next),
        };
        let next = match event {
            Event::Stop => break true,
            Event::Frame(next) => next,
            Event::Drop => {
                // Gone without a close frame, as a network drop looks.
                drop(ws);
                stats.resumes.drops += 1;
                tokio::time::sleep(plan.drop_for).await;
                let subscribe = match (&position.epoch, position.offset) {
                    (Some(epoch), Some(offset)) => {
                        frames::subscribe_since(&room_name, offset, epoch)
                    }
                    _ => frames::subscribe(&room_name),
                };
                match client::connect_with(addr, &url, &room_name, &subscribe).await {
                    Ok((again, subscribed)) => {
                        match subscribed.recovered {
                            Some(true) => stats.resumes.recovered += 1,
                            _ => stats.resumes.not_recovered += 1,
                        }
                        position.update(&subscribed);
                        ws = again;
                    }
                    Err(_) => {
                        stats.resumes.failures += 1;
                        let _ = r.stats.send(stats);
                        return;
                    }
                }
                next_drop = Some(Instant::now() + exponential(mean));
                continue;
            }
        };
        match next {
            Some(Ok(Message::Text(text))) => {
                let Some(frame) = frames::parse(&text) else {
                    stats.unexpected += 1;
                    continue;
                };
                match frame.kind {
                    Kind::Message => {
                        if frame.offset.is_some() {
                            position.offset = frame.offset;
                        }
                        if next_drop.is_none() {
                            next_drop = Some(Instant::now() + exponential(mean));
                        }
                        client::delivery(
                            &plan,
                            room,
                            &frame,
                            &mut stats,
                            &r.shared,
                            &mut delivered,
                        );
                    }
                    // The one after a replay whose rest was trimmed.
                    Kind::Subscribed => {
                        stats.resumes.not_recovered += u64::from(frame.recovered == Some(false));
                    }
                    Kind::Error => stats.error_frame(frame.code.unwrap_or("unknown")),
                    _ => stats.unexpected += 1,
                }
            }
            Some(Ok(Message::Close(frame))) => {
                stats.closed = Some(frame.map_or(1005, |f| u16::from(f.code)));
                break false;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                stats.closed = Some(1006);
                break false;
            }
        }
    };
    let _ = r.stats.send(stats);
    if stopped {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "bench done".into(),
        };
        let _ = ws.send(Message::Close(Some(frame))).await;
        while let Some(Ok(message)) = ws.next().await {
            if message.is_close() {
                break;
            }
        }
    }
}

/// An exponentially distributed wait of mean `mean`.
fn exponential(mean: Duration) -> Duration {
    let u: f64 = rand::random::<f64>();
    // 1 - u is in (0, 1], so the logarithm is finite.
    mean.mul_f64(-(1.0 - u).ln())
}
