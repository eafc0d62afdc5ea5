//! The closed vocabularies of every metric label.
//!
//! Each label value comes from an enum here (or a wire-protocol enum), so no
//! label can ever carry a room, user, connection or message, and no client can
//! mint a new series.

use wsgate_protocol::ErrorCode;

/// A closed set of label values with a dense index (their order in `ALL`), so
/// counters can keep one atomic per value.
pub trait LabelSet: Copy + 'static {
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;
    fn index(self) -> usize;
}

macro_rules! label_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }
        impl $name {
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }
        impl LabelSet for $name {
            const ALL: &'static [Self] = $name::ALL;
            fn as_str(self) -> &'static str { $name::as_str(self) }
            fn index(self) -> usize { self as usize }
        }
    };
}

label_enum! {
    /// Why a connection ended: the `close_reason` label.
    CloseReason {
        ClientClose => "client_close",
        ServerShutdown => "server_shutdown",
        HeartbeatTimeout => "heartbeat_timeout",
        ProtocolError => "protocol_error",
        TooLarge => "too_large",
        SlowConsumer => "slow_consumer",
        WriteTimeout => "write_timeout",
        Policy => "policy",
        TokenExpired => "token_expired",
        Error => "error",
    }
}

label_enum! {
    /// The `error_type` label of `websocket_errors_total`: every error frame code
    /// plus the failures that end a connection.
    ErrorType {
        InvalidMessage => "invalid_message",
        UnknownType => "unknown_type",
        InvalidRoom => "invalid_room",
        NotSubscribed => "not_subscribed",
        UnsupportedBinary => "unsupported_binary",
        BrokerUnavailable => "broker_unavailable",
        Forbidden => "forbidden",
        RateLimited => "rate_limited",
        TooManyRooms => "too_many_rooms",
        Unauthorized => "unauthorized",
        IdConflict => "id_conflict",
        Internal => "internal",
        TooLarge => "too_large",
        HeartbeatTimeout => "heartbeat_timeout",
        WriteFailed => "write_failed",
        WriteTimeout => "write_timeout",
        SlowConsumer => "slow_consumer",
        Protocol => "protocol",
    }
}

label_enum! {
    /// Why an upgrade was refused before any WebSocket existed: the `reason`
    /// label of `websocket_connections_rejected_total`.
    RejectReason {
        BadHandshake => "bad_handshake",
        ShuttingDown => "shutting_down",
        Origin => "origin",
        Unauthorized => "unauthorized",
        PerIpLimit => "per_ip_limit",
        Capacity => "capacity",
        PerUserLimit => "per_user_limit",
        /// The request head did not arrive within `--handshake-timeout`
        /// (counted by the accept loop, before any handler).
        HandshakeTimeout => "handshake_timeout",
        /// The bytes received were not an HTTP/1 request head.
        MalformedRequest => "malformed_request",
    }
}

label_enum! {
    /// Why a frame bound for a client was never written: the `reason` label.
    DropReason {
        /// The subscriber's queue was full (`--slow-consumer drop`).
        QueueFull => "queue_full",
        /// Queued for a connection that was then closed as a slow consumer.
        SlowConsumer => "slow_consumer",
        /// Addressed to a connection that was closing, or left queued when it closed.
        ConnectionClosed => "connection_closed",
    }
}

label_enum! {
    /// Why a message from the broker was not delivered: the `error.type` label
    /// of `messaging.client.consumed.messages` (absent on delivered messages).
    ConsumeError {
        /// Not JSON, or without the headers wsgate publishes.
        InvalidMessage => "invalid_message",
        /// Payload larger than `--max-message-bytes`.
        TooLarge => "too_large",
        /// Dropped by the NATS client: the room's subscription buffer
        /// (`--nats-subscription-buffer`) was full.
        SlowConsumer => "slow_consumer",
    }
}

label_enum! {
    /// A condition that is logged as a warning at most once per interval and
    /// always counted: the `kind` label of `wsgate_warnings_total`.
    // The variants spell the label values, which all begin with `broker_`
    // today; the label is for any repeated warning, not the broker's alone.
    #[allow(clippy::enum_variant_names)]
    WarningKind {
        /// A `subscribe` could not be confirmed by the broker.
        BrokerSubscribeFailed => "broker_subscribe_failed",
        /// A message from the broker was not JSON or lacked wsgate's headers.
        BrokerMessageInvalid => "broker_message_invalid",
        /// A message from the broker was larger than `--max-message-bytes`.
        BrokerMessageTooLarge => "broker_message_too_large",
        /// The NATS client dropped messages: a subscription buffer was full.
        BrokerSlowConsumer => "broker_slow_consumer",
        /// A room with history missed messages from NATS (a full buffer, a
        /// reconnect): read back from the JetStream stream.
        BrokerGapBackfilled => "broker_gap_backfilled",
        /// Messages NATS dropped in a room with history could not all be
        /// read back (trimmed first, or the stream unreachable).
        BrokerGapLost => "broker_gap_lost",
    }
}

label_enum! {
    /// Why stored messages left the history: the `reason` label of
    /// `wsgate_history_trimmed_total`.
    TrimReason {
        /// More than `--history-size` messages in the room.
        Size => "size",
        /// Older than `--history-ttl`.
        Ttl => "ttl",
        /// The node held more than `--history-max-bytes`.
        Memory => "memory",
    }
}

label_enum! {
    /// The answer to a subscribe that asked to resume (`since`): the `result`
    /// label of `websocket_recoveries_total`.
    RecoveryResult {
        /// Every message after `since` was replayed.
        Recovered => "recovered",
        /// The client was told `recovered: false`: the epoch differs, messages
        /// were trimmed, or the node keeps no history.
        NotRecovered => "not_recovered",
    }
}

impl From<ErrorCode> for ErrorType {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::InvalidMessage => Self::InvalidMessage,
            ErrorCode::UnknownType => Self::UnknownType,
            ErrorCode::InvalidRoom => Self::InvalidRoom,
            ErrorCode::NotSubscribed => Self::NotSubscribed,
            ErrorCode::UnsupportedBinary => Self::UnsupportedBinary,
            ErrorCode::BrokerUnavailable => Self::BrokerUnavailable,
            ErrorCode::Forbidden => Self::Forbidden,
            ErrorCode::RateLimited => Self::RateLimited,
            ErrorCode::TooManyRooms => Self::TooManyRooms,
            ErrorCode::Unauthorized => Self::Unauthorized,
            ErrorCode::IdConflict => Self::IdConflict,
            ErrorCode::Internal => Self::Internal,
        }
    }
}

/// The `close_code` label: RFC 6455 codes as numbers, application ranges folded
/// into `3xxx`/`4xxx`, anything else `other`, so a client cannot mint series.
pub fn close_code_label(code: u16) -> &'static str {
    const KNOWN: [&str; 16] = [
        "1000", "1001", "1002", "1003", "1004", "1005", "1006", "1007", "1008", "1009", "1010",
        "1011", "1012", "1013", "1014", "1015",
    ];
    match code {
        1000..=1015 => KNOWN[usize::from(code - 1000)],
        3000..=3999 => "3xxx",
        4000..=4999 => "4xxx",
        _ => "other",
    }
}

impl LabelSet for wsgate_protocol::ClientFrameType {
    const ALL: &'static [Self] = &wsgate_protocol::ClientFrameType::ALL;
    fn as_str(self) -> &'static str {
        wsgate_protocol::ClientFrameType::as_str(self)
    }
    fn index(self) -> usize {
        self as usize
    }
}

impl LabelSet for wsgate_protocol::ServerFrameType {
    const ALL: &'static [Self] = &wsgate_protocol::ServerFrameType::ALL;
    fn as_str(self) -> &'static str {
        wsgate_protocol::ServerFrameType::as_str(self)
    }
    fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_fold_into_a_bounded_set() {
        assert_eq!(close_code_label(1000), "1000");
        assert_eq!(close_code_label(1009), "1009");
        assert_eq!(close_code_label(1015), "1015");
        assert_eq!(close_code_label(3001), "3xxx");
        assert_eq!(close_code_label(4999), "4xxx");
        assert_eq!(close_code_label(999), "other");
        assert_eq!(close_code_label(2000), "other");
        assert_eq!(close_code_label(65535), "other");
    }

    #[test]
    fn every_error_code_has_an_error_type_of_the_same_name() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorType::from(code).as_str(), code.as_str());
        }
    }

    #[track_caller]
    fn dense<L: LabelSet>() {
        for (i, label) in L::ALL.iter().enumerate() {
            assert_eq!(label.index(), i, "{}", label.as_str());
        }
    }

    #[test]
    fn indexes_are_dense_and_in_order() {
        dense::<ErrorType>();
        dense::<DropReason>();
        dense::<RejectReason>();
        dense::<CloseReason>();
        dense::<ConsumeError>();
        dense::<WarningKind>();
        dense::<TrimReason>();
        dense::<RecoveryResult>();
        dense::<wsgate_protocol::ClientFrameType>();
        dense::<wsgate_protocol::ServerFrameType>();
    }
}
