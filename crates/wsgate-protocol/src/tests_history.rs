//! The history fields of protocol v1: `since`, `history`, offsets and epochs.

use proptest::prelude::*;
use serde_json::Value;

use super::*;

fn subscribe(text: &str) -> Result<Option<(u64, String)>, ErrorCode> {
    match decode(text) {
        Ok(ClientFrame::Subscribe { since, .. }) => {
            Ok(since.map(|s| (s.offset, s.epoch.into_owned())))
        }
        Ok(other) => panic!("not a subscribe: {other:?}"),
        Err(e) => Err(e.code),
    }
}

#[test]
fn subscribe_may_carry_since() {
    assert_eq!(subscribe(r#"{"type":"subscribe","room":"r"}"#), Ok(None));
    assert_eq!(
        subscribe(r#"{"type":"subscribe","room":"r","since":{"offset":41,"epoch":"E"}}"#),
        Ok(Some((41, "E".into())))
    );
    for bad in [
        r#"{"type":"subscribe","room":"r","since":41}"#,
        r#"{"type":"subscribe","room":"r","since":{"offset":-1,"epoch":"E"}}"#,
        r#"{"type":"subscribe","room":"r","since":{"offset":1}}"#,
        r#"{"type":"subscribe","room":"r","since":{"epoch":"E"}}"#,
    ] {
        assert_eq!(subscribe(bad), Err(ErrorCode::InvalidMessage), "{bad}");
    }
    let long = format!(
        r#"{{"type":"subscribe","room":"r","since":{{"offset":1,"epoch":"{}"}}}}"#,
        "e".repeat(MAX_EPOCH_LEN + 1)
    );
    assert_eq!(subscribe(&long), Err(ErrorCode::InvalidMessage));
}

#[test]
fn history_requests_decode() {
    match decode(r#"{"type":"history","room":"r","limit":5,"since":{"offset":2,"epoch":"x"}}"#) {
        Ok(ClientFrame::History { room, limit, since }) => {
            assert_eq!(room.as_str(), "r");
            assert_eq!(limit, Some(5));
            assert_eq!(since.unwrap().offset, 2);
        }
        other => panic!("{other:?}"),
    }
    match decode(r#"{"type":"history","room":"r"}"#) {
        Ok(frame) => assert_eq!(frame.frame_type(), ClientFrameType::History),
        Err(e) => panic!("{e:?}"),
    }
    let missing_room = decode(r#"{"type":"history"}"#).unwrap_err();
    assert_eq!(missing_room.code, ErrorCode::InvalidMessage);
    assert_eq!(missing_room.frame_type, ClientFrameType::History);
}

#[test]
fn positions_are_encoded_only_when_known() {
    let subscribed = Reply::Subscribed {
        room: "r",
        offset: Some(7),
        epoch: Some("e-1"),
        recovered: Some(true),
    };
    assert_eq!(
        subscribed.encode().as_str(),
        r#"{"type":"subscribed","room":"r","offset":7,"epoch":"e-1","recovered":true}"#
    );
    let ack = Reply::Ack {
        id: "c",
        room: "r",
        offset: Some(3),
    };
    assert_eq!(
        ack.encode().as_str(),
        r#"{"type":"ack","id":"c","room":"r","offset":3}"#
    );
    assert_eq!(
        HttpReply::Accepted {
            id: "m",
            offset: Some(9)
        }
        .to_json(),
        r#"{"id":"m","offset":9}"#
    );
    let room = RoomName::parse("r").unwrap();
    let data: &serde_json::value::RawValue = serde_json::from_str("[1]").unwrap();
    assert_eq!(
        message_frame(&room, "m", data, None, Some(12)).as_str(),
        r#"{"type":"message","room":"r","id":"m","offset":12,"data":[1]}"#
    );
}

#[test]
fn history_frames() {
    let room = RoomName::parse("r").unwrap();
    assert_eq!(
        history_frame(&room, None, &[]).as_str(),
        r#"{"type":"history","room":"r","messages":[]}"#
    );
    let one: &serde_json::value::RawValue = serde_json::from_str(r#"{"a":1}"#).unwrap();
    let two: &serde_json::value::RawValue = serde_json::from_str("2").unwrap();
    let entries = [
        HistoryEntry {
            id: "m1",
            offset: Some(4),
            data: one,
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        },
        HistoryEntry {
            id: "m2",
            offset: Some(5),
            data: two,
            traceparent: None,
        },
    ];
    assert_eq!(
        history_frame(&room, Some((5, "e")), &entries).as_str(),
        concat!(
            r#"{"type":"history","room":"r","offset":5,"epoch":"e","messages":["#,
            r#"{"id":"m1","offset":4,"data":{"a":1},"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},"#,
            r#"{"id":"m2","offset":5,"data":2}]}"#
        )
    );
}

proptest! {
    /// Any history frame is valid JSON whose messages carry what was stored.
    #[test]
    fn history_frames_are_valid_json(
        ids in proptest::collection::vec(".*", 0..5),
        epoch in ".*",
        offset in any::<u64>(),
    ) {
        let room = RoomName::parse("r").unwrap();
        let data: &serde_json::value::RawValue = serde_json::from_str("null").unwrap();
        let entries: Vec<HistoryEntry<'_>> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| HistoryEntry { id, offset: Some(i as u64), data, traceparent: None })
            .collect();
        let frame = history_frame(&room, Some((offset, &epoch)), &entries);
        let parsed: Value = serde_json::from_str(frame.as_str()).expect("valid JSON");
        prop_assert_eq!(&parsed["epoch"], &Value::String(epoch.clone()));
        prop_assert_eq!(parsed["offset"].as_u64(), Some(offset));
        let messages = parsed["messages"].as_array().unwrap();
        prop_assert_eq!(messages.len(), ids.len());
        for (i, (m, id)) in messages.iter().zip(&ids).enumerate() {
            prop_assert_eq!(&m["id"], &Value::String(id.clone()));
            prop_assert_eq!(m["offset"].as_u64(), Some(i as u64));
        }
    }
}
