//! Decoding client frames.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::data::check_data;
use super::{
    ClientFrame, ClientFrameType, DecodeError, ErrorCode, MAX_EPOCH_LEN, MAX_ID_LEN, Publish,
    Since, quoted,
};
use crate::room::{InvalidRoom, RoomName};

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
    #[serde(borrow)]
    token: Option<Cow<'a, str>>,
    /// Any JSON value: a trace context that is not a string is ignored, not refused.
    #[serde(default, borrow, deserialize_with = "present")]
    traceparent: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    tracestate: Option<&'a RawValue>,
    /// `subscribe` and `history`: a position in the room's history.
    #[serde(borrow)]
    since: Option<RawSince<'a>>,
    /// `history`: how many messages at most.
    limit: Option<u32>,
}

#[derive(Deserialize)]
struct RawSince<'a> {
    offset: u64,
    #[serde(borrow)]
    epoch: Cow<'a, str>,
}

pub(super) fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
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
        message: format!("frame is not a valid JSON object: {}", describe(&e)),
        frame_type: ClientFrameType::Invalid,
        id: None,
    })?;
    // An id is echoed in replies, so it is bounded like a room name; an
    // over-long one is refused without being echoed.
    if raw.id.as_ref().is_some_and(|id| id.len() > MAX_ID_LEN) {
        return Err(DecodeError {
            code: ErrorCode::InvalidMessage,
            message: format!("`id` is longer than {MAX_ID_LEN} bytes"),
            frame_type: ClientFrameType::Invalid,
            id: None,
        });
    }
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
        "refresh" => ClientFrameType::Refresh,
        "history" => ClientFrameType::History,
        other => {
            return Err(fail(
                ErrorCode::UnknownType,
                ClientFrameType::Invalid,
                format!("unknown frame type {:?}", quoted(other)),
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
    let since = || -> Result<Option<Since<'_>>, DecodeError> {
        match &raw.since {
            Some(since) if since.epoch.len() > MAX_EPOCH_LEN => Err(fail(
                ErrorCode::InvalidMessage,
                frame_type,
                format!("`since.epoch` is longer than {MAX_EPOCH_LEN} bytes"),
            )),
            Some(since) => Ok(Some(Since {
                offset: since.offset,
                epoch: since.epoch.clone(),
            })),
            None => Ok(None),
        }
    };
    let frame = match frame_type {
        ClientFrameType::Subscribe => ClientFrame::Subscribe {
            room: room()?,
            since: since()?,
        },
        ClientFrameType::History => ClientFrame::History {
            room: room()?,
            limit: raw.limit,
            since: since()?,
        },
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
            check_data(data.get())
                .map_err(|e| fail(ErrorCode::InvalidMessage, frame_type, e.to_string()))?;
            ClientFrame::Publish(Publish {
                room,
                data,
                id,
                traceparent: lenient_str(raw.traceparent),
                tracestate: lenient_str(raw.tracestate),
            })
        }
        ClientFrameType::Ping => ClientFrame::Ping { id },
        ClientFrameType::Refresh => match raw.token {
            Some(token) => ClientFrame::Refresh { token },
            None => {
                return Err(fail(
                    ErrorCode::InvalidMessage,
                    frame_type,
                    "missing field `token`".into(),
                ));
            }
        },
        // Not produced by the match above; refused rather than trusted.
        ClientFrameType::Invalid => {
            return Err(fail(
                ErrorCode::UnknownType,
                ClientFrameType::Invalid,
                "unknown frame type".into(),
            ));
        }
    };
    Ok(frame)
}

/// A serde_json error for a client: its message with at most
/// [`MAX_QUOTED`](super::MAX_QUOTED) bytes of whatever it quotes from the input
/// (an "invalid type: string ..." error quotes the whole string), then where
/// in the frame it happened.
pub(super) fn describe(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    let what = full.strip_suffix(&position).unwrap_or(&full);
    format!("{}{position}", quoted(what))
}
