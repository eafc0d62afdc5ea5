//! Counters over a closed label set, kept in atomics and read by the SDK when
//! metrics are collected: OpenTelemetry's asynchronous (observable) counters.
//!
//! A synchronous counter with an attribute sorts and hashes its attributes on
//! every `add`, which on the delivery path cost more than the rest of the
//! metrics together. Here an event is one relaxed atomic add, and a scrape reads
//! every value: exact at collection time, every label present from start-up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Meter, ObservableCounter};

use crate::labels::LabelSet;

/// One cumulative count per value of the label `L`.
pub struct LabelledCounter<L: LabelSet> {
    values: Arc<[AtomicU64]>,
    /// Keeps the instrument (and its callback) registered.
    _instrument: ObservableCounter<u64>,
    _label: std::marker::PhantomData<L>,
}

impl<L: LabelSet> LabelledCounter<L> {
    pub fn new(
        meter: &Meter,
        name: &'static str,
        description: &'static str,
        unit: &'static str,
        key: &'static str,
    ) -> Self {
        let values: Arc<[AtomicU64]> = L::ALL.iter().map(|_| AtomicU64::new(0)).collect();
        let observed = values.clone();
        let instrument = meter
            .u64_observable_counter(name)
            .with_description(description)
            .with_unit(unit)
            .with_callback(move |observer| {
                for label in L::ALL {
                    let value = observed[label.index()].load(Ordering::Relaxed);
                    observer.observe(value, &[KeyValue::new(key, label.as_str())]);
                }
            })
            .build();
        Self {
            values,
            _instrument: instrument,
            _label: std::marker::PhantomData,
        }
    }

    pub fn add(&self, label: L, n: u64) {
        self.values[label.index()].fetch_add(n, Ordering::Relaxed);
    }
}
