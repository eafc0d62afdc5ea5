//! `--mix dashboards`: what the traffic mix sends, decided without any I/O so
//! it can be tested. The mix is not a measurement: it makes every series the
//! dashboards draw and the alert rules read have data, errors included, at a
//! steady and modest rate (a few hundred frames a second for 30 connections).
//! `mix_run` sends it.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message;

use crate::frames::Kind;

/// The rooms the mix spreads over: `<prefix>-0` .. `<prefix>-5`, enough for
/// several subscriptions per connection and fan-out to more than one member.
pub const ROOMS: usize = 6;

/// A frame over the gateway's default `--max-message-bytes` (64 KiB), which
/// closes the connection with 1009 (`too_large`). With a larger limit
/// configured, the short-lived connections see a normal close instead.
pub const OVERSIZE: usize = 128 * 1024;

/// Every this many short-lived connections, one sends an oversize frame.
pub const OVERSIZE_EVERY: u64 = 10;

/// What a long-lived connection does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A publish with an id (acked), mostly to a room it is in.
    Publish,
    /// A protocol-level `ping` (answered with `pong`).
    Ping,
    /// Unsubscribe from its first room and subscribe again.
    Resubscribe,
    /// One of the invalid frames.
    Invalid(Invalid),
}

/// The frames the gateway must refuse with an error frame (and count in
/// `websocket_errors_total` and `type="invalid"`), one of each kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    NotJson,
    UnknownType,
    BadRoom,
    NotSubscribed,
    Binary,
}

impl Invalid {
    pub const ALL: [Invalid; 5] = [
        Invalid::NotJson,
        Invalid::UnknownType,
        Invalid::BadRoom,
        Invalid::NotSubscribed,
        Invalid::Binary,
    ];

    /// The frame itself; `prefix` makes the never-joined room this run's own.
    pub fn frame(self, prefix: &str) -> Message {
        match self {
            Invalid::NotJson => Message::text("this is not json"),
            Invalid::UnknownType => Message::text(r#"{"type":"shout","room":"lobby"}"#),
            Invalid::BadRoom => Message::text(r#"{"type":"subscribe","room":"bad room!"}"#),
            Invalid::NotSubscribed => Message::text(crate::frames::unsubscribe(&format!(
                "{prefix}-never-joined"
            ))),
            Invalid::Binary => Message::binary(&b"\x00\x01binary"[..]),
        }
    }

    /// The tally key of a sent invalid frame.
    pub fn key(self) -> &'static str {
        match self {
            Invalid::NotJson => "invalid_not_json",
            Invalid::UnknownType => "invalid_unknown_type",
            Invalid::BadRoom => "invalid_bad_room",
            Invalid::NotSubscribed => "invalid_not_subscribed",
            Invalid::Binary => "invalid_binary",
        }
    }
}

/// The step for a uniform `roll` in [0, 1) and a uniform `pick`: 70 %
/// publishes, 15 % pings, 5 % resubscriptions, 10 % invalid frames (each kind
/// equally often), the proportions of the Python load generator this mix
/// replaced.
pub fn step(roll: f64, pick: usize) -> Step {
    if roll < 0.70 {
        Step::Publish
    } else if roll < 0.85 {
        Step::Ping
    } else if roll < 0.90 {
        Step::Resubscribe
    } else {
        Step::Invalid(Invalid::ALL[pick % Invalid::ALL.len()])
    }
}

/// A `ping` frame with an id.
pub fn ping(id: &str) -> String {
    format!(r#"{{"type":"ping","id":"{id}"}}"#)
}

/// The `i`th `POST /api/publish` (from 1): content type and body. Every 8th is
/// not JSON (400), every 13th is sent as text/plain (415), the rest are valid
/// (202), so the HTTP series have more than one status.
pub fn http_body(i: u64, room: &str) -> (&'static str, String) {
    if i.is_multiple_of(8) {
        ("application/json", "{not json".to_owned())
    } else if i.is_multiple_of(13) {
        ("text/plain", format!(r#"{{"room":"{room}","data":1}}"#))
    } else {
        (
            "application/json",
            format!(r#"{{"room":"{room}","data":{{"http":{i}}}}}"#),
        )
    }
}

/// The type of any server frame, whatever its `data` (the bench's own parser
/// reads only its own stamped messages).
pub fn kind(text: &str) -> Option<Kind> {
    #[derive(Deserialize)]
    struct Typed {
        #[serde(rename = "type")]
        kind: Kind,
    }
    serde_json::from_str::<Typed>(text).ok().map(|t| t.kind)
}

/// The tally key of a received frame.
pub fn received_key(kind: Option<Kind>) -> &'static str {
    match kind {
        Some(Kind::Message) => "recv_message",
        Some(Kind::Ack) => "recv_ack",
        Some(Kind::Error) => "recv_error",
        Some(Kind::Subscribed) => "recv_subscribed",
        Some(Kind::Unsubscribed) => "recv_unsubscribed",
        Some(Kind::Pong) => "recv_pong",
        Some(Kind::Other) | None => "recv_other",
    }
}

/// What the mix did, by key (`publish`, `recv_ack`, `http_202`, ...). A lock
/// per count is nothing at this rate, and no lock is held across an await.
#[derive(Debug, Default)]
pub struct Tally(Mutex<BTreeMap<String, u64>>);

impl Tally {
    pub fn add(&self, key: impl Into<String>) {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry(key.into()).or_default() += 1;
    }

    /// The counts so far.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsgate_protocol::{decode, decode_http_publish};

    #[test]
    fn steps_keep_load_py_s_proportions_and_send_every_invalid_kind() {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        let mut invalid = Vec::new();
        for i in 0..1000 {
            let s = step(f64::from(i) / 1000.0, i as usize);
            let key = match s {
                Step::Publish => "publish",
                Step::Ping => "ping",
                Step::Resubscribe => "resubscribe",
                Step::Invalid(kind) => {
                    invalid.push(kind);
                    "invalid"
                }
            };
            *counts.entry(key).or_default() += 1;
        }
        assert_eq!(counts["publish"], 700);
        assert_eq!(counts["ping"], 150);
        assert_eq!(counts["resubscribe"], 50);
        assert_eq!(counts["invalid"], 100);
        for kind in Invalid::ALL {
            assert_eq!(
                invalid.iter().filter(|&&k| k == kind).count(),
                20,
                "{kind:?}"
            );
        }
    }

    #[test]
    fn invalid_frames_are_refused_by_the_protocol_and_valid_ones_decode() {
        for kind in [Invalid::NotJson, Invalid::UnknownType, Invalid::BadRoom] {
            let Message::Text(text) = kind.frame("mix-1") else {
                panic!("{kind:?} is a text frame");
            };
            assert!(decode(&text).is_err(), "{kind:?}: {text} decoded");
        }
        // Well-formed: the gateway refuses it because the room was never joined.
        let Message::Text(text) = Invalid::NotSubscribed.frame("mix-1") else {
            panic!("a text frame");
        };
        assert!(decode(&text).is_ok(), "{text}");
        assert!(Invalid::Binary.frame("mix-1").is_binary());
        assert!(decode(&ping("p1-2")).is_ok());
    }

    #[test]
    fn http_bodies_are_valid_except_every_8th_and_every_13th() {
        for i in 1..=104 {
            let (content_type, body) = http_body(i, "mix-1-0");
            let valid = decode_http_publish(body.as_bytes()).is_ok();
            match (i % 8 == 0, i % 13 == 0) {
                (true, _) => assert!(!valid, "{i}: {body}"),
                (false, true) => assert_eq!((content_type, valid), ("text/plain", true)),
                (false, false) => assert_eq!((content_type, valid), ("application/json", true)),
            }
        }
    }

    #[test]
    fn mix_and_duration_parse_and_duration_needs_mix() {
        use crate::args::{BenchArgs, Mix};
        use clap::Parser as _;
        let args = BenchArgs::try_parse_from([
            "wsgate-bench",
            "--mix",
            "dashboards",
            "--duration",
            "90s",
            "-c",
            "30",
        ])
        .unwrap();
        assert_eq!(args.mix, Some(Mix::Dashboards));
        assert_eq!(args.duration, std::time::Duration::from_secs(90));
        assert!(BenchArgs::try_parse_from(["wsgate-bench", "--duration", "5s"]).is_err());
        assert!(BenchArgs::try_parse_from(["wsgate-bench", "--mix", "chaos"]).is_err());
    }

    #[test]
    fn any_server_frame_has_a_kind_and_a_key() {
        assert_eq!(
            received_key(kind(
                r#"{"type":"message","room":"r","data":{"text":"hi"}}"#
            )),
            "recv_message"
        );
        assert_eq!(
            received_key(kind(r#"{"type":"error","code":"invalid_message"}"#)),
            "recv_error"
        );
        assert_eq!(received_key(kind("nope")), "recv_other");
        let tally = Tally::default();
        tally.add("a");
        tally.add("a");
        assert_eq!(tally.counts()["a"], 2);
    }
}
