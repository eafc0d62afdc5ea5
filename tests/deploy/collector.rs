//! otel-collector/config.yaml, which the collector-contrib binary cannot load
//! here: every component referenced is defined, of a current (not deprecated)
//! type of the pinned release; OTLP traces flow to Jaeger, batched in the
//! exporter's sending queue; span metrics with exemplars reach Prometheus; the
//! memory limit fits the container; the collector's own metrics are scraped.

use std::collections::HashSet;

use serde_yaml_ng::Value;

use crate::checks::{Checks, checks, go_seconds, has_key, keys, mebibytes, scalar, strings, yaml};
use crate::compose;

/// The collector-contrib release whose component names `CURRENT_TYPES` lists:
/// bump both together.
const COLLECTOR_VERSION: &str = "0.150";
/// The current type names per kind in that release.
const CURRENT_TYPES: &[(&str, &[&str])] = &[
    ("receivers", &["otlp"]),
    ("processors", &["memory_limiter"]),
    (
        "exporters",
        &["otlp_grpc", "otlp_http", "debug", "prometheus"],
    ),
    // Renamed to span_metrics only after 0.150.
    ("connectors", &["spanmetrics"]),
    ("extensions", &["health_check"]),
];
/// Deprecated aliases that still load (with a warning) or were removed, and
/// what replaces them.
const DEPRECATED: &[(&str, &str)] = &[
    ("otlp", "otlp_grpc (renamed in 0.144)"),
    ("otlphttp", "otlp_http (renamed in 0.144)"),
    ("logging", "debug (logging was removed)"),
    (
        "batch",
        "the exporter's sending_queue.batch (this stack batches in the exporter)",
    ),
];
const KINDS: [&str; 5] = [
    "receivers",
    "processors",
    "exporters",
    "connectors",
    "extensions",
];

fn current(kind: &str) -> &'static [&'static str] {
    CURRENT_TYPES
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(&[], |(_, types)| types)
}

/// A component's type: `otlp_grpc/jaeger` is an `otlp_grpc`.
fn component_type(component: &str) -> &str {
    component.split('/').next().unwrap_or(component)
}

/// The shape every collector distribution shares (Jaeger v2 is one): each
/// component a pipeline or the service names is defined, each defined
/// component is used, and each is of a type the distribution ships.
pub fn pipelines_use_only_defined_components(
    c: &mut Checks,
    config: &Value,
    name: &str,
    known: &[&str],
) {
    let service = &config["service"];
    let mut used = HashSet::new();
    for (pipeline, spec) in service["pipelines"].as_mapping().into_iter().flatten() {
        let pipeline = pipeline.as_str().unwrap_or("?");
        for kind in ["receivers", "processors", "exporters"] {
            for component in strings(&spec[kind]) {
                used.insert(component);
                let defined =
                    has_key(&config[kind], component) || has_key(&config["connectors"], component);
                let singular = kind.trim_end_matches('s');
                c.check(
                    defined,
                    format!(
                        "{name}: pipeline {pipeline} uses {singular} {component}, which is defined"
                    ),
                );
            }
        }
    }
    for extension in strings(&service["extensions"]) {
        c.check(
            has_key(&config["extensions"], extension),
            format!("{name}: extension {extension} is defined"),
        );
    }
    for kind in ["receivers", "processors", "exporters", "connectors"] {
        let singular = kind.trim_end_matches('s');
        for component in keys(&config[kind]) {
            c.check(
                used.contains(component),
                format!("{name}: {singular} {component} is used by a pipeline"),
            );
            let kind_of = component_type(component);
            c.check(
                known.contains(&kind_of),
                format!("{name}: {kind_of} is a component the distribution ships"),
            );
        }
    }
}

fn config() -> Value {
    yaml("otel-collector/config.yaml")
}

#[test]
fn components_are_defined_and_current_for_the_pinned_release() {
    let config = config();
    let image = compose::services()["otel-collector"]["image"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    checks("otel-collector/config.yaml components", |c| {
        c.check(
            image.rsplit(':').next().unwrap_or("").starts_with(&format!("{COLLECTOR_VERSION}.")),
            format!("collector: the image is collector-contrib {COLLECTOR_VERSION}.x, whose component names CURRENT_TYPES lists (found {image:?}; bump both together)"),
        );
        let known: Vec<&str> = CURRENT_TYPES
            .iter()
            .flat_map(|(_, types)| types.iter().copied())
            .collect();
        pipelines_use_only_defined_components(c, &config, "collector", &known);
        for kind in KINDS {
            let singular = kind.trim_end_matches('s');
            for component in keys(&config[kind]) {
                let kind_of = component_type(component);
                if let Some((_, replacement)) = DEPRECATED.iter().find(|(old, _)| *old == kind_of) {
                    c.check(
                        current(kind).contains(&kind_of),
                        format!("collector: {singular} {component} uses a current type name, not a deprecated one (use {replacement})"),
                    );
                }
                c.check(
                    current(kind).contains(&kind_of),
                    format!("collector: {kind_of} is among the {kind} of collector-contrib {COLLECTOR_VERSION}"),
                );
            }
        }
    });
}

#[test]
fn otlp_comes_in_on_every_interface_through_the_memory_limiter() {
    let config = config();
    let services = compose::services();
    let service = &services["otel-collector"];
    checks("otel-collector/config.yaml receiving and memory", |c| {
        let protocols = &config["receivers"]["otlp"]["protocols"];
        c.check(
            protocols["grpc"]["endpoint"].as_str() == Some("0.0.0.0:4317"),
            "collector: OTLP/gRPC on 0.0.0.0:4317, reachable from other containers",
        );
        c.check(
            protocols["http"]["endpoint"].as_str() == Some("0.0.0.0:4318"),
            "collector: OTLP/HTTP on 0.0.0.0:4318",
        );
        let traces = &config["service"]["pipelines"]["traces"];
        c.check(
            strings(&traces["receivers"]).contains(&"otlp"),
            "collector: the traces pipeline receives OTLP",
        );
        c.check(
            strings(&traces["processors"]).first() == Some(&"memory_limiter"),
            "collector: memory_limiter comes first",
        );

        // An explicit limit that fits the container, not a percentage of
        // whatever the host has.
        let limiter = &config["processors"]["memory_limiter"];
        let mem_limit = scalar(&service["mem_limit"]).as_deref().and_then(mebibytes);
        c.check(
            mem_limit.is_some(),
            format!(
                "compose: the collector has a mem_limit (found {:?})",
                service["mem_limit"]
            ),
        );
        c.check(
            limiter["limit_percentage"].is_null() && limiter["limit_mib"].is_u64(),
            "collector: memory_limiter has an explicit limit_mib, not a percentage",
        );
        let limit = limiter["limit_mib"].as_u64().unwrap_or(0) as f64;
        let spike = limiter["spike_limit_mib"].as_u64().unwrap_or(0) as f64;
        if let Some(mem_limit) = mem_limit {
            c.check(
                (0.6 * mem_limit..=0.85 * mem_limit).contains(&limit),
                format!("collector: memory_limiter's limit_mib ({limit}) is 60-85% of the container's mem_limit ({mem_limit} MiB), leaving the Go runtime headroom"),
            );
        }
        c.check(
            0.0 < spike && spike < limit,
            format!("collector: spike_limit_mib ({spike}) is below limit_mib ({limit})"),
        );
    });
}

#[test]
fn traces_reach_jaeger_batched_in_the_exporter_s_queue() {
    let config = config();
    let services = compose::services();
    checks("otel-collector/config.yaml traces to Jaeger", |c| {
        c.check(
            !keys(&config["processors"]).any(|p| component_type(p) == "batch"),
            "collector: no batch processor (the Jaeger exporter batches in its sending queue)",
        );
        let exporters = strings(&config["service"]["pipelines"]["traces"]["exporters"]);
        let to_jaeger: Vec<&str> = exporters
            .iter()
            .copied()
            .filter(|e| {
                component_type(e) == "otlp_grpc"
                    && config["exporters"][*e]["endpoint"].as_str() == Some("jaeger:4317")
            })
            .collect();
        c.check(
            to_jaeger.len() == 1,
            "collector: traces are exported with otlp_grpc to jaeger:4317",
        );
        for name in to_jaeger {
            let queue = &config["exporters"][name]["sending_queue"];
            let batch = &queue["batch"];
            c.check(
                queue["enabled"].as_bool().unwrap_or(true) && batch.is_mapping(),
                format!("collector: {name} batches in its sending queue (sending_queue.batch)"),
            );
            let flush = scalar(&batch["flush_timeout"]).unwrap_or_default();
            c.check(
                go_seconds(&flush).is_some(),
                format!("collector: {name}'s batch has a flush_timeout"),
            );
            let min = batch["min_size"].as_u64().unwrap_or(0);
            let max = batch["max_size"].as_u64().unwrap_or(0);
            c.check(
                0 < min && min <= max,
                format!("collector: {name}'s batch min_size <= max_size"),
            );
            c.check(
                queue["sizer"].as_str() == Some("items")
                    && queue["queue_size"].as_u64().unwrap_or(0) >= max,
                format!(
                    "collector: {name}'s queue is sized in spans and holds at least one full batch"
                ),
            );
        }
        c.check(
            !services["jaeger"].is_null(),
            "collector: the jaeger it exports to is a compose service",
        );
    });
}

#[test]
fn span_metrics_with_exemplars_and_the_collector_s_own_metrics_reach_prometheus() {
    let config = config();
    checks("otel-collector/config.yaml metrics", |c| {
        let pipelines = &config["service"]["pipelines"];
        c.check(
            strings(&pipelines["traces"]["exporters"]).contains(&"spanmetrics"),
            "collector: traces feed the span-metrics connector",
        );
        let spanmetrics = &config["connectors"]["spanmetrics"];
        c.check(
            spanmetrics["exemplars"]["enabled"].as_bool() == Some(true),
            "collector: span metrics carry exemplars",
        );
        let buckets = spanmetrics["histogram"]["explicit"]["buckets"]
            .as_sequence()
            .cloned()
            .unwrap_or_default();
        c.check(
            !buckets.is_empty()
                && buckets
                    .iter()
                    .all(|b| scalar(b).as_deref().and_then(go_seconds).is_some()),
            "collector: span-metric buckets are Go durations",
        );
        let exported = keys(pipelines)
            .filter(|name| name.starts_with("metrics"))
            .any(|name| {
                strings(&pipelines[name]["receivers"]).contains(&"spanmetrics")
                    && strings(&pipelines[name]["exporters"]).contains(&"prometheus")
            });
        c.check(
            exported,
            "collector: span metrics are exported for Prometheus",
        );
        c.check(
            config["exporters"]["prometheus"]["endpoint"].as_str() == Some("0.0.0.0:8889"),
            "collector: span metrics are served on :8889",
        );

        let readers = config["service"]["telemetry"]["metrics"]["readers"]
            .as_sequence()
            .cloned()
            .unwrap_or_default();
        let internal: Vec<String> = readers
            .iter()
            .map(|r| &r["pull"]["exporter"]["prometheus"])
            .filter(|p| p.is_mapping())
            .map(|p| {
                format!(
                    "{}:{}",
                    scalar(&p["host"]).unwrap_or_default(),
                    scalar(&p["port"]).unwrap_or_default()
                )
            })
            .collect();
        c.check(
            internal.iter().any(|a| a == "0.0.0.0:8888"),
            format!("collector: its own metrics are served on 0.0.0.0:8888, reachable from Prometheus's container (found {internal:?})"),
        );
    });
}

/// The unit of the span-metric durations, which Jaeger's Monitor tab must be
/// told (the connector's default is milliseconds).
pub fn span_metrics_unit() -> String {
    scalar(&config()["connectors"]["spanmetrics"]["histogram"]["unit"])
        .unwrap_or_else(|| "ms".to_owned())
}
