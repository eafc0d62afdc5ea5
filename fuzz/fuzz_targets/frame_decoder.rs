//! Everything a client can send as a frame or an HTTP body: never a panic, and
//! whatever decodes as a publish re-encodes into a valid message frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate_protocol::{self as protocol, ClientFrame};

fuzz_target!(|data: &[u8]| {
    let _ = protocol::decode_http_publish(data);
    let _ = protocol::parse_data(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match protocol::decode(text) {
        Ok(ClientFrame::Publish(publish)) => {
            let frame = protocol::message_frame(&publish.room, "fuzz-1", publish.data, None);
            let parsed: serde_json::Value =
                serde_json::from_str(frame.as_str()).expect("a message frame is always JSON");
            assert_eq!(parsed["room"], publish.room.as_str());
        }
        Ok(_) => {}
        Err(e) => assert!(!e.message.is_empty(), "every refusal explains itself"),
    }
});
