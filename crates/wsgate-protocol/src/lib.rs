//! wsgate's JSON wire format, version 1 (see `docs/protocol.md`): frames, room
//! names, decoding and encoding, the HTTP API's bodies.
//!
//! This is the only crate of the gateway that knows the wire format, and it
//! knows nothing else: serde only, no async runtime, no OpenTelemetry, no HTTP
//! server (encoded frames are plain `tungstenite` text). Decoding borrows from the frame's text
//! wherever it can: `data` stays a `&RawValue` slice of the client's frame and is
//! never parsed into a tree. Encoding writes each server frame exactly once; a
//! `message` frame is built once per node and its bytes are shared by every
//! recipient.
//!
//! - `lib.rs`: the vocabulary (frame types, error codes, decoded frames);
//! - `room.rs`: room names and tenants, the validated identifiers;
//! - `decode.rs`: client frames; `encode.rs`: server frames;
//! - `data.rs`: the checks a message's `data` passes wherever it comes from;
//! - `http.rs`: the HTTP publish API's bodies.

mod data;
mod decode;
mod encode;
mod http;
pub mod room;

use std::borrow::Cow;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::room::RoomName;

pub use data::{MAX_DEPTH, parse_data};
pub use decode::decode;
pub use encode::{HistoryEntry, Reply, history_frame, message_frame};
pub use http::{HttpPublish, HttpReply, decode_http_publish};

/// The longest client `id` accepted, in bytes: ids are echoed in replies.
pub const MAX_ID_LEN: usize = 128;

/// The most bytes of client input an error message may quote. A message is for
/// humans; echoing more would let a client make the server send back whatever
/// it sent (a 60 KB frame, say) as an error.
pub const MAX_QUOTED: usize = 64;

/// The longest `since.epoch` accepted, in bytes: epochs are the server's own
/// short strings, so anything longer cannot match one.
pub const MAX_EPOCH_LEN: usize = 64;

/// `s` cut to at most [`MAX_QUOTED`] bytes at a character boundary, with `…`
/// added when something was cut: the form client input takes in an error message.
pub fn quoted(s: &str) -> Cow<'_, str> {
    if s.len() <= MAX_QUOTED {
        return Cow::Borrowed(s);
    }
    let mut end = MAX_QUOTED;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &s[..end]))
}

/// The `type` of a frame a client sent; `Invalid` when it could not be decoded.
/// The string forms are the `type` label of `websocket_messages_received_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFrameType {
    Subscribe,
    Unsubscribe,
    Publish,
    Ping,
    Refresh,
    History,
    Invalid,
}

impl ClientFrameType {
    pub const ALL: [Self; 7] = [
        Self::Subscribe,
        Self::Unsubscribe,
        Self::Publish,
        Self::Ping,
        Self::Refresh,
        Self::History,
        Self::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Subscribe => "subscribe",
            Self::Unsubscribe => "unsubscribe",
            Self::Publish => "publish",
            Self::Ping => "ping",
            Self::Refresh => "refresh",
            Self::History => "history",
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
    Refreshed,
    History,
    Error,
}

impl ServerFrameType {
    pub const ALL: [Self; 8] = [
        Self::Message,
        Self::Ack,
        Self::Subscribed,
        Self::Unsubscribed,
        Self::Pong,
        Self::Refreshed,
        Self::History,
        Self::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::Ack => "ack",
            Self::Subscribed => "subscribed",
            Self::Unsubscribed => "unsubscribed",
            Self::Pong => "pong",
            Self::Refreshed => "refreshed",
            Self::History => "history",
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
    /// Over `--max-rooms-per-connection`, or the node is at `--max-rooms`.
    TooManyRooms,
    /// A `refresh` token that does not verify.
    Unauthorized,
    /// A publish `id` the room already accepted, within its history, for
    /// different `data`: nothing was published.
    IdConflict,
    /// The server failed; the request may be retried.
    Internal,
}

impl ErrorCode {
    pub const ALL: [Self; 12] = [
        Self::InvalidMessage,
        Self::UnknownType,
        Self::InvalidRoom,
        Self::NotSubscribed,
        Self::UnsupportedBinary,
        Self::BrokerUnavailable,
        Self::Forbidden,
        Self::RateLimited,
        Self::TooManyRooms,
        Self::Unauthorized,
        Self::IdConflict,
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
            Self::Unauthorized => "unauthorized",
            Self::IdConflict => "id_conflict",
            Self::Internal => "internal",
        }
    }
}

/// A decoded client frame, borrowing from the frame's text.
#[derive(Debug)]
pub enum ClientFrame<'a> {
    Subscribe {
        room: RoomName,
        /// Resume from here: the last message the client has (`since`).
        since: Option<Since<'a>>,
    },
    Unsubscribe {
        room: RoomName,
    },
    Publish(Publish<'a>),
    Ping {
        id: Option<Cow<'a, str>>,
    },
    /// A new token for the connection, before its current one expires.
    Refresh {
        token: Cow<'a, str>,
    },
    /// Read a room's stored messages without subscribing.
    History {
        room: RoomName,
        /// At most this many messages (the server caps it too).
        limit: Option<u32>,
        /// Only messages after this position.
        since: Option<Since<'a>>,
    },
}

/// A position in a room's history: the offset of the last message a client
/// has, and the epoch it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since<'a> {
    pub offset: u64,
    pub epoch: Cow<'a, str>,
}

impl ClientFrame<'_> {
    pub fn frame_type(&self) -> ClientFrameType {
        match self {
            Self::Subscribe { .. } => ClientFrameType::Subscribe,
            Self::Unsubscribe { .. } => ClientFrameType::Unsubscribe,
            Self::Publish(_) => ClientFrameType::Publish,
            Self::Ping { .. } => ClientFrameType::Ping,
            Self::Refresh { .. } => ClientFrameType::Refresh,
            Self::History { .. } => ClientFrameType::History,
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

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_history;
