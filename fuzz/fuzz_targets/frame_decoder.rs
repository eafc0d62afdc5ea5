//! Everything a client can send as a frame or an HTTP body: never a panic;
//! whatever decodes as a publish re-encodes into a valid message frame, and
//! a `since` or `history` request's fields into a valid history frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate_protocol::{self as protocol, ClientFrame, HistoryEntry};

fuzz_target!(|data: &[u8]| {
    let _ = protocol::decode_http_publish(data);
    let _ = protocol::parse_data(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match protocol::decode(text) {
        Ok(ClientFrame::Publish(publish)) => {
            let offset = publish.id.as_ref().map(|id| u64::MAX / 128 * id.len() as u64);
            let frame = protocol::message_frame(&publish.room, "fuzz-1", publish.data, None, offset);
            let parsed: serde_json::Value =
                serde_json::from_str(frame.as_str()).expect("a message frame is always JSON");
            assert_eq!(parsed["room"], publish.room.as_str());
            // A client's id in a history frame's message (the server's own
            // ids never need escaping, a peer's might).
            let id = publish.id.as_deref().unwrap_or("");
            let entry = HistoryEntry {
                id,
                offset,
                data: publish.data,
                traceparent: publish.traceparent.as_deref(),
            };
            let frame = protocol::history_frame(&publish.room, Some((7, id)), &[entry]);
            let parsed: serde_json::Value =
                serde_json::from_str(frame.as_str()).expect("a history frame is always JSON");
            assert_eq!(parsed["messages"][0]["id"], id);
        }
        Ok(ClientFrame::Subscribe {
            room,
            since: Some(since),
        })
        | Ok(ClientFrame::History {
            room,
            since: Some(since),
            ..
        }) => {
            let frame = protocol::history_frame(&room, Some((since.offset, &since.epoch)), &[]);
            let parsed: serde_json::Value =
                serde_json::from_str(frame.as_str()).expect("a history frame is always JSON");
            assert_eq!(parsed["epoch"], since.epoch.as_ref());
            assert_eq!(parsed["offset"].as_u64(), Some(since.offset));
        }
        Ok(_) => {}
        Err(e) => assert!(!e.message.is_empty(), "every refusal explains itself"),
    }
});
