//! Process metrics (CPU, memory, file descriptors) from the prometheus crate's
//! process collector, read in the background.
//!
//! Counting open file descriptors lists `/proc/self/fd`, one entry per socket,
//! so a scrape of a node with 15,000 connections would spend most of its time
//! there. Refreshing on a background thread every [`REFRESH`] keeps `/metrics`
//! latency flat in the number of connections; the process values are at most
//! that old, which is well inside any scrape interval.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;

/// How often the process metrics are re-read.
pub const REFRESH: Duration = Duration::from_secs(2);

/// A collector serving the latest background reading of another collector.
pub struct Cached {
    descs: Vec<Desc>,
    latest: Arc<Mutex<Vec<MetricFamily>>>,
}

impl Cached {
    /// Reads `inner` once now, then every [`REFRESH`] on a thread of its own,
    /// which ends when this collector is dropped.
    pub fn new<C: Collector + 'static>(inner: C) -> Self {
        let descs = inner.desc().into_iter().cloned().collect();
        let latest = Arc::new(Mutex::new(inner.collect()));
        let weak: Weak<Mutex<Vec<MetricFamily>>> = Arc::downgrade(&latest);
        let spawned = std::thread::Builder::new()
            .name("wsgate-process-metrics".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(REFRESH);
                    let Some(latest) = weak.upgrade() else {
                        return;
                    };
                    let families = inner.collect();
                    *latest.lock().unwrap_or_else(|p| p.into_inner()) = families;
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "process metrics will not refresh");
        }
        Self { descs, latest }
    }
}

impl Collector for Cached {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        crate::sync::lock(&self.latest).clone()
    }
}
