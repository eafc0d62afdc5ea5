//! jaeger/config.yaml (Jaeger v2 is a collector distribution, so it has the
//! collector's shape): it receives the collector's OTLP, writes spans to the
//! store its UI reads, and its Monitor tab reads the collector's span metrics
//! from Prometheus in the unit the collector writes them.

use crate::checks::{checks, scalar, yaml};
use crate::collector::{pipelines_use_only_defined_components, span_metrics_unit};

#[test]
fn jaeger_stores_what_it_receives_and_reads_span_metrics_from_prometheus() {
    let config = yaml("jaeger/config.yaml");
    let unit = span_metrics_unit();
    checks("jaeger/config.yaml", |c| {
        let known = [
            "otlp",
            "batch",
            "jaeger_storage_exporter",
            "jaeger_storage",
            "jaeger_query",
        ];
        pipelines_use_only_defined_components(c, &config, "jaeger", &known);
        c.check(
            config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].as_str()
                == Some("0.0.0.0:4317"),
            "jaeger: receives OTLP/gRPC from the collector on :4317",
        );
        let storage = &config["extensions"]["jaeger_storage"];
        let query = &config["extensions"]["jaeger_query"]["storage"];
        let traces = query["traces"].as_str().unwrap_or("");
        c.check(
            crate::checks::has_key(&storage["backends"], traces),
            "jaeger: the query service reads the trace store that is written",
        );
        c.check(
            config["exporters"]["jaeger_storage_exporter"]["trace_storage"].as_str()
                == Some(traces),
            "jaeger: spans are written to the store the UI reads",
        );
        let metrics_backend = query["metrics"].as_str().unwrap_or("");
        let prometheus = &storage["metric_backends"][metrics_backend]["prometheus"];
        c.check(
            prometheus["endpoint"].as_str() == Some("http://prometheus:9090"),
            "jaeger: the Monitor tab queries Prometheus",
        );
        c.check(
            scalar(&prometheus["latency_unit"]).as_deref() == Some(unit.as_str()),
            format!(
                "jaeger: latency unit matches the collector's span metrics ({unit}; found {:?})",
                scalar(&prometheus["latency_unit"])
            ),
        );
    });
}
