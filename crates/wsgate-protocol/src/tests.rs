//! Decoding and encoding of wire protocol v1, table-driven.

use super::*;

/// What a decoded frame looks like, flattened for comparison.
#[derive(Debug, PartialEq)]
enum Decoded {
    Subscribe(&'static str),
    Unsubscribe(&'static str),
    Publish {
        room: &'static str,
        data: &'static str,
        id: Option<&'static str>,
        traceparent: Option<&'static str>,
    },
    Ping(Option<&'static str>),
    Refresh(&'static str),
    Error(ErrorCode, ClientFrameType, Option<&'static str>),
}

#[track_caller]
fn check(input: &str, expected: Decoded) {
    let got = match decode(input) {
        Ok(ClientFrame::Subscribe { room, .. }) => {
            format!("{:?}", Decoded::Subscribe(leak(room.as_str())))
        }
        Ok(ClientFrame::Unsubscribe { room }) => {
            format!("{:?}", Decoded::Unsubscribe(leak(room.as_str())))
        }
        Ok(ClientFrame::Publish(p)) => format!(
            "{:?}",
            Decoded::Publish {
                room: leak(p.room.as_str()),
                data: leak(p.data.get()),
                id: p.id.as_deref().map(leak),
                traceparent: p.traceparent.as_deref().map(leak),
            }
        ),
        Ok(ClientFrame::Ping { id }) => format!("{:?}", Decoded::Ping(id.as_deref().map(leak))),
        Ok(ClientFrame::Refresh { token }) => format!("{:?}", Decoded::Refresh(leak(&token))),
        Ok(frame @ ClientFrame::History { .. }) => format!("{frame:?}"),
        Err(e) => format!(
            "{:?}",
            Decoded::Error(e.code, e.frame_type, e.id.as_deref().map(leak))
        ),
    };
    assert_eq!(got, format!("{expected:?}"), "input: {input}");
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

#[test]
fn decodes_valid_frames() {
    use Decoded::*;
    check(r#"{"type":"subscribe","room":"lobby"}"#, Subscribe("lobby"));
    check(
        r#"{"type":"unsubscribe","room":"a.b:c-d_e"}"#,
        Unsubscribe("a.b:c-d_e"),
    );
    check(
        r#"{"type":"publish","room":"lobby","data":{"text":"hi"},"id":"c-17"}"#,
        Publish {
            room: "lobby",
            data: r#"{"text":"hi"}"#,
            id: Some("c-17"),
            traceparent: None,
        },
    );
    // `data` is relayed byte for byte, whitespace included, and may be any JSON value.
    check(
        r#"{"type":"publish","room":"r","data":[1, 2,  3]}"#,
        Publish {
            room: "r",
            data: "[1, 2,  3]",
            id: None,
            traceparent: None,
        },
    );
    check(
        r#"{"type":"publish","room":"r","data":null}"#,
        Publish {
            room: "r",
            data: "null",
            id: None,
            traceparent: None,
        },
    );
    check(
        r#"{"type":"publish","room":"r","data":"x","traceparent":"00-abc"}"#,
        Publish {
            room: "r",
            data: r#""x""#,
            id: None,
            traceparent: Some("00-abc"),
        },
    );
    check(r#"{"type":"ping","id":"p1"}"#, Ping(Some("p1")));
    check(r#"{"type":"ping"}"#, Ping(None));
    // Unknown fields are ignored; escaped strings are unescaped.
    check(
        r#"{"type":"subscribe","room":"lobby","extra":{"deep":[1]}}"#,
        Subscribe("lobby"),
    );
    check(
        r#"{"type":"sub\u0073cribe","room":"lob\u0062y"}"#,
        Subscribe("lobby"),
    );
}

#[test]
fn unpaired_surrogate_escapes_in_data_are_refused() {
    use ClientFrameType as T;
    let publish = |data: &str| format!(r#"{{"type":"publish","room":"r","data":{data}}}"#);
    // Found by the fuzzer: a lone high surrogate followed by an escaped slash.
    for data in [
        r#""\ud83d\/ude00""#,
        r#""\ud83d""#,
        r#""\ude00x""#,
        r#"{"k\udc00":1}"#,
        r#""\uD83Dx""#,
    ] {
        check(
            &publish(data),
            Decoded::Error(ErrorCode::InvalidMessage, T::Publish, None),
        );
        assert!(parse_data(data.as_bytes()).is_err(), "{data}");
    }
    // Paired surrogates, other escapes and raw non-ASCII text are fine.
    for data in [
        r#""\ud83d\ude00""#,
        r#""\uD83D\uDE00 \n \\ \/ é""#,
        r#""\u0041""#,
    ] {
        let frame = publish(data);
        let Ok(ClientFrame::Publish(p)) = decode(&frame) else {
            panic!("{data} refused")
        };
        assert_eq!(p.data.get(), data);
        assert!(parse_data(data.as_bytes()).is_ok());
    }
}

#[test]
fn numbers_beyond_a_double_are_refused_everywhere() {
    use ClientFrameType as T;
    // Found by the fuzzer: valid JSON that serde_json's Value (and Go's
    // encoding/json) cannot hold, so relaying it would break subscribers.
    let data = r#"{"text":"hi","n":[444444444440e044441,2.5,null,true]}"#;
    check(
        &format!(r#"{{"type":"publish","room":"r","data":{data},"id":"p1"}}"#),
        Decoded::Error(ErrorCode::InvalidMessage, T::Publish, Some("p1")),
    );
    assert!(parse_data(data.as_bytes()).is_err());
    let body = format!(r#"{{"room":"r","data":{data}}}"#);
    assert_eq!(
        decode_http_publish(body.as_bytes()).unwrap_err().code,
        ErrorCode::InvalidMessage
    );
}

#[test]
fn trace_context_of_the_wrong_type_is_ignored_not_refused() {
    check(
        r#"{"type":"publish","room":"r","data":1,"traceparent":42,"tracestate":{"a":1}}"#,
        Decoded::Publish {
            room: "r",
            data: "1",
            id: None,
            traceparent: None,
        },
    );
}

#[test]
fn refuses_invalid_frames_with_stable_codes() {
    use ClientFrameType as T;
    use Decoded::Error;
    use ErrorCode::*;
    check("not json", Error(InvalidMessage, T::Invalid, None));
    check("", Error(InvalidMessage, T::Invalid, None));
    check("[1,2]", Error(InvalidMessage, T::Invalid, None));
    check("\"subscribe\"", Error(InvalidMessage, T::Invalid, None));
    check(
        r#"{"room":"lobby"}"#,
        Error(InvalidMessage, T::Invalid, None),
    );
    check(r#"{"type":7}"#, Error(InvalidMessage, T::Invalid, None));
    check(
        r#"{"type":"subscribe","room":5}"#,
        Error(InvalidMessage, T::Invalid, None),
    );
    check(
        r#"{"type":"dance","id":"x"}"#,
        Error(UnknownType, T::Invalid, Some("x")),
    );
    check(
        r#"{"type":"subscribe"}"#,
        Error(InvalidMessage, T::Subscribe, None),
    );
    check(
        r#"{"type":"unsubscribe","room":""}"#,
        Error(InvalidRoom, T::Unsubscribe, None),
    );
    check(
        r#"{"type":"publish","room":"bad room","data":1,"id":"c1"}"#,
        Error(InvalidRoom, T::Publish, Some("c1")),
    );
    check(
        r#"{"type":"publish","room":"lobby","id":"c2"}"#,
        Error(InvalidMessage, T::Publish, Some("c2")),
    );
    check(
        r#"{"type":"subscribe","room":"lobby"} trailing"#,
        Error(InvalidMessage, T::Invalid, None),
    );
    check(
        r#"{"type":"subscribe","type":"publish"}"#,
        Error(InvalidMessage, T::Invalid, None),
    );
}

#[test]
fn error_messages_quote_at_most_64_bytes_of_input() {
    // Every shape of bad frame that quotes what it refused, with 10 KB of it.
    // `~` appears in no fixed message, so every one in a message was quoted.
    let y = "~".repeat(10_000);
    for frame in [
        format!(r#"{{"type":"{y}"}}"#),
        format!(r#""{y}""#),
        format!(r#"["{y}"]"#),
        format!(r#"{{"type":"subscribe","room":"{y}"}}"#),
        format!(r#"{{"type":"subscribe","room":["{y}"]}}"#),
        format!(
            r#"{{"type":"publish","room":"r","data":1,"id":5{}}}"#,
            "5".repeat(10_000)
        ),
        format!(r#"{{"type":"publish","room":"r","data":"{y}}}"#),
        format!(r#"{{"type":"publish","room":"r","data":1,"id":"{y}"}}"#),
        format!(r#"{{"type":"ping","id":"{y}"}}"#),
        format!(r#"{{"type":{{"{y}":1}}}}"#),
    ] {
        let err = decode(&frame).unwrap_err();
        let quoted = err.message.matches('~').count();
        assert!(
            quoted <= MAX_QUOTED,
            "{quoted} bytes of input quoted: {}",
            err.message
        );
        assert!(err.message.len() <= 200, "{}", err.message);
        assert!(
            err.id.as_ref().is_none_or(|id| id.len() <= MAX_ID_LEN),
            "the echoed id is bounded"
        );
    }
    // `€` is 3 bytes: the cut falls at 63, the last boundary before 64.
    assert_eq!(quoted(&"€".repeat(30)).len(), 63 + "…".len());
    assert_eq!(quoted("short"), "short");
}

#[test]
fn ids_longer_than_128_bytes_are_refused_without_echo() {
    use ClientFrameType as T;
    let ok = "i".repeat(MAX_ID_LEN);
    check(
        &format!(r#"{{"type":"ping","id":"{ok}"}}"#),
        Decoded::Ping(Some(leak(&ok))),
    );
    let long = "i".repeat(MAX_ID_LEN + 1);
    check(
        &format!(r#"{{"type":"publish","room":"r","data":1,"id":"{long}"}}"#),
        Decoded::Error(ErrorCode::InvalidMessage, T::Invalid, None),
    );
}

#[test]
fn refresh_frames_carry_a_token() {
    use ClientFrameType as T;
    check(
        r#"{"type":"refresh","token":"a.b.c"}"#,
        Decoded::Refresh("a.b.c"),
    );
    check(
        r#"{"type":"refresh"}"#,
        Decoded::Error(ErrorCode::InvalidMessage, T::Refresh, None),
    );
    check(
        r#"{"type":"refresh","token":7}"#,
        Decoded::Error(ErrorCode::InvalidMessage, T::Invalid, None),
    );
    assert_eq!(
        Reply::Refreshed { exp: 1_700_000_000 }.encode().as_str(),
        r#"{"type":"refreshed","exp":1700000000}"#
    );
}

#[test]
fn data_nested_deeper_than_64_levels_is_refused_everywhere() {
    use ClientFrameType as T;
    let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let publish = |data: &str| format!(r#"{{"type":"publish","room":"r","data":{data}}}"#);
    let at_limit = nested(MAX_DEPTH);
    let frame = publish(&at_limit);
    let Ok(ClientFrame::Publish(p)) = decode(&frame) else {
        panic!("64 levels are accepted");
    };
    assert_eq!(p.data.get(), at_limit);
    for depth in [MAX_DEPTH + 1, 30_000] {
        let deep = nested(depth);
        check(
            &publish(&deep),
            Decoded::Error(ErrorCode::InvalidMessage, T::Publish, None),
        );
        let body = format!(r#"{{"room":"r","data":{deep}}}"#);
        let err = decode_http_publish(body.as_bytes()).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidMessage);
        assert!(
            err.message.contains("nested deeper than 64"),
            "{}",
            err.message
        );
        assert!(parse_data(deep.as_bytes()).is_err(), "from NATS too");
    }
}

#[test]
fn encodes_replies() {
    let cases: [(Reply<'_>, &str); 6] = [
        (
            Reply::Subscribed {
                room: "lobby",
                offset: None,
                epoch: None,
                recovered: None,
            },
            r#"{"type":"subscribed","room":"lobby"}"#,
        ),
        (
            Reply::Unsubscribed { room: "lobby" },
            r#"{"type":"unsubscribed","room":"lobby"}"#,
        ),
        (
            Reply::Ack {
                id: "c-17",
                room: "lobby",
                offset: None,
            },
            r#"{"type":"ack","id":"c-17","room":"lobby"}"#,
        ),
        (Reply::Pong { id: Some("p") }, r#"{"type":"pong","id":"p"}"#),
        (Reply::Pong { id: None }, r#"{"type":"pong"}"#),
        (
            Reply::Error {
                code: ErrorCode::NotSubscribed,
                message: "no \"x\"",
                id: Some("u1"),
            },
            r#"{"type":"error","code":"not_subscribed","message":"no \"x\"","id":"u1"}"#,
        ),
    ];
    for (reply, expected) in cases {
        assert_eq!(reply.encode().as_str(), expected);
    }
}

#[test]
fn error_code_strings_match_serde() {
    for code in ErrorCode::ALL {
        assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
    }
}

#[test]
fn message_frame_is_valid_json_with_data_verbatim() {
    let room = RoomName::parse("lobby").unwrap();
    let data: &RawValue = serde_json::from_str(r#"{"t": "a\"b", "n": [1,2]}"#).unwrap();
    let frame = message_frame(
        &room,
        "m-1",
        data,
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        None,
    );
    assert_eq!(
        frame.as_str(),
        r#"{"type":"message","room":"lobby","id":"m-1","data":{"t": "a\"b", "n": [1,2]},"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}"#
    );
    let parsed: serde_json::Value = serde_json::from_str(frame.as_str()).unwrap();
    assert_eq!(parsed["data"]["t"], "a\"b");

    let untraced = message_frame(&room, "id with \"quote\"", data, None, None);
    let parsed: serde_json::Value = serde_json::from_str(untraced.as_str()).unwrap();
    assert_eq!(parsed["id"], "id with \"quote\"");
    assert!(parsed.get("traceparent").is_none());
}

#[test]
fn decodes_http_publish_bodies() {
    let ok = decode_http_publish(br#"{"room":"lobby","data":{"x":[1, 2]},"extra":true}"#).unwrap();
    assert_eq!(ok.room.as_str(), "lobby");
    assert_eq!(ok.data.get(), r#"{"x":[1, 2]}"#);
    assert!(ok.tenant.is_none());
    let with_tenant = decode_http_publish(br#"{"room":"r","data":1,"tenant":"acme"}"#).unwrap();
    assert_eq!(with_tenant.tenant.unwrap().as_str(), "acme");
    for (body, code) in [
        (&b"not json"[..], ErrorCode::InvalidMessage),
        (b"\xff\xfe", ErrorCode::InvalidMessage),
        (br#"{"data":1}"#, ErrorCode::InvalidMessage),
        (br#"{"room":"lobby"}"#, ErrorCode::InvalidMessage),
        (br#"{"room":"bad room","data":1}"#, ErrorCode::InvalidRoom),
        (
            br#"{"room":"r","data":1,"tenant":"a.b"}"#,
            ErrorCode::InvalidMessage,
        ),
        (br#"[1]"#, ErrorCode::InvalidMessage),
    ] {
        assert_eq!(
            decode_http_publish(body).unwrap_err().code,
            code,
            "{body:?}"
        );
    }
}

#[test]
fn parses_data_from_other_nodes_strictly() {
    assert_eq!(parse_data(br#" {"a":1} "#).unwrap().get(), r#"{"a":1}"#);
    assert!(parse_data(b"{").is_err());
    assert!(parse_data(b"1 2").is_err());
    assert!(parse_data(b"\xff").is_err());
    assert!(parse_data(b"").is_err());
}

#[test]
fn encodes_http_replies() {
    assert_eq!(
        HttpReply::Accepted {
            id: "m-1",
            offset: None
        }
        .to_json(),
        r#"{"id":"m-1"}"#
    );
    assert_eq!(
        HttpReply::Error {
            code: "invalid_room",
            message: "bad"
        }
        .to_json(),
        r#"{"code":"invalid_room","message":"bad"}"#
    );
}

mod properties {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::super::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".*".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(".*", inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn room() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_.:-]{1,128}"
    }

    proptest! {
        /// Whatever a client publishes comes back out of decoding unchanged.
        #[test]
        fn publish_frames_round_trip(room in room(), data in json_value(), id in proptest::option::of(".{0,32}")) {
            let mut frame = serde_json::json!({"type": "publish", "room": room, "data": data});
            if let Some(id) = &id {
                frame["id"] = Value::String(id.clone());
            }
            let text = frame.to_string();
            let ClientFrame::Publish(p) = decode(&text).expect("a valid frame decodes") else {
                panic!("not a publish");
            };
            prop_assert_eq!(p.room.as_str(), room.as_str());
            // Byte for byte: the data is relayed exactly as the client wrote it.
            prop_assert_eq!(p.data.get(), serde_json::to_string(&data).unwrap());
            prop_assert_eq!(p.id.as_deref(), id.as_deref());
        }

        /// The delivered frame is valid JSON carrying the published data.
        #[test]
        fn message_frames_are_valid_json(room in room(), data in json_value(), id in ".*", tp in proptest::option::of(".*")) {
            let raw = serde_json::value::to_raw_value(&data).unwrap();
            let room_name = RoomName::parse(&room).unwrap();
            let frame = message_frame(&room_name, &id, &raw, tp.as_deref(), None);
            let parsed: Value = serde_json::from_str(frame.as_str()).expect("valid JSON");
            let verbatim = format!(r#""data":{}"#, raw.get());
            prop_assert!(frame.as_str().contains(&verbatim), "data is embedded verbatim");
            prop_assert_eq!(&parsed["id"], &Value::String(id));
            prop_assert_eq!(&parsed["room"], &Value::String(room));
        }

        /// No input makes the decoder panic, and every refusal has a message.
        #[test]
        fn decoding_anything_never_panics(text in ".{0,512}") {
            if let Err(e) = decode(&text) {
                prop_assert!(!e.message.is_empty());
            }
        }

        /// Frames that look almost right are refused cleanly, never panicking.
        #[test]
        fn near_miss_frames_are_refused_cleanly(kind in "[a-z]{0,12}", room in ".{0,140}", extra in ".{0,40}") {
            let text = format!(r#"{{"type":"{kind}","room":{},"data":{extra}}}"#, serde_json::to_string(&room).unwrap());
            let _ = decode(&text);
        }
    }
}
