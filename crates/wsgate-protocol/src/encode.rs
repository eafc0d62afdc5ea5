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
    Subscribed {
        room: &'a str,
    },
    Unsubscribed {
        room: &'a str,
    },
    Ack {
        id: &'a str,
        room: &'a str,
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
pub fn message_frame(
    room: &RoomName,
    id: &str,
    data: &RawValue,
    traceparent: Option<&str>,
) -> Utf8Bytes {
    let data = data.get();
    let mut out = Vec::with_capacity(64 + room.as_str().len() + id.len() + data.len());
    out.extend_from_slice(br#"{"type":"message","room":"#);
    write_json_str(&mut out, room.as_str());
    out.extend_from_slice(br#","id":"#);
    write_json_str(&mut out, id);
    out.extend_from_slice(br#","data":"#);
    out.extend_from_slice(data.as_bytes());
    if let Some(traceparent) = traceparent {
        out.extend_from_slice(br#","traceparent":"#);
        write_json_str(&mut out, traceparent);
    }
    out.push(b'}');
    // Every piece above is UTF-8, so this conversion only re-checks what is known.
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
