//! Encoding server frames.

use serde::Serialize;
use serde_json::value::RawValue;
use tungstenite::Utf8Bytes;

use super::{ErrorCode, ServerFrameType};
use crate::room::RoomName;

/// A server frame other than `message` (which [`message_frame`] builds).
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Reply<'a> {
    /// `offset` and `epoch` are the room's position when it has history;
    /// `recovered` answers a subscribe that asked to resume (`since`).
    Subscribed {
        room: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
    },
    Unsubscribed {
        room: &'a str,
    },
    /// `offset` is the message's position when the room has history.
    Ack {
        id: &'a str,
        room: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
    },
    /// A `refresh` was accepted; `exp` is the new token's expiry (Unix seconds).
    Refreshed {
        exp: u64,
    },
    Error {
        code: ErrorCode,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
    },
}

impl Reply<'_> {
    pub fn frame_type(&self) -> ServerFrameType {
        match self {
            Self::Subscribed { .. } => ServerFrameType::Subscribed,
            Self::Unsubscribed { .. } => ServerFrameType::Unsubscribed,
            Self::Ack { .. } => ServerFrameType::Ack,
            Self::Pong { .. } => ServerFrameType::Pong,
            Self::Refreshed { .. } => ServerFrameType::Refreshed,
            Self::Error { .. } => ServerFrameType::Error,
        }
    }

    /// The frame's text, ready to write.
    pub fn encode(&self) -> Utf8Bytes {
        // Serialising a tree of strings into a String cannot fail.
        serde_json::to_string(self)
            .unwrap_or_else(|_| String::from(r#"{"type":"error","code":"internal"}"#))
            .into()
    }
}

/// Builds the `message` frame delivered to every subscriber of a room, once per node.
///
/// `data` is copied in verbatim; being a `RawValue` it is already known to be JSON.
/// `offset` is the message's position in the room's history, when it has one.
pub fn message_frame(
    room: &RoomName,
    id: &str,
    data: &RawValue,
    traceparent: Option<&str>,
    offset: Option<u64>,
) -> Utf8Bytes {
    let size = 96 + room.as_str().len() + id.len() + data.get().len();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(br#"{"type":"message","room":"#);
    write_json_str(&mut out, room.as_str());
    write_entry(
        &mut out,
        &HistoryEntry {
            id,
            offset,
            data,
            traceparent,
        },
    );
    finish(out)
}

/// One stored message in a `history` frame.
#[derive(Debug, Clone, Copy)]
pub struct HistoryEntry<'a> {
    pub id: &'a str,
    pub offset: Option<u64>,
    pub data: &'a RawValue,
    pub traceparent: Option<&'a str>,
}

/// Builds the answer to a `history` request: the room's position (`None` when
/// the node keeps no history) and its stored messages, oldest first, each as a
/// `message` frame's fields.
pub fn history_frame(
    room: &RoomName,
    position: Option<(u64, &str)>,
    messages: &[HistoryEntry<'_>],
) -> Utf8Bytes {
    let size: usize = messages
        .iter()
        .map(|m| 96 + m.id.len() + m.data.get().len())
        .sum();
    let mut out = Vec::with_capacity(96 + room.as_str().len() + size);
    out.extend_from_slice(br#"{"type":"history","room":"#);
    write_json_str(&mut out, room.as_str());
    if let Some((offset, epoch)) = position {
        out.extend_from_slice(br#","offset":"#);
        out.extend_from_slice(itoa::Buffer::new().format(offset).as_bytes());
        out.extend_from_slice(br#","epoch":"#);
        write_json_str(&mut out, epoch);
    }
    out.extend_from_slice(br#","messages":["#);
    for (i, message) in messages.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        // `write_entry` starts every field with a comma; the first one here
        // must not have it.
        let start = out.len();
        write_entry(&mut out, message);
        out.remove(start);
    }
    out.extend_from_slice(b"]}");
    finish(out)
}

/// Writes a message's fields, each preceded by a comma, and closes the object.
fn write_entry(out: &mut Vec<u8>, entry: &HistoryEntry<'_>) {
    out.extend_from_slice(br#","id":"#);
    write_json_str(out, entry.id);
    if let Some(offset) = entry.offset {
        out.extend_from_slice(br#","offset":"#);
        out.extend_from_slice(itoa::Buffer::new().format(offset).as_bytes());
    }
    out.extend_from_slice(br#","data":"#);
    out.extend_from_slice(entry.data.get().as_bytes());
    if let Some(traceparent) = entry.traceparent {
        out.extend_from_slice(br#","traceparent":"#);
        write_json_str(out, traceparent);
    }
    out.push(b'}');
}

fn finish(out: Vec<u8>) -> Utf8Bytes {
    // Every piece written is UTF-8, so this conversion only re-checks what is known.
    Utf8Bytes::try_from(out)
        .unwrap_or_else(|_| Utf8Bytes::from_static(r#"{"type":"error","code":"internal"}"#))
}

/// Writes `s` as a JSON string. Room names, our ids and trace contexts never
/// need escaping, and this runs for every delivered message, so the common case
/// is a plain copy; anything else (an id from another node, say) goes through
/// serde_json's escaper.
fn write_json_str(out: &mut Vec<u8>, s: &str) {
    let plain = s
        .bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f);
    if plain {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}
