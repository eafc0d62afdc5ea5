//! The JSON wire format, version 1 (see `docs/protocol.md`).
//!
//! This is the only module that knows JSON. Decoding borrows from the frame's text
//! wherever it can: `data` stays a `&RawValue` slice of the client's frame and is
//! never parsed into a tree. Encoding writes each server frame exactly once; a
//! `message` frame is built once per node and its bytes are shared by every
//! recipient.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::room::{InvalidRoom, RoomName, Tenant};

/// The `type` of a frame a client sent; `Invalid` when it could not be decoded.
/// The string forms are the `type` label of `websocket_messages_received_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFrameType {
    Subscribe,
    Unsubscribe,
    Publish,
    Ping,
    Invalid,
}

impl ClientFrameType {
    pub const ALL: [Self; 5] = [
        Self::Subscribe,
        Self::Unsubscribe,
        Self::Publish,
        Self::Ping,
        Self::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Subscribe => "subscribe",
            Self::Unsubscribe => "unsubscribe",
            Self::Publish => "publish",
            Self::Ping => "ping",
            Self::Invalid => "invalid",
        }
    }
}

/// The `type` of a frame the server sends; the `type` label of
/// `websocket_messages_sent_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerFrameType {
    Message,
    Ack,
    Subscribed,
    Unsubscribed,
    Pong,
    Error,
}

impl ServerFrameType {
    pub const ALL: [Self; 6] = [
        Self::Message,
        Self::Ack,
        Self::Subscribed,
        Self::Unsubscribed,
        Self::Pong,
        Self::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::Ack => "ack",
            Self::Subscribed => "subscribed",
            Self::Unsubscribed => "unsubscribed",
            Self::Pong => "pong",
            Self::Error => "error",
        }
    }

    /// A dense index, for per-type counting in arrays of `ALL.len()`.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The stable `code` of an error frame. Clients branch on these; never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not an object, a missing field or a field of the wrong type.
    InvalidMessage,
    /// A `type` this server does not know.
    UnknownType,
    /// A room name outside 1–128 bytes of `[A-Za-z0-9_.:-]`.
    InvalidRoom,
    /// `unsubscribe` from a room the connection is not subscribed to.
    NotSubscribed,
    /// A binary frame; the protocol is JSON text only.
    UnsupportedBinary,
    /// The message broker (NATS) is unreachable; retry later.
    BrokerUnavailable,
    /// The token does not allow this room.
    Forbidden,
    /// Over `--max-msgs-per-sec`; the frame was not handled.
    RateLimited,
    /// Over `--max-rooms-per-connection`.
    TooManyRooms,
    /// The server failed; the request may be retried.
    Internal,
}

impl ErrorCode {
    pub const ALL: [Self; 10] = [
        Self::InvalidMessage,
        Self::UnknownType,
        Self::InvalidRoom,
        Self::NotSubscribed,
        Self::UnsupportedBinary,
        Self::BrokerUnavailable,
        Self::Forbidden,
        Self::RateLimited,
        Self::TooManyRooms,
        Self::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidMessage => "invalid_message",
            Self::UnknownType => "unknown_type",
            Self::InvalidRoom => "invalid_room",
            Self::NotSubscribed => "not_subscribed",
            Self::UnsupportedBinary => "unsupported_binary",
            Self::BrokerUnavailable => "broker_unavailable",
            Self::Forbidden => "forbidden",
            Self::RateLimited => "rate_limited",
            Self::TooManyRooms => "too_many_rooms",
            Self::Internal => "internal",
        }
    }
}

/// A decoded client frame, borrowing from the frame's text.
#[derive(Debug)]
pub enum ClientFrame<'a> {
    Subscribe { room: RoomName },
    Unsubscribe { room: RoomName },
    Publish(Publish<'a>),
    Ping { id: Option<Cow<'a, str>> },
}

impl ClientFrame<'_> {
    pub fn frame_type(&self) -> ClientFrameType {
        match self {
            Self::Subscribe { .. } => ClientFrameType::Subscribe,
            Self::Unsubscribe { .. } => ClientFrameType::Unsubscribe,
            Self::Publish(_) => ClientFrameType::Publish,
            Self::Ping { .. } => ClientFrameType::Ping,
        }
    }
}

/// A `publish` frame.
#[derive(Debug)]
pub struct Publish<'a> {
    pub room: RoomName,
    /// The payload exactly as the client wrote it; relayed byte for byte.
    pub data: &'a RawValue,
    pub id: Option<Cow<'a, str>>,
    /// The client's W3C trace context, if it sent strings; validity is the
    /// propagator's business, and an invalid one is ignored, never an error.
    pub traceparent: Option<Cow<'a, str>>,
    pub tracestate: Option<Cow<'a, str>>,
}

/// Why a frame was refused: the error frame to send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub code: ErrorCode,
    pub message: String,
    /// The frame's `type` when it was recognised, for the metrics label.
    pub frame_type: ClientFrameType,
    /// The client's `id`, echoed so it can match the error to its request.
    pub id: Option<String>,
}

/// The shape of every client frame; fields a frame type does not use are ignored.
#[derive(Deserialize)]
struct RawFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    room: Option<Cow<'a, str>>,
    /// `Some` whenever the field is present, `null` included.
    #[serde(default, borrow, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    /// Any JSON value: a trace context that is not a string is ignored, not refused.
    #[serde(default, borrow, deserialize_with = "present")]
    traceparent: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    tracestate: Option<&'a RawValue>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// A JSON string's value, or `None` for any other JSON value.
fn lenient_str(raw: Option<&RawValue>) -> Option<Cow<'_, str>> {
    let raw = raw?;
    if !raw.get().starts_with('"') {
        return None;
    }
    serde_json::from_str::<Cow<'_, str>>(raw.get()).ok()
}

/// Decodes one text frame.
pub fn decode(text: &str) -> Result<ClientFrame<'_>, DecodeError> {
    let raw: RawFrame<'_> = serde_json::from_str(text).map_err(|e| DecodeError {
        code: ErrorCode::InvalidMessage,
        message: format!("frame is not a valid JSON object: {e}"),
        frame_type: ClientFrameType::Invalid,
        id: None,
    })?;
    let id = raw.id;
    let fail = |code, frame_type, message: String| DecodeError {
        code,
        message,
        frame_type,
        id: id.as_deref().map(str::to_owned),
    };
    let Some(kind) = raw.kind.as_deref() else {
        return Err(fail(
            ErrorCode::InvalidMessage,
            ClientFrameType::Invalid,
            "missing field `type`".into(),
        ));
    };
    let frame_type = match kind {
        "subscribe" => ClientFrameType::Subscribe,
        "unsubscribe" => ClientFrameType::Unsubscribe,
        "publish" => ClientFrameType::Publish,
        "ping" => ClientFrameType::Ping,
        other => {
            return Err(fail(
                ErrorCode::UnknownType,
                ClientFrameType::Invalid,
                format!("unknown frame type {:?}", truncate(other, 64)),
            ));
        }
    };
    let room = || -> Result<RoomName, DecodeError> {
        let Some(room) = raw.room.as_deref() else {
            return Err(fail(
                ErrorCode::InvalidMessage,
                frame_type,
                "missing field `room`".into(),
            ));
        };
        RoomName::parse(room)
            .map_err(|e: InvalidRoom| fail(ErrorCode::InvalidRoom, frame_type, e.to_string()))
    };
    let frame = match frame_type {
        ClientFrameType::Subscribe => ClientFrame::Subscribe { room: room()? },
        ClientFrameType::Unsubscribe => ClientFrame::Unsubscribe { room: room()? },
        ClientFrameType::Publish => {
            let room = room()?;
            let Some(data) = raw.data else {
                return Err(fail(
                    ErrorCode::InvalidMessage,
                    frame_type,
                    "missing field `data`".into(),
                ));
            };
            check_surrogates(data.get())
                .map_err(|m| fail(ErrorCode::InvalidMessage, frame_type, m.into()))?;
            ClientFrame::Publish(Publish {
                room,
                data,
                id,
                traceparent: lenient_str(raw.traceparent),
                tracestate: lenient_str(raw.tracestate),
            })
        }
        ClientFrameType::Ping => ClientFrame::Ping { id },
        ClientFrameType::Invalid => unreachable!("decode never maps a type string to Invalid"),
    };
    Ok(frame)
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

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

/// Checks that `bytes` are one JSON value and returns them as raw data: the
/// payload of a message that arrived from another node.
pub fn parse_data(bytes: &[u8]) -> Result<Box<RawValue>, serde_json::Error> {
    let text = std::str::from_utf8(bytes).map_err(serde::de::Error::custom)?;
    let raw = serde_json::from_str::<&RawValue>(text)?;
    check_surrogates(raw.get()).map_err(serde::de::Error::custom)?;
    Ok(raw.to_owned())
}

/// Refuses `\u` escapes that encode half of a UTF-16 surrogate pair.
///
/// serde_json's raw-value validation lets them through, but strict parsers
/// (serde_json's own `Value`, many others) reject a document containing one, so
/// relaying it would hand every subscriber a frame it cannot parse. `raw` is
/// already known to be JSON, so a backslash can only start a string escape.
fn check_surrogates(raw: &str) -> Result<(), &'static str> {
    const MESSAGE: &str = "data contains an unpaired UTF-16 surrogate escape";
    let bytes = raw.as_bytes();
    let hex4 = |at: usize| -> Option<u16> {
        let digits = raw.get(at..at + 4)?;
        u16::from_str_radix(digits, 16).ok()
    };
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        if bytes.get(i + 1) != Some(&b'u') {
            i += 2; // a one-character escape such as \n or \/
            continue;
        }
        let unit = hex4(i + 2).ok_or(MESSAGE)?;
        match unit {
            0xD800..=0xDBFF => {
                let low = (bytes.get(i + 6) == Some(&b'\\') && bytes.get(i + 7) == Some(&b'u'))
                    .then(|| hex4(i + 8))
                    .flatten();
                match low {
                    Some(0xDC00..=0xDFFF) => i += 12,
                    _ => return Err(MESSAGE),
                }
            }
            0xDC00..=0xDFFF => return Err(MESSAGE),
            _ => i += 6,
        }
    }
    Ok(())
}

/// The body of `POST /api/publish`: `{"room": "...", "data": <any JSON>}`,
/// optionally with `"tenant": "..."`.
#[derive(Debug)]
pub struct HttpPublish<'a> {
    pub tenant: Option<Tenant>,
    pub room: RoomName,
    pub data: &'a RawValue,
}

/// Decodes an HTTP publish body, with the same rules as a `publish` frame.
pub fn decode_http_publish(body: &[u8]) -> Result<HttpPublish<'_>, DecodeError> {
    #[derive(Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        room: Option<Cow<'a, str>>,
        #[serde(default, borrow, deserialize_with = "present")]
        data: Option<&'a RawValue>,
        #[serde(borrow)]
        tenant: Option<Cow<'a, str>>,
    }
    let fail = |code, message: String| DecodeError {
        code,
        message,
        frame_type: ClientFrameType::Publish,
        id: None,
    };
    let text = std::str::from_utf8(body)
        .map_err(|_| fail(ErrorCode::InvalidMessage, "body is not UTF-8".into()))?;
    let body: Body<'_> = serde_json::from_str(text).map_err(|e| {
        fail(
            ErrorCode::InvalidMessage,
            format!("body is not a valid JSON object: {e}"),
        )
    })?;
    let room = body
        .room
        .ok_or_else(|| fail(ErrorCode::InvalidMessage, "missing field `room`".into()))?;
    let room = RoomName::parse(&room).map_err(|e| fail(ErrorCode::InvalidRoom, e.to_string()))?;
    let data = body
        .data
        .ok_or_else(|| fail(ErrorCode::InvalidMessage, "missing field `data`".into()))?;
    check_surrogates(data.get()).map_err(|m| fail(ErrorCode::InvalidMessage, m.into()))?;
    let tenant = body
        .tenant
        .map(|t| Tenant::parse(&t))
        .transpose()
        .map_err(|e| fail(ErrorCode::InvalidMessage, e.to_string()))?;
    Ok(HttpPublish { tenant, room, data })
}

/// The JSON bodies of the HTTP API.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum HttpReply<'a> {
    Accepted { id: &'a str },
    Error { code: &'a str, message: &'a str },
}

impl HttpReply<'_> {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from(r#"{"code":"internal"}"#))
    }
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

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
