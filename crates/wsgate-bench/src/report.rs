//! The result of a run: one struct, printed as a table or as one JSON object with
//! the same fields.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::args::{Pace, Plan};
use super::churn::ChurnReport;
use super::publisher::Outcome;
use super::ramp::Ramp;
use super::stats::Resumes;
use super::stats::Totals;

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub urls: Vec<String>,
    pub connections: usize,
    /// Connections that connected and got `subscribed`.
    pub connected: usize,
    pub rooms: usize,
    pub publishers: usize,
    pub messages_per_publisher: u64,
    pub payload_bytes: usize,
    /// Closed loop: un-acked publishes allowed per publisher.
    pub window: Option<u32>,
    /// Open loop: total messages per second.
    pub rate: Option<f64>,
    pub published: u64,
    pub acked: u64,
    pub expected_deliveries: u64,
    /// Distinct deliveries seen.
    pub delivered: u64,
    /// Expected deliveries that never arrived, whatever the reason.
    pub lost: u64,
    /// Deliveries seen more than once (each extra copy counts).
    pub duplicated: u64,
    /// Error frames from the server, by code.
    pub errors: BTreeMap<String, u64>,
    /// Connections that failed to connect or subscribe, by reason.
    pub connect_failures: BTreeMap<String, u64>,
    /// Connections the server ended during the run, by close code (1006: no
    /// close frame).
    pub closed: BTreeMap<String, u64>,
    /// Publishers that gave up waiting for acks (see --ack-timeout).
    pub stalled_publishers: u64,
    /// Frames the bench could not attribute to this run.
    pub unexpected_frames: u64,
    /// Whether --timeout cut the run short.
    pub timed_out: bool,
    /// Time to connect and subscribe every connection.
    pub connect_secs: f64,
    /// From the first publish to the last publisher's last answer.
    pub publish_secs: f64,
    /// From the first publish to the last delivery or answer.
    pub elapsed_secs: f64,
    /// Published messages per second over `publish_secs`.
    pub publish_rate: f64,
    /// Distinct deliveries per second over `elapsed_secs`.
    pub deliveries_per_sec: f64,
    pub latency_ms: Latency,
    /// What the `--churn` connections did, when there were any.
    pub churn: Option<ChurnReport>,
    /// `--drop-every`: the receivers' drops and what their resumes were told.
    pub resumes: Option<Resumes>,
    /// `--drop-every`: lost and duplicated deliveries of each publisher's
    /// messages, across its room's receivers.
    pub per_publisher: Vec<PublisherLoss>,
    /// No loss, no duplicate, no error of any kind: the exit status is 0.
    pub ok: bool,
}

/// Publish→delivery latency percentiles, in milliseconds with microsecond precision.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    pub fn from_micros(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            samples: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

impl Report {
    /// The report of a run, from everything the phases observed.
    pub fn new(
        plan: &Plan,
        ramp: &Ramp,
        outcomes: &[Outcome],
        totals: Totals,
        start: Instant,
        publish_end: Instant,
        timed_out: bool,
    ) -> Self {
        let published: u64 = outcomes.iter().map(|o| o.published).sum();
        // When the last publisher had every publish answered, if they all did.
        let finished = outcomes
            .iter()
            .map(|o| o.finished)
            .collect::<Option<Vec<_>>>()
            .and_then(|f| f.into_iter().max());
        let publishers_done = finished.unwrap_or(publish_end);
        let publish_secs = (publishers_done - start).as_secs_f64();
        let last = totals
            .last_delivery
            .map_or(publishers_done, |d| d.max(publishers_done));
        let elapsed_secs = last.saturating_duration_since(start).as_secs_f64();
        let per_sec = |n: u64, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let expected = plan.expected_deliveries();
        let mut closed = totals.closes;
        let write_failures = outcomes.iter().filter(|o| o.write_failed).count() as u64;
        if write_failures > 0 {
            *closed.entry("write failed".to_owned()).or_default() += write_failures;
        }
        Self {
            urls: plan.targets.iter().map(|t| t.url.clone()).collect(),
            connections: plan.connections,
            connected: ramp.connected,
            rooms: plan.rooms,
            publishers: plan.publishers,
            messages_per_publisher: plan.messages,
            payload_bytes: plan.payload,
            window: plan.window(),
            rate: match plan.pace {
                Pace::Rate { per_publisher } => Some(per_publisher * plan.publishers as f64),
                Pace::Window(_) => None,
            },
            published,
            acked: totals.acked,
            expected_deliveries: expected,
            delivered: totals.delivered,
            lost: expected.saturating_sub(totals.delivered),
            duplicated: totals.duplicated,
            errors: totals.error_frames,
            connect_failures: ramp.failures.clone(),
            closed,
            stalled_publishers: outcomes.iter().filter(|o| o.stalled).count() as u64,
            unexpected_frames: totals.unexpected,
            timed_out,
            connect_secs: ramp.secs,
            publish_secs,
            elapsed_secs,
            publish_rate: per_sec(published, publish_secs),
            deliveries_per_sec: per_sec(totals.delivered, elapsed_secs),
            latency_ms: Latency::from_micros(&totals.latency),
            churn: None,
            resumes: plan.drop_every.map(|_| totals.resumes),
            per_publisher: match plan.drop_every {
                None => Vec::new(),
                Some(_) => (0..plan.publishers)
                    .map(|p| {
                        let expected = plan.messages * plan.members(plan.room_of(p)) as u64;
                        let tally = totals.per_publisher.get(&p).copied().unwrap_or_default();
                        PublisherLoss {
                            publisher: p,
                            expected,
                            delivered: tally.delivered,
                            lost: expected.saturating_sub(tally.delivered),
                            duplicated: tally.duplicated,
                        }
                    })
                    .collect(),
            },
            ok: false,
        }
    }
}

/// One publisher's messages across the receivers of its room.
#[derive(Debug, Clone, Serialize)]
pub struct PublisherLoss {
    pub publisher: usize,
    /// Its messages times the members of its room.
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
}

impl Report {
    /// Whether the run was clean; sets `ok`.
    pub fn judge(&mut self) {
        self.ok = self.lost == 0
            && self.duplicated == 0
            && self.errors.is_empty()
            && self.connect_failures.is_empty()
            && self.closed.is_empty()
            && self.stalled_publishers == 0
            && self.unexpected_frames == 0
            && self.churn.as_ref().is_none_or(|c| c.failures == 0)
            && self.resumes.as_ref().is_none_or(|r| r.failures == 0)
            && !self.timed_out;
    }

    /// Why the run is not clean, one phrase per problem.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let mut count = |n: u64, what: &str| {
            if n > 0 {
                p.push(format!("{n} {what}"));
            }
        };
        count(self.lost, "lost");
        count(self.duplicated, "duplicated");
        count(self.errors.values().sum(), "error frames");
        count(self.connect_failures.values().sum(), "connect failures");
        count(
            self.closed.values().sum(),
            "connections closed by the server",
        );
        count(self.stalled_publishers, "publishers stalled without acks");
        count(self.unexpected_frames, "unexpected frames");
        count(
            self.churn.as_ref().map_or(0, |c| c.failures),
            "churners failed",
        );
        count(
            self.resumes.as_ref().map_or(0, |r| r.failures),
            "reconnects failed",
        );
        if self.timed_out {
            p.push("timed out".to_owned());
        }
        p
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report always serializes")
    }

    pub fn to_table(&self) -> String {
        let mut t = String::new();
        let mut row = |name: &str, value: String| {
            let _ = writeln!(t, "  {name:<20} {value}");
        };
        let pace = match (self.window, self.rate) {
            (Some(w), _) => format!("closed loop, window {w}"),
            (None, Some(r)) => format!("open loop, {} msgs/s", grouped(r)),
            (None, None) => String::new(),
        };
        row("url", self.urls.join(", "));
        row(
            "connections",
            format!(
                "{} ({} connected in {:.3} s)",
                self.connections, self.connected, self.connect_secs
            ),
        );
        row("rooms", self.rooms.to_string());
        row(
            "publishers",
            format!(
                "{} × {} messages, {}-byte payload, {pace}",
                self.publishers, self.messages_per_publisher, self.payload_bytes
            ),
        );
        row("published", self.published.to_string());
        row("acked", self.acked.to_string());
        row("expected deliveries", self.expected_deliveries.to_string());
        row("delivered", self.delivered.to_string());
        row("lost", self.lost.to_string());
        row("duplicated", self.duplicated.to_string());
        row("errors", counts(&self.errors));
        row("connect failures", counts(&self.connect_failures));
        row("closed by server", counts(&self.closed));
        row("stalled publishers", self.stalled_publishers.to_string());
        row("unexpected frames", self.unexpected_frames.to_string());
        row(
            "elapsed",
            format!(
                "{:.3} s (publishing {:.3} s)",
                self.elapsed_secs, self.publish_secs
            ),
        );
        row(
            "publish rate",
            format!("{} msgs/s", grouped(self.publish_rate)),
        );
        row("deliveries/s", grouped(self.deliveries_per_sec));
        if let Some(c) = &self.churn {
            row(
                "churn",
                format!(
                    "{} joins, {} leaves by {} connections ({} joins/s, asked {}); {} failed",
                    c.joins,
                    c.leaves,
                    c.connections,
                    grouped(c.joins_per_sec),
                    grouped(c.target_joins_per_sec),
                    c.failures
                ),
            );
        }
        if let Some(r) = &self.resumes {
            row(
                "drops",
                format!(
                    "{} resumed: {} recovered, {} not recovered; {} reconnects failed",
                    r.drops, r.recovered, r.not_recovered, r.failures
                ),
            );
            let worst = self
                .per_publisher
                .iter()
                .max_by_key(|p| (p.lost, p.duplicated));
            if let Some(w) = worst {
                row(
                    "worst publisher",
                    format!(
                        "#{}: {} of {} lost, {} duplicated",
                        w.publisher, w.lost, w.expected, w.duplicated
                    ),
                );
            }
        }
        let l = &self.latency_ms;
        for (name, v) in [
            ("latency p50", l.p50),
            ("latency p90", l.p90),
            ("latency p99", l.p99),
            ("latency p99.9", l.p999),
            ("latency max", l.max),
        ] {
            row(name, format!("{v:.3} ms"));
        }
        let verdict = if self.ok {
            "OK: no loss, no duplicates, no errors (exit status 0)".to_owned()
        } else {
            format!("FAILED: {} (exit status 1)", self.problems().join(", "))
        };
        format!("wsgate-bench\n{t}  {:<20} {verdict}\n", "result")
    }
}

fn counts(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".to_owned();
    }
    m.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A rate rounded to a whole number with thousands separators: 1234567 → 1,234,567.
fn grouped(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(grouped(0.4), "0");
        assert_eq!(grouped(999.0), "999");
        assert_eq!(grouped(1000.0), "1,000");
        assert_eq!(grouped(1_234_567.8), "1,234,568");
    }

    #[test]
    fn latency_percentiles_in_ms() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for micros in 1..=1000 {
            h.record(micros).unwrap();
        }
        let l = Latency::from_micros(&h);
        assert_eq!(l.samples, 1000);
        assert_eq!(l.p50, 0.5);
        assert_eq!(l.max, 1.0);
        assert_eq!(Latency::from_micros(&Histogram::new(3).unwrap()).samples, 0);
    }
}
