//! `/metrics` as a map of series to values.

use std::collections::BTreeMap;

use super::poll_until;

/// `/metrics` as `series → value`, where a series is written exactly as in the
/// exposition, e.g. `websocket_errors_total{error_type="too_large"}`.
#[derive(Debug)]
pub struct Metrics(pub BTreeMap<String, f64>);

impl Metrics {
    pub fn parse(text: &str) -> Self {
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let (name, value) = l.rsplit_once(' ').expect("series and value");
                (name.to_owned(), value.parse().expect("numeric value"))
            })
            .collect();
        Self(series)
    }

    /// The value of one series; a missing series fails the test.
    #[track_caller]
    pub fn get(&self, series: &str) -> f64 {
        *self
            .0
            .get(series)
            .unwrap_or_else(|| panic!("no series {series}; have: {:#?}", self.0))
    }

    /// The value of a series, or 0 when it does not exist (yet).
    pub fn get_or_zero(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }
}

/// Scrapes with `scrape` until `ready` holds, failing the test after the
/// deadline with `what` was awaited: for a gateway in this process or the
/// real binary alike.
pub async fn metrics_when(
    what: &str,
    ready: impl Fn(&Metrics) -> bool,
    scrape: impl AsyncFn() -> Metrics,
) -> Metrics {
    poll_until(async || {
        let metrics = scrape().await;
        if ready(&metrics) {
            Ok(metrics)
        } else {
            Err(format!("metrics: {what}"))
        }
    })
    .await
}
