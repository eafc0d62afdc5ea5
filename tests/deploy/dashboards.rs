//! The dashboards (dashboards/*.json) and Grafana's provisioning, read as
//! Grafana reads them: every panel has a title, a description and a unit;
//! every rate window is `$__rate_interval`; every gateway series is filtered
//! by `{job=~"$job", instance=~"$instance"}`; every metric is in the README's
//! metric contract; every data source a panel names is provisioned. What the
//! queries return on a real Prometheus is `dashboards_live`'s part; this
//! module also gives it the queries, the variables and the panels allowed to
//! be empty.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value as Json;

use crate::checks::{Checks, checks, text, yaml};
use crate::grafana::{dashboards, datasource, datasources, links, variables};
use crate::monitoring::panels;

/// Why the broker panels may be empty on the embedded broker.
pub const NATS_ONLY: &str =
    "NATS only (--nats-url); without nats-server the gateway runs the in-memory broker";

/// Panels (by title) whose queries may return no data on a gateway under the
/// mix, with the reason. Every other panel reads the core gateway's own
/// series, which the mix feeds, so an empty result there means a wrong metric
/// name, label or filter. These must not be rejected either way.
pub const MAY_BE_EMPTY: [(&str, &str); 8] = [
    // Broker series exist only on a node started with --nats-url; with a
    // nats-server these four must have data too.
    ("Broker publish latency p99 by node", NATS_ONLY),
    ("Broker connected", NATS_ONLY),
    ("Broker reconnects", NATS_ONLY),
    ("Broker messages sent / consumed", NATS_ONLY),
    // Span metrics are made by the OpenTelemetry Collector's spanmetrics
    // connector; no collector runs here (the gateway runs OTEL_TRACES_EXPORTER=none).
    (
        "process span p99 (span metrics, exemplars)",
        "span metrics come from the collector, not run here",
    ),
    (
        "Span rate by name and status",
        "span metrics come from the collector, not run here",
    ),
    // The export counter is created by the OTLP exporter, which is off here.
    (
        "Span export (OTLP)",
        "exists only with an OTLP trace exporter; the check runs OTEL_TRACES_EXPORTER=none",
    ),
    // The collector's own metrics (its internal telemetry on :8888).
    (
        "Spans lost in the collector (before Jaeger)",
        "the collector's own metrics; no collector runs here",
    ),
];

/// Trace-to-metrics links (Jaeger data source) that read span metrics may be
/// empty for the same reason.
pub const LINK_MAY_BE_EMPTY_METRIC: &str = "traces_span_metrics_";

/// Series that come from elsewhere than the gateway's /metrics and so carry
/// no job/instance of a gateway target: span metrics, the collector's own.
const FOREIGN_PREFIXES: [&str; 2] = ["traces_span_metrics_", "otelcol_"];

/// Words of PromQL that look like metric names.
const PROMQL_WORDS: [&str; 15] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
    "atan2",
    "inf",
    "nan",
    "le",
];

/// Series names from the README's metrics table: exact names and prefixes
/// (rows written `name_*`).
fn readme_contract() -> (BTreeSet<String>, BTreeSet<String>) {
    static ROW: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?m)^\| `([a-z_]+)(_\*)?` \|").expect("regex"));
    let readme = text("README.md");
    let section = readme
        .split_once("## Metrics")
        .map(|(_, rest)| rest.split("\n## ").next().unwrap_or_default())
        .unwrap_or_default();
    let (mut exact, mut prefixes) = (BTreeSet::new(), BTreeSet::new());
    for row in ROW.captures_iter(section) {
        if row.get(2).is_some() {
            prefixes.insert(format!("{}_", &row[1]));
        } else {
            exact.insert(row[1].to_owned());
        }
    }
    (exact, prefixes)
}

static STRING: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#""(?:[^"\\]|\\.)*""#).expect("regex"));
static BRACES: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\{[^}]*\}").expect("regex"));
static BRACKETS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\[([^\]]*)\]").expect("regex"));
static GROUPING: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)").expect("regex")
});
static NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[A-Za-z_:][A-Za-z0-9_:]*").expect("regex"));
static SELECTOR: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}").expect("regex"));

/// The metric names of an expression: the names left once strings, label
/// matchers, ranges and grouping lists are gone, less functions and keywords.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let s = STRING.replace_all(expr, "\"\"");
    let s = BRACES.replace_all(&s, " ");
    let s = BRACKETS.replace_all(&s, " ");
    let s = GROUPING.replace_all(&s, " ");
    NAME.find_iter(&s)
        .filter(|m| !s[m.end()..].trim_start().starts_with('('))
        .map(|m| m.as_str())
        .filter(|name| !PROMQL_WORDS.contains(&name.to_lowercase().as_str()))
        .map(str::to_owned)
        .collect()
}

fn foreign(metric: &str) -> bool {
    FOREIGN_PREFIXES.iter().any(|p| metric.starts_with(p))
}

/// One panel query's rules.
fn check_expr(
    c: &mut Checks,
    contract: &(BTreeSet<String>, BTreeSet<String>),
    title: &str,
    expr: &str,
) {
    let (exact, prefixes) = contract;
    for window in BRACKETS.captures_iter(expr) {
        c.check(
            &window[1] == "$__rate_interval",
            format!(
                "panel {title:?}: range [{}] is not [$__rate_interval]",
                &window[1]
            ),
        );
    }
    let names = metric_names(expr);
    for name in &names {
        c.check(
            exact.contains(name) || foreign(name) || prefixes.iter().any(|p| name.starts_with(p)),
            format!("panel {title:?}: metric {name:?} is not in the README's metric contract"),
        );
    }
    let selected: Vec<(&str, &str)> = SELECTOR
        .captures_iter(expr)
        .map(|c| (c.get(1).unwrap().as_str(), c.get(2).unwrap().as_str()))
        .collect();
    let bare: Vec<&String> = names
        .iter()
        .filter(|n| !selected.iter().any(|(m, _)| m == n))
        .collect();
    c.check(
        bare.is_empty(),
        format!("panel {title:?}: selector without braces: {bare:?}"),
    );
    for (metric, matchers) in selected.into_iter().filter(|(m, _)| !foreign(m)) {
        c.check(
            matchers.contains(r#"job=~"$job""#) && matchers.contains(r#"instance=~"$instance""#),
            format!(r#"panel {title:?}: {metric} lacks {{job=~"$job", instance=~"$instance"}}"#),
        );
    }
}

fn check_dashboard(c: &mut Checks, name: &str, dash: &Json, uids: &[&str]) {
    let contract = readme_contract();
    c.check(
        !contract.0.is_empty(),
        "could not read the metric contract from README.md",
    );
    let schema = dash["schemaVersion"].as_u64().unwrap_or(0);
    c.check(schema >= 39, format!("{name}: schemaVersion {schema} < 39"));
    c.check(
        dash["uid"].as_str().is_some_and(|u| !u.is_empty())
            && dash["title"].as_str().is_some_and(|t| !t.is_empty()),
        format!("{name}: the dashboard needs a uid and a title"),
    );
    let (mut ids, mut titles) = (Vec::new(), BTreeSet::new());
    for p in panels(&dash["panels"]) {
        let id = p["id"].to_string();
        c.check(
            !ids.contains(&id),
            format!("{name}: duplicate panel id {id}"),
        );
        ids.push(id.clone());
        let title = p["title"].as_str().unwrap_or_default();
        c.check(
            !title.is_empty(),
            format!("{name}: panel {id} has no title"),
        );
        if p["type"] == "row" {
            continue;
        }
        titles.insert(title);
        let described = p["description"].as_str().is_some_and(|d| !d.is_empty());
        c.check(described, format!("panel {title:?} has no description"));
        let targets = p["targets"].as_array().map_or(&[][..], Vec::as_slice);
        if p["type"] != "text" {
            let unit = &p["fieldConfig"]["defaults"]["unit"];
            c.check(
                unit.as_str().is_some_and(|u| !u.is_empty()),
                format!("panel {title:?} has no unit"),
            );
            c.check(
                !targets.is_empty(),
                format!("panel {title:?} has no targets"),
            );
        }
        for t in targets {
            let ref_id = t["refId"].as_str().unwrap_or("?");
            let source = if t["datasource"].is_object() {
                &t["datasource"]
            } else {
                &p["datasource"]
            };
            let uid = source["uid"].as_str();
            c.check(
                uid.is_some_and(|u| uids.contains(&u)),
                format!(
                    "panel {title:?} target {ref_id}: data source uid {uid:?} is not provisioned"
                ),
            );
            let expr = t["expr"].as_str().unwrap_or_default();
            if c.check(
                !expr.trim().is_empty(),
                format!("panel {title:?} target {ref_id} has no expr"),
            ) {
                check_expr(c, &contract, title, expr);
            }
        }
        if title.starts_with("process span p99") {
            c.check(
                targets
                    .iter()
                    .any(|t| t["exemplar"].as_bool() == Some(true)),
                format!("panel {title:?} must have exemplars enabled"),
            );
        }
    }
    let names: Vec<String> = variables(dash).into_iter().map(|(n, _)| n).collect();
    for need in ["job", "instance"] {
        c.check(
            names.iter().any(|n| n == need),
            format!("{name}: template variable ${need} is missing"),
        );
    }
    if name == "dashboards/wsgate.json" {
        for (title, _) in MAY_BE_EMPTY {
            c.check(
                titles.contains(title),
                format!("MAY_BE_EMPTY names {title:?}, which is not a panel title (stale list)"),
            );
        }
    }
}

#[test]
fn dashboards_follow_the_panel_query_and_metric_contract_rules() {
    let (_, sources) = datasources();
    let uids: Vec<&str> = sources.iter().filter_map(|d| d["uid"].as_str()).collect();
    let dashboards = dashboards();
    assert!(
        dashboards
            .iter()
            .any(|(n, _)| n == "dashboards/wsgate.json"),
        "no dashboards/wsgate.json"
    );
    checks("dashboards", |c| {
        for (name, dash) in &dashboards {
            check_dashboard(c, name, dash, &uids);
        }
    });
}

#[test]
fn grafana_provisioning_links_prometheus_jaeger_and_the_dashboards() {
    let (file, sources) = datasources();
    let providers = yaml("grafana/provisioning/dashboards/dashboards.yml");
    checks("grafana provisioning", |c| {
        c.check(
            file["apiVersion"].as_u64() == Some(1) && providers["apiVersion"].as_u64() == Some(1),
            "provisioning files need apiVersion: 1",
        );
        let prom = datasource(&sources, "prometheus");
        if c.check(
            prom["type"] == "prometheus" && prom["url"] == "http://prometheus:9090",
            "need a prometheus data source uid=prometheus at http://prometheus:9090",
        ) {
            let destinations = prom["jsonData"]["exemplarTraceIdDestinations"]
                .as_sequence()
                .map_or(&[][..], Vec::as_slice);
            c.check(
                destinations
                    .iter()
                    .any(|d| d["name"] == "trace_id" && d["datasourceUid"] == "jaeger"),
                "prometheus data source: exemplarTraceIdDestinations must map trace_id to uid jaeger",
            );
        }
        let jaeger = datasource(&sources, "jaeger");
        if c.check(
            jaeger["type"] == "jaeger" && jaeger["url"] == "http://jaeger:16686",
            "need a jaeger data source uid=jaeger at http://jaeger:16686",
        ) {
            c.check(
                jaeger["jsonData"]["tracesToMetrics"]["datasourceUid"] == "prometheus",
                "jaeger data source: tracesToMetrics.datasourceUid must be prometheus",
            );
            let raw = sources
                .iter()
                .find(|d| d["uid"].as_str() == Some("jaeger"))
                .expect("the jaeger data source");
            for q in raw["jsonData"]["tracesToMetrics"]["queries"]
                .as_sequence()
                .into_iter()
                .flatten()
            {
                let query = q["query"].as_str().unwrap_or_default();
                c.check(
                    !query.replace("$$", "").contains('$'),
                    format!(
                        "trace-to-metrics query {:?}: a single `$` is an environment variable \
                         to Grafana's provisioning; write `$$` for a literal `$`",
                        q["name"].as_str().unwrap_or("?")
                    ),
                );
            }
            c.check(
                !links().is_empty(),
                "jaeger data source: tracesToMetrics has no queries",
            );
        }
        c.check(
            providers["providers"]
                .as_sequence()
                .into_iter()
                .flatten()
                .any(|p| {
                    p["type"] == "file" && p["options"]["path"] == "/var/lib/grafana/dashboards"
                }),
            "dashboards provider must load type: file from /var/lib/grafana/dashboards",
        );
    });
}

#[test]
fn metric_names_skip_functions_keywords_matchers_and_windows() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le, instance) (rate(a_bucket{job=~"$job", x="y z"}[$__rate_interval]))) / on (instance) group_left b_total unless c"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["a_bucket", "b_total", "c"]
    );
    let mut c = Checks::default();
    let contract = (BTreeSet::from(["a_total".to_owned()]), BTreeSet::new());
    check_expr(
        &mut c,
        &contract,
        "t",
        r#"rate(a_total{job=~"$job", instance=~"$instance"}[$__rate_interval])"#,
    );
    check_expr(
        &mut c,
        &contract,
        "t",
        r#"rate(a_total{job=~"$job"}[5m]) + b"#,
    );
    assert_eq!(
        c.problems(),
        [
            r#"panel "t": range [5m] is not [$__rate_interval]"#,
            r#"panel "t": metric "b" is not in the README's metric contract"#,
            r#"panel "t": selector without braces: ["b"]"#,
            r#"panel "t": a_total lacks {job=~"$job", instance=~"$instance"}"#,
        ]
    );
}
