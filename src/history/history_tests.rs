use std::sync::Mutex as StdMutex;
use std::time::Duration;

use super::room::tests::envelope;
use super::*;
use crate::labels::TrimReason;

fn history(size: usize, max_bytes: usize) -> History {
    let meter = opentelemetry::global::meter("test");
    History::new(
        HistoryLimits {
            size,
            ttl: Duration::from_secs(300),
            max_bytes,
            meta_ttl: Duration::from_secs(3600),
        },
        HistoryMetrics::new(&meter),
    )
}

fn key(room: &str) -> RoomKey {
    use wsgate_protocol::room::{RoomName, Tenant};
    RoomKey::new(Tenant::default_tenant(), RoomName::parse(room).unwrap())
}

fn in_room(room: &str, id: &str, data: &str) -> Envelope {
    Envelope {
        room: key(room),
        ..envelope(id, data)
    }
}

#[test]
fn append_delivers_under_the_offset_it_stores() {
    let h = history(3, usize::MAX);
    let delivered = StdMutex::new(Vec::new());
    for i in 1..=5 {
        let appended = h.append(in_room("r", &format!("m{i}"), "1"), None, |e, offset| {
            delivered.lock().unwrap().push((e.id.to_string(), offset));
        });
        assert_eq!(appended, Appended::Stored { offset: i });
    }
    let delivered = delivered.into_inner().unwrap();
    assert_eq!(delivered.last(), Some(&("m5".to_string(), 5)));
    assert_eq!(h.message_count(), 3, "trimmed to --history-size");
    h.with_room(&key("r"), |log| {
        assert_eq!(log.latest(), 5);
        assert_eq!(log.len(), 3);
    });
}

#[test]
fn a_duplicate_id_is_not_delivered_again() {
    let h = history(10, usize::MAX);
    let mut deliveries = 0;
    let first = h.append(in_room("r", "s1", "1"), Some("ws:\0a".into()), |_, _| {
        deliveries += 1
    });
    let again = h.append(in_room("r", "s2", "1"), Some("ws:\0a".into()), |_, _| {
        deliveries += 1
    });
    let other = h.append(in_room("r", "s3", "2"), Some("ws:\0a".into()), |_, _| {
        deliveries += 1
    });
    assert_eq!(first, Appended::Stored { offset: 1 });
    assert_eq!(
        again,
        Appended::Duplicate {
            offset: 1,
            id: Arc::from("s1")
        }
    );
    assert_eq!(other, Appended::Conflict { offset: 1 });
    assert_eq!(deliveries, 1);
}

#[test]
fn rooms_have_their_own_epochs_and_offsets() {
    let h = history(10, usize::MAX);
    h.append(in_room("a", "1", "1"), None, |_, _| {});
    h.append(in_room("a", "2", "1"), None, |_, _| {});
    h.append(in_room("b", "3", "1"), None, |_, _| {});
    let (a, ea) = h.with_room(&key("a"), |l| (l.latest(), l.epoch().clone()));
    let (b, eb) = h.with_room(&key("b"), |l| (l.latest(), l.epoch().clone()));
    assert_eq!((a, b), (2, 1));
    assert_ne!(ea, eb);
}

#[test]
fn the_byte_cap_trims_the_largest_room_first() {
    let big = "x".repeat(10_000);
    // Room "big" holds ~10 messages of 10 KB; "small" one small message.
    let h = history(100, 60_000);
    h.append(in_room("small", "s", "1"), None, |_, _| {});
    for i in 0..10 {
        h.append(
            in_room("big", &i.to_string(), &format!("\"{big}\"")),
            None,
            |_, _| {},
        );
    }
    assert!(h.byte_count() <= 60_000, "{}", h.byte_count());
    h.with_room(&key("small"), |log| {
        assert_eq!(log.len(), 1, "the small room kept its message")
    });
    h.with_room(&key("big"), |log| {
        assert!(log.len() < 10);
        assert_eq!(log.latest(), 10, "the newest is kept");
    });
    let _ = TrimReason::Memory;
}

#[test]
fn sweep_forgets_idle_empty_rooms_and_counts_bytes_back_to_zero() {
    let h = History::new(
        HistoryLimits {
            size: 10,
            ttl: Duration::ZERO,
            max_bytes: usize::MAX,
            meta_ttl: Duration::ZERO,
        },
        HistoryMetrics::new(&opentelemetry::global::meter("test")),
    );
    h.append(in_room("r", "1", "1"), None, |_, _| {});
    let epoch = h.with_room(&key("r"), |l| l.epoch().clone());
    h.sweep(|_| true);
    assert_eq!(h.message_count(), 0, "expired");
    assert!(h.byte_count() > 0, "the record is kept while in use");
    h.sweep(|_| false);
    assert_eq!(h.byte_count(), 0);
    let again = h.with_room(&key("r"), |l| l.epoch().clone());
    assert_ne!(epoch, again, "a forgotten room comes back with a new epoch");
}

#[test]
fn empty_records_are_forgotten_under_the_cap_least_recently_used_first() {
    let h = history(10, 20_000);
    // As `history` requests for ever new rooms make them: nobody subscribed.
    for i in 0..1_000 {
        h.with_room(&key(&format!("room-{i}")), |_| ());
    }
    // The cap is enforced before a record is made: held to it within one.
    let one_record = (ROOM_OVERHEAD + "default".len() + "room-999".len()) as u64;
    assert!(h.byte_count() <= 20_000 + one_record, "{}", h.byte_count());
    // The newest record survived; the oldest was forgotten (a new epoch).
    let newest = h.with_room(&key("room-999"), |l| l.epoch().clone());
    assert!(newest.ends_with("-1000"), "{newest}");
    let oldest = h.with_room(&key("room-0"), |l| l.epoch().clone());
    assert!(!oldest.ends_with("-1"), "{oldest}");
}

#[test]
fn the_cap_forgets_idle_records_before_it_trims_messages_and_never_a_subscribed_room() {
    let h = history(100, 30_000);
    for i in 0..5 {
        h.append(in_room("kept", &i.to_string(), "1"), None, |_, _| {});
    }
    let subscribed = h.with_room(&key("watched"), |log| {
        log.touch();
        log.epoch().clone()
    });
    for i in 0..2_000 {
        h.with_room(&key(&format!("probe-{i}")), |_| ());
    }
    let one_record = (ROOM_OVERHEAD + "default".len() + "probe-1999".len()) as u64;
    assert!(h.byte_count() <= 30_000 + one_record, "{}", h.byte_count());
    h.with_room(&key("kept"), |log| {
        assert_eq!(log.len(), 5, "no message trimmed for empty records")
    });
    let now = h.with_room(&key("watched"), |l| l.epoch().clone());
    assert_eq!(
        now, subscribed,
        "a subscribed room keeps its record and epoch"
    );
    // Once a sweep finds it without subscribers, it may go like the rest.
    h.sweep(|_| false);
    for i in 2_000..4_000 {
        h.with_room(&key(&format!("probe-{i}")), |_| ());
    }
    let later = h.with_room(&key("watched"), |l| l.epoch().clone());
    assert_ne!(later, subscribed);
}

#[test]
fn a_new_room_is_made_even_when_subscribed_rooms_fill_the_cap() {
    let h = history(10, 2_000);
    for i in 0..50 {
        h.with_room(&key(&format!("watched-{i}")), |log| log.touch());
    }
    assert!(
        h.byte_count() > 2_000,
        "subscribed records are kept over the cap"
    );
    // Used to loop for ever: the cap's trim forgot the record just made.
    let latest = h.with_room(&key("new"), |log| log.latest());
    assert_eq!(latest, 0);
}
