//! The client side of the wire protocol, as the bench needs it: publish frames
//! written straight into a buffer, and server frames parsed into small borrowed
//! structs (never a `serde_json::Value`).

use std::fmt::Write as _;

use serde::Deserialize;

/// A `publish` frame for message `seq` of publisher `publisher`, with its send
/// time `t` (unix nanoseconds) and `padding` in `data`.
pub fn publish(room: &str, publisher: usize, seq: u64, t: u64, padding: &str) -> String {
    let mut frame = String::with_capacity(112 + room.len() + padding.len());
    // Room names and the rest are plain ASCII that needs no escaping.
    let _ = write!(
        frame,
        r#"{{"type":"publish","room":"{room}","id":"{publisher}-{seq}","data":{{"p":{publisher},"s":{seq},"t":{t},"x":"{padding}"}}}}"#
    );
    frame
}

pub fn subscribe(room: &str) -> String {
    format!(r#"{{"type":"subscribe","room":"{room}"}}"#)
}

/// A `subscribe` that resumes after `offset` of `epoch` (the server's own
/// strings: no escaping needed, but escaped anyway).
pub fn subscribe_since(room: &str, offset: u64, epoch: &str) -> String {
    let epoch = serde_json::to_string(epoch).unwrap_or_else(|_| "\"\"".to_owned());
    format!(
        r#"{{"type":"subscribe","room":"{room}","since":{{"offset":{offset},"epoch":{epoch}}}}}"#
    )
}

pub fn unsubscribe(room: &str) -> String {
    format!(r#"{{"type":"unsubscribe","room":"{room}"}}"#)
}

/// The `type` of a server frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Message,
    Ack,
    Error,
    Subscribed,
    Unsubscribed,
    Pong,
    #[serde(other)]
    Other,
}

/// A server frame: only the fields the bench reads; the rest are skipped.
#[derive(Debug, Deserialize)]
pub struct Incoming<'a> {
    #[serde(rename = "type")]
    pub kind: Kind,
    #[serde(borrow, default)]
    pub id: Option<&'a str>,
    #[serde(borrow, default)]
    pub room: Option<&'a str>,
    #[serde(borrow, default)]
    pub code: Option<&'a str>,
    #[serde(default)]
    pub data: Option<Stamp>,
    /// A message's place in its room's history; a room's latest in `subscribed`.
    #[serde(default)]
    pub offset: Option<u64>,
    #[serde(borrow, default)]
    pub epoch: Option<&'a str>,
    /// The answer to a resuming `subscribe`.
    #[serde(default)]
    pub recovered: Option<bool>,
}

/// The bench's own `data`: publisher, sequence number, send time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Stamp {
    pub p: usize,
    pub s: u64,
    pub t: u64,
}

/// Parses a server frame; `None` when it is not one the bench understands
/// (for example a message someone else published with other `data`).
pub fn parse(text: &str) -> Option<Incoming<'_>> {
    serde_json::from_str(text).ok()
}

/// Splits a publish id `<publisher>-<seq>` back into its numbers.
pub fn publish_id(id: &str) -> Option<(usize, u64)> {
    let (p, s) = id.split_once('-')?;
    Some((p.parse().ok()?, s.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_frames_are_protocol_json() {
        let frame = publish("bench-1-0", 3, 17, 1_700_000_000_000_000_000, "xxxx");
        let v: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type": "publish", "room": "bench-1-0", "id": "3-17",
                "data": {"p": 3, "s": 17, "t": 1_700_000_000_000_000_000_u64, "x": "xxxx"}})
        );
        assert_eq!(publish_id("3-17"), Some((3, 17)));
        assert_eq!(publish_id("3_17"), None);
        assert_eq!(publish_id("a-1"), None);
    }

    #[test]
    fn server_frames_parse_borrowed() {
        let m = parse(
            r#"{"type":"message","room":"r","id":"3e98eaba941c-17","data":{"p":1,"s":2,"t":3,"x":"pad"},"traceparent":"00-0af7651916cd43dd8448eb211c80319c-e59154dad3c1a995-01"}"#,
        )
        .unwrap();
        assert_eq!(m.kind, Kind::Message);
        assert_eq!(m.data, Some(Stamp { p: 1, s: 2, t: 3 }));

        let a = parse(r#"{"type":"ack","id":"0-5","room":"r"}"#).unwrap();
        assert_eq!((a.kind, a.id, a.room), (Kind::Ack, Some("0-5"), Some("r")));

        let e = parse(
            r#"{"type":"error","code":"broker_unavailable","message":"NATS \"down\"","id":"0-6"}"#,
        )
        .unwrap();
        assert_eq!(
            (e.kind, e.code, e.id),
            (Kind::Error, Some("broker_unavailable"), Some("0-6"))
        );

        let s =
            parse(r#"{"type":"subscribed","room":"r","offset":7,"epoch":"e-1","recovered":true}"#)
                .unwrap();
        assert_eq!(
            (s.kind, s.offset, s.epoch, s.recovered),
            (Kind::Subscribed, Some(7), Some("e-1"), Some(true))
        );
        let resume: serde_json::Value =
            serde_json::from_str(&subscribe_since("r", 7, "e-1")).unwrap();
        assert_eq!(
            resume,
            serde_json::json!({"type": "subscribe", "room": "r", "since": {"offset": 7, "epoch": "e-1"}})
        );

        assert_eq!(parse(r#"{"type":"welcome"}"#).unwrap().kind, Kind::Other);
        // Someone else's message in our room: not ours to count.
        assert!(parse(r#"{"type":"message","room":"r","id":"x","data":{"text":"hi"}}"#).is_none());
        assert!(parse("not json").is_none());
    }
}
