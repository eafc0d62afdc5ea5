//! The result: one markdown table, a row per scenario, with the columns and
//! number formats `scripts/bench` printed.

use crate::Report;

/// The table's header and alignment lines.
pub const HEADER: &str = "| scenario | deliveries | deliveries/s | server CPU µs/delivery | p50 | p99 | lost | duplicated | server RSS | shape / notes |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|";

/// One row: ten cells.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub [String; 10]);

impl Row {
    /// A row without deliveries (idle, scrape): only the RSS and the notes.
    pub fn held(scenario: &str, rss_kib: u64, notes: String) -> Self {
        let dash = || "-".to_owned();
        Self([
            scenario.to_owned(),
            dash(),
            dash(),
            dash(),
            dash(),
            dash(),
            dash(),
            dash(),
            format!("{} MiB", rss_kib / 1024),
            notes,
        ])
    }

    /// The columns every publishing scenario fills from its report.
    pub fn publishing(
        scenario: &str,
        report: &Report,
        cpu_ns: Option<u64>,
        rss_kib: u64,
        notes: String,
    ) -> Self {
        Self([
            scenario.to_owned(),
            report.delivered.to_string(),
            format!("{:.0}", report.deliveries_per_sec),
            cpu_per_delivery_us(cpu_ns, report.delivered),
            format!("{} ms", json_number(report.latency_ms.p50)),
            format!("{} ms", json_number(report.latency_ms.p99)),
            report.lost.to_string(),
            report.duplicated.to_string(),
            format!("{} MiB", rss_kib / 1024),
            notes,
        ])
    }

    pub fn render(&self) -> String {
        format!("| {} |", self.0.join(" | "))
    }
}

/// The whole table: header and rows.
pub fn render(rows: &[Row]) -> String {
    let mut out = String::from(HEADER);
    for row in rows {
        out.push('\n');
        out.push_str(&row.render());
    }
    out
}

/// Server CPU µs per delivery with two decimals, or `n/a` without a CPU
/// window or without deliveries.
pub fn cpu_per_delivery_us(cpu_ns: Option<u64>, delivered: u64) -> String {
    match cpu_ns {
        Some(ns) if delivered > 0 => format!("{:.2}", ns as f64 / 1000.0 / delivered as f64),
        _ => "n/a".to_owned(),
    }
}

/// A number as the bench's JSON report writes it (`1.738`, `12.0`), which is
/// how the table has always shown latencies.
pub fn json_number(x: f64) -> String {
    serde_json::Value::from(x).to_string()
}

/// The median (the mean of the two middle values for an even count); 0 for
/// none.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    (values[n.div_ceil(2) - 1] + values[n / 2]) / 2.0
}

/// Rounds to `decimals` places, as a `printf "%.Nf"` the old script fed to
/// its next step did.
pub fn rounded(x: f64, decimals: usize) -> f64 {
    format!("{x:.decimals$}").parse().unwrap_or(x)
}

/// A clean report of the fanout shape, for tests.
#[cfg(test)]
pub fn test_report() -> Report {
    Report {
        urls: vec![],
        connections: 1000,
        connected: 1000,
        rooms: 1,
        publishers: 1,
        messages_per_publisher: 1000,
        payload_bytes: 64,
        window: Some(4),
        rate: None,
        published: 1000,
        acked: 1000,
        expected_deliveries: 1_000_000,
        delivered: 1_000_000,
        lost: 0,
        duplicated: 0,
        errors: Default::default(),
        connect_failures: Default::default(),
        closed: Default::default(),
        stalled_publishers: 0,
        unexpected_frames: 0,
        timed_out: false,
        connect_secs: 0.5,
        publish_secs: 2.0,
        elapsed_secs: 2.0,
        publish_rate: 500.0,
        deliveries_per_sec: 499_999.6,
        latency_ms: crate::Latency {
            samples: 1_000_000,
            p50: 1.5,
            p90: 3.0,
            p99: 12.0,
            p999: 13.0,
            max: 14.0,
        },
        churn: None,
        resumes: None,
        per_publisher: vec![],
        ok: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), 0.0);
        assert_eq!(median(&mut [3.0]), 3.0);
        assert_eq!(median(&mut [5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn cpu_per_delivery() {
        assert_eq!(cpu_per_delivery_us(Some(1_700_000), 1_000), "1.70");
        assert_eq!(cpu_per_delivery_us(None, 1_000), "n/a");
        assert_eq!(cpu_per_delivery_us(Some(5), 0), "n/a");
    }

    #[test]
    fn numbers_as_json_writes_them() {
        assert_eq!(json_number(1.738), "1.738");
        assert_eq!(json_number(12.0), "12.0");
        assert_eq!(rounded(2.345_67, 1), 2.3);
    }

    #[test]
    fn renders_the_header_and_rows() {
        let row = Row::held("idle", 300 * 1024 + 5, "15000 idle conns".into());
        let table = render(&[row]);
        let lines: Vec<_> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0]
                .starts_with("| scenario | deliveries | deliveries/s | server CPU µs/delivery |")
        );
        assert_eq!(lines[1].matches('|').count(), 11);
        assert_eq!(
            lines[2],
            "| idle | - | - | - | - | - | - | - | 300 MiB | 15000 idle conns |"
        );
    }

    #[test]
    fn a_publishing_row_from_a_report() {
        let report = test_report();
        let row = Row::publishing(
            "fanout",
            &report,
            Some(1_700_000_000),
            40 * 1024,
            "n".into(),
        );
        assert_eq!(
            row.render(),
            "| fanout | 1000000 | 500000 | 1.70 | 1.5 ms | 12.0 ms | 0 | 0 | 40 MiB | n |"
        );
    }
}
