//! The bodies of `POST /api/publish`.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::data::check_data;
use super::decode::{describe, present};
use super::{ClientFrameType, DecodeError, ErrorCode, MAX_ID_LEN};
use crate::room::{RoomName, Tenant};

/// The body of `POST /api/publish`: `{"room": "...", "data": <any JSON>}`,
/// optionally with `"tenant": "..."` and an `"id"` that makes a retry
/// idempotent in a room with history.
#[derive(Debug)]
pub struct HttpPublish<'a> {
    pub tenant: Option<Tenant>,
    pub room: RoomName,
    pub data: &'a RawValue,
    pub id: Option<Cow<'a, str>>,
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
        #[serde(borrow)]
        id: Option<Cow<'a, str>>,
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
            format!("body is not a valid JSON object: {}", describe(&e)),
        )
    })?;
    let room = body
        .room
        .ok_or_else(|| fail(ErrorCode::InvalidMessage, "missing field `room`".into()))?;
    let room = RoomName::parse(&room).map_err(|e| fail(ErrorCode::InvalidRoom, e.to_string()))?;
    let data = body
        .data
        .ok_or_else(|| fail(ErrorCode::InvalidMessage, "missing field `data`".into()))?;
    check_data(data.get()).map_err(|e| fail(ErrorCode::InvalidMessage, e.to_string()))?;
    let tenant = body
        .tenant
        .map(|t| Tenant::parse(&t))
        .transpose()
        .map_err(|e| fail(ErrorCode::InvalidMessage, e.to_string()))?;
    if body.id.as_ref().is_some_and(|id| id.len() > MAX_ID_LEN) {
        return Err(fail(
            ErrorCode::InvalidMessage,
            format!("`id` is longer than {MAX_ID_LEN} bytes"),
        ));
    }
    Ok(HttpPublish {
        tenant,
        room,
        data,
        id: body.id,
    })
}

/// The JSON bodies of the HTTP API.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum HttpReply<'a> {
    /// `offset` is the message's position when the room has history.
    Accepted {
        id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
    },
    Error {
        code: &'a str,
        message: &'a str,
    },
}

impl HttpReply<'_> {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from(r#"{"code":"internal"}"#))
    }
}
