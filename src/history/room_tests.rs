use std::time::{Duration, Instant};

use opentelemetry::trace::SpanContext;
use serde_json::value::RawValue;

use super::*;
use crate::message::PublishedAt;
use wsgate_protocol::room::{RoomKey, RoomName, Tenant};

pub(crate) fn envelope(id: &str, data: &str) -> Envelope {
    Envelope {
        id: Arc::from(id),
        room: RoomKey::new(Tenant::default_tenant(), RoomName::parse("r").unwrap()),
        data: RawValue::from_string(data.to_owned()).unwrap(),
        trace: SpanContext::empty_context(),
        published_at: PublishedAt::now(),
    }
}

fn log_with(n: u64) -> RoomLog {
    let mut log = RoomLog::new(Arc::from("e1"), ROOM_OVERHEAD, Instant::now());
    for i in 1..=n {
        log.append(
            envelope(&format!("m{i}"), &i.to_string()),
            None,
            Instant::now(),
        )
        .unwrap();
    }
    log
}

fn offsets(entries: &[Arc<Entry>]) -> Vec<u64> {
    entries.iter().map(|e| e.offset).collect()
}

#[test]
fn offsets_are_contiguous_from_one() {
    let log = log_with(5);
    assert_eq!(log.latest(), 5);
    assert_eq!(offsets(&log.after(0, 100)), [1, 2, 3, 4, 5]);
    assert_eq!(offsets(&log.after(3, 100)), [4, 5]);
    assert_eq!(offsets(&log.after(3, 1)), [4]);
    assert!(log.after(5, 100).is_empty());
    assert_eq!(offsets(&log.newest(2)), [4, 5]);
}

#[test]
fn continuity_needs_the_same_epoch_and_nothing_trimmed_after_the_offset() {
    let mut log = log_with(10);
    assert!(log.continuous_after("e1", 0));
    assert!(log.continuous_after("e1", 10));
    assert!(!log.continuous_after("e1", 11), "an offset from the future");
    assert!(!log.continuous_after("e2", 5), "another epoch");
    let trimmed = log.trim_to(4);
    assert_eq!(trimmed.messages, 6);
    assert_eq!(offsets(&log.after(0, 100)), [7, 8, 9, 10]);
    assert!(!log.continuous_after("e1", 5), "offset 6 is gone");
    assert!(log.continuous_after("e1", 6));
    assert_eq!(offsets(&log.after(6, 100)), [7, 8, 9, 10]);
    assert_eq!(log.backlog_after(8), (2, 3), "\"9\" and \"10\"");
}

#[test]
fn a_new_record_resumes_from_zero_only() {
    let log = RoomLog::new(Arc::from("e1"), ROOM_OVERHEAD, Instant::now());
    assert!(log.continuous_after("e1", 0));
    assert!(!log.continuous_after("e1", 1));
}

#[test]
fn ttl_drops_the_old_front_only() {
    let mut log = RoomLog::new(Arc::from("e1"), ROOM_OVERHEAD, Instant::now());
    let start = Instant::now();
    log.append(envelope("a", "1"), None, start).unwrap();
    log.append(envelope("b", "2"), None, start + Duration::from_secs(10))
        .unwrap();
    let trimmed = log.expire(start + Duration::from_secs(12), Duration::from_secs(5));
    assert_eq!(trimmed.messages, 1);
    assert_eq!(offsets(&log.after(0, 10)), [2]);
}

#[test]
fn bytes_are_given_back_exactly() {
    let mut log = RoomLog::new(Arc::from("e1"), ROOM_OVERHEAD, Instant::now());
    let empty = log.bytes();
    let (_, added) = log
        .append(envelope("a", "[1,2,3]"), Some("k".into()), Instant::now())
        .unwrap();
    assert_eq!(log.bytes(), empty + added);
    let trimmed = log.shrink_to(empty);
    assert_eq!(trimmed.bytes, added);
    assert_eq!(log.bytes(), empty);
}

#[test]
fn an_id_seen_again_is_a_duplicate_or_a_conflict_until_trimmed() {
    let mut log = RoomLog::new(Arc::from("e1"), ROOM_OVERHEAD, Instant::now());
    let key = |k: &str| Some(Arc::<str>::from(k));
    let now = Instant::now();
    log.append(envelope("s1", "{\"a\":1}"), key("ws:\0c1"), now)
        .unwrap();
    log.append(envelope("s2", "2"), None, now).unwrap();
    let again = log.append(envelope("s3", "{\"a\":1}"), key("ws:\0c1"), now);
    assert_eq!(
        again.map(|_| ()),
        Err(Appended::Duplicate {
            offset: 1,
            id: Arc::from("s1")
        })
    );
    let other = log.append(envelope("s4", "{\"a\":2}"), key("ws:\0c1"), now);
    assert_eq!(other.map(|_| ()), Err(Appended::Conflict { offset: 1 }));
    assert_eq!(log.latest(), 2, "neither was stored");
    let scoped = log.append(envelope("s5", "{\"a\":1}"), key("ws:u\0c1"), now);
    assert_eq!(scoped.map(|(e, _)| e.offset), Ok(3), "another scope");
    log.trim_to(1);
    let after_trim = log.append(envelope("s6", "{\"a\":1}"), key("ws:\0c1"), now);
    assert_eq!(
        after_trim.map(|(e, _)| e.offset),
        Ok(4),
        "forgotten with its message"
    );
}
