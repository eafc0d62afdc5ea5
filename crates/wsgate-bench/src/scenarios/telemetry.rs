//! The `telemetry` scenario: the rooms shape under four telemetry settings,
//! and what telemetry adds to the server's CPU per delivery over
//! `OTEL_SDK_DISABLED=true`.
//!
//! The settings run interleaved, round after round, and each reports its
//! median round, so a neighbour's burst on this shared machine lands on one
//! round of every setting rather than on all rounds of one. The traced
//! settings export every sampled span, and their CPU is read once the exporter
//! has drained (its backlog is part of the cost); the batch span processor's
//! queue is sized so that nothing is dropped, and when every message is
//! traced, anything short of two exported spans per message fails the
//! scenario.
//!
//! CPU time still moves by several percent between rounds, and a server doing
//! more work per message collects bigger write batches, which hides part of
//! its own overhead; scripts/profile's instruction counts have neither problem
//! and are what docs/performance.md compares with the targets.

use super::measure::OnHold;
use super::runner::{Env, Runner, env};
use super::table::{Row, median, rounded};

/// 10 publishers × 5,000 messages, 500,000 deliveries. Every message traced
/// makes 100,000 spans: its span queue is sized to hold them all while the
/// exporter catches up.
const MESSAGES: u64 = 50_000;

/// The spans of a traced message on one node: `send` and `process`.
pub const SPANS_PER_MESSAGE: u64 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Disabled,
    Metrics,
    Sampled1Pct,
    AllTraced,
}

const VARIANTS: [Variant; 4] = [
    Variant::Disabled,
    Variant::Metrics,
    Variant::Sampled1Pct,
    Variant::AllTraced,
];

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Metrics => "metrics",
            Self::Sampled1Pct => "sampled_1pct",
            Self::AllTraced => "all_traced",
        }
    }

    /// The server's environment, and the spans it must have exported (0: no
    /// export, the CPU window ends when deliveries settle).
    fn setting(self, endpoint: &str) -> (Env, u64) {
        let export = [
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ];
        match self {
            Self::Disabled => (env(&[("OTEL_SDK_DISABLED", "true")]), 0),
            Self::Metrics => (env(&[("OTEL_TRACES_EXPORTER", "none")]), 0),
            Self::Sampled1Pct => {
                let mut e = env(&export);
                e.extend(env(&[
                    ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "0.01"),
                ]));
                // Half the expected 1 %: never short by chance.
                (e, SPANS_PER_MESSAGE * MESSAGES / 100 / 2)
            }
            // The gateway's own span queue and batch sizes: what ships must
            // export every span of a node running flat out.
            Self::AllTraced => {
                let mut e = env(&export);
                e.extend(env(&[("OTEL_TRACES_SAMPLER", "always_on")]));
                (e, SPANS_PER_MESSAGE * MESSAGES)
            }
        }
    }
}

/// One round of one setting.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    variant: Variant,
    /// Server CPU ns per delivery, to 0.1 ns.
    ns_per_delivery: f64,
    /// Deliveries per second, whole.
    per_sec: f64,
    p50: f64,
    p99: f64,
    delivered: u64,
    lost: u64,
    duplicated: u64,
    /// Messages published and spans exported (traced settings).
    published: u64,
    spans: u64,
}

/// The setting each slot of a round runs: each round starts one setting
/// later, so none always follows another.
fn order(round: usize) -> [Variant; 4] {
    std::array::from_fn(|i| VARIANTS[(round + i) % VARIANTS.len()])
}

pub async fn telemetry(r: &mut Runner) -> anyhow::Result<()> {
    let endpoint = r.collector_endpoint().await?;
    let rounds = r.telemetry_rounds;
    let mut samples = Vec::new();
    for round in 0..rounds {
        for variant in order(round) {
            r.say(&format!(
                "telemetry: round {} of {rounds}, {}",
                round + 1,
                variant.name()
            ));
            samples.push(one_round(r, variant, &endpoint).await?);
        }
    }
    r.rows.extend(rows(&samples, rounds));
    Ok(())
}

async fn one_round(r: &mut Runner, variant: Variant, endpoint: &str) -> anyhow::Result<Sample> {
    let (env, min_spans) = variant.setting(endpoint);
    let server = r.start_server("telemetry", &env).await?;
    // The bench holds its connections once deliveries settle, so no setting's
    // CPU window includes closing them. A traced setting's window ends when
    // its exporter has drained (the export is part of its cost), checked to
    // have exported at least min_spans spans.
    let on_hold = match min_spans {
        0 => OnHold::Release,
        min_spans => OnHold::ExportThenEndWindow { min_spans },
    };
    let flags = format!(
        "--connections 100 --rooms 10 --publishers 10 --messages {} --window 8 --hold 10m",
        MESSAGES / 10
    );
    let (report, m) = r.run_bench("telemetry", &server, &flags, on_hold).await?;
    let name = variant.name();
    if min_spans > 0 && m.exported_spans < min_spans {
        r.failed.push(format!(
            "telemetry {name}: {} spans exported for {MESSAGES} messages (at least {min_spans} expected)",
            m.exported_spans
        ));
    }
    let log = server.log.clone();
    server.stop().await;
    // After the stop: the SDK's shutdown warning is the one with the count.
    let warnings = super::server::dropped_span_warnings_in(&log);
    if report.lost != 0 || report.duplicated != 0 {
        r.failed
            .push(format!("telemetry {name}: lost or duplicated deliveries"));
    }
    if !warnings.is_empty() {
        for w in &warnings {
            eprintln!("{w}");
        }
        r.failed
            .push(format!("telemetry {name}: spans dropped unexported"));
    }
    let delivered = report.delivered.max(1) as f64;
    Ok(Sample {
        variant,
        ns_per_delivery: rounded(m.cpu_ns.unwrap_or(0) as f64 / delivered, 1),
        per_sec: rounded(report.deliveries_per_sec, 0),
        p50: report.latency_ms.p50,
        p99: report.latency_ms.p99,
        delivered: report.delivered,
        lost: report.lost,
        duplicated: report.duplicated,
        published: report.published,
        spans: m.exported_spans,
    })
}

/// A row per setting: medians over its rounds, and its CPU per delivery
/// against the SDK disabled.
fn rows(samples: &[Sample], rounds: usize) -> Vec<Row> {
    let of = |v: Variant| samples.iter().filter(move |s| s.variant == v);
    let median_of = |v: Variant, field: fn(&Sample) -> f64| {
        rounded(median(&mut of(v).map(field).collect::<Vec<_>>()), 1)
    };
    let base = median_of(Variant::Disabled, |s| s.ns_per_delivery);
    VARIANTS
        .iter()
        .map(|&v| {
            let total = median_of(v, |s| s.ns_per_delivery);
            let spread = of(v)
                .map(|s| format!("{:.0}", s.ns_per_delivery))
                .collect::<Vec<_>>()
                .join("/");
            let change = (total / base - 1.0) * 100.0;
            let per_span = match v {
                Variant::AllTraced => traced_cost(samples, base),
                _ => String::new(),
            };
            Row([
                format!("telemetry: {}", v.name()),
                of(v).next_back().map_or(0, |s| s.delivered).to_string(),
                format!("{}", median_of(v, |s| s.per_sec).trunc()),
                format!("{:.3}", total / 1000.0),
                format!("{:.1} ms", median_of(v, |s| s.p50)),
                format!("{:.1} ms", median_of(v, |s| s.p99)),
                of(v).map(|s| s.lost).sum::<u64>().to_string(),
                of(v).map(|s| s.duplicated).sum::<u64>().to_string(),
                "-".to_owned(),
                format!(
                    "rooms shape ×2.5, median of {rounds} interleaved rounds (ns per delivery: {spread}); {change:+.1}% CPU per delivery vs SDK disabled{per_span}"
                ),
            ])
        })
        .collect()
}

/// What tracing every message costs over the SDK disabled (`base`, ns of CPU
/// per delivery): the median all-traced round's extra CPU per traced message
/// and per exported span, and its ratio to SDK-off.
fn traced_cost(samples: &[Sample], base: f64) -> String {
    let mut traced: Vec<_> = samples
        .iter()
        .filter(|s| s.variant == Variant::AllTraced)
        .collect();
    traced.sort_by(|a, b| a.ns_per_delivery.total_cmp(&b.ns_per_delivery));
    let Some(s) = traced.get(traced.len() / 2) else {
        return String::new();
    };
    let extra_ns = (s.ns_per_delivery - base) * s.delivered as f64;
    let per = |n: u64| extra_ns / n.max(1) as f64 / 1000.0;
    format!(
        "; {:.2} µs of CPU per traced message and {:.2} µs per exported span over SDK disabled ({} spans for {} messages), {:.2}× SDK-off",
        per(s.published),
        per(s.spans),
        s.spans,
        s.published,
        s.ns_per_delivery / base
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(variant: Variant, ns: f64) -> Sample {
        Sample {
            variant,
            ns_per_delivery: ns,
            per_sec: 400_000.0,
            p50: 1.23,
            p99: 4.56,
            delivered: 500_000,
            lost: 0,
            duplicated: 0,
            published: 50_000,
            spans: if variant == Variant::AllTraced {
                100_000
            } else {
                0
            },
        }
    }

    #[test]
    fn rounds_interleave_the_settings() {
        let names = |r| order(r).map(Variant::name);
        assert_eq!(
            names(0),
            ["disabled", "metrics", "sampled_1pct", "all_traced"]
        );
        assert_eq!(
            names(1),
            ["metrics", "sampled_1pct", "all_traced", "disabled"]
        );
        assert_eq!(names(4), names(0));
    }

    #[test]
    fn traced_settings_must_export_spans() {
        assert_eq!(Variant::Disabled.setting("e").1, 0);
        assert_eq!(Variant::Metrics.setting("e").1, 0);
        assert_eq!(Variant::Sampled1Pct.setting("e").1, 500);
        let (env, min) = Variant::AllTraced.setting("http://127.0.0.1:4317");
        assert_eq!(min, 100_000);
        assert!(
            !env.iter().any(|(k, _)| k.starts_with("OTEL_BSP_MAX")),
            "the shipped queue and batch sizes"
        );
        assert!(env.contains(&(
            "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            "http://127.0.0.1:4317".into()
        )));
    }

    #[test]
    fn rows_report_medians_against_the_sdk_disabled() {
        let mut samples = Vec::new();
        for (d, m) in [(1000.0, 1100.0), (1200.0, 1300.0), (1100.0, 1200.0)] {
            samples.push(sample(Variant::Disabled, d));
            samples.push(sample(Variant::Metrics, m));
            samples.push(sample(Variant::Sampled1Pct, m));
            samples.push(sample(Variant::AllTraced, 2.0 * d));
        }
        let rows = rows(&samples, 3);
        assert_eq!(rows.len(), 4);
        assert_eq!(
            rows[0].render(),
            "| telemetry: disabled | 500000 | 400000 | 1.100 | 1.2 ms | 4.6 ms | 0 | 0 | - | rooms shape ×2.5, median of 3 interleaved rounds (ns per delivery: 1000/1200/1100); +0.0% CPU per delivery vs SDK disabled |"
        );
        assert!(
            rows[1].0[9].ends_with("+9.1% CPU per delivery vs SDK disabled"),
            "{:?}",
            rows[1]
        );
        assert_eq!(rows[3].0[3], "2.200");
        // 1,100 ns more per delivery, 500,000 deliveries: 550 ms over 50,000
        // messages and 100,000 spans.
        assert!(
            rows[3].0[9].ends_with(
                "; 11.00 µs of CPU per traced message and 5.50 µs per exported span over SDK disabled (100000 spans for 50000 messages), 2.00× SDK-off"
            ),
            "{:?}",
            rows[3]
        );
        assert!(!rows[2].0[9].contains("per exported span"));
    }
}
