//! The history's instruments: trims, and what resuming subscribers were told.
//! (The stored messages and bytes are gauges in `StateGauges`, read from the
//! history at collection.) Registered whether or not the node keeps history,
//! so dashboards and alerts see zeros rather than absent series.

use std::sync::Arc;

use opentelemetry::metrics::{Counter, Meter};

use super::counters::LabelledCounter;
use crate::labels::{RecoveryResult, TrimReason};

/// Cheap to clone: one `Arc`.
#[derive(Clone)]
pub(crate) struct HistoryMetrics(Arc<Instruments>);

struct Instruments {
    trimmed: LabelledCounter<TrimReason>,
    recoveries: LabelledCounter<RecoveryResult>,
    recovered_messages: Counter<u64>,
}

impl HistoryMetrics {
    pub(crate) fn new(meter: &Meter) -> Self {
        let recovered_messages = meter
            .u64_counter("websocket.recovered_messages")
            .with_description(
                "Messages replayed to subscribers that resumed with `since` (a replay cut short by trimming still counts what it sent).",
            )
            .with_unit("{message}")
            .build();
        recovered_messages.add(0, &[]);
        Self(Arc::new(Instruments {
            trimmed: LabelledCounter::new(
                meter,
                "wsgate.history.trimmed",
                "Stored messages taken out of the in-memory history, by reason: size (--history-size), ttl (--history-ttl), memory (--history-max-bytes).",
                "{message}",
                "reason",
            ),
            recoveries: LabelledCounter::new(
                meter,
                "websocket.recoveries",
                "Subscribes that asked to resume (`since`), by answer: recovered (every missed message replayed) or not_recovered (the client must reload).",
                "{subscription}",
                "result",
            ),
            recovered_messages,
        }))
    }

    pub(crate) fn trimmed(&self, reason: TrimReason, messages: u64) {
        self.0.trimmed.add(reason, messages);
    }

    /// A resuming subscribe's answer, and how many messages it replayed.
    pub(crate) fn recovery(&self, result: RecoveryResult, replayed: u64) {
        self.0.recoveries.add(result, 1);
        if replayed > 0 {
            self.0.recovered_messages.add(replayed, &[]);
        }
    }
}
