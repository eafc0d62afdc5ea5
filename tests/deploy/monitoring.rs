//! How the compose stack's Prometheus and Grafana meet the rest: Grafana's
//! data sources point at the compose services and match the scrape interval,
//! its dashboards provider reads the mounted directory, Prometheus scrapes each
//! gateway's admin port and both of the collector's ports, and the dashboard
//! draws the spans the collector failed to hand to Jaeger.

use serde_json::Value as Json;
use serde_yaml_ng::Value;

use crate::checks::{checks, scalar, strings, text, yaml};
use crate::compose::{self, ADMIN_PORT};

/// Every scrape target of every static config, in file order.
fn targets(job: &Value) -> Vec<&str> {
    job["static_configs"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|config| strings(&config["targets"]))
        .collect()
}

/// Every panel, rows' nested panels included.
pub fn panels(panels: &Json) -> Vec<&Json> {
    let mut all = Vec::new();
    for panel in panels.as_array().into_iter().flatten() {
        all.push(panel);
        all.extend(self::panels(&panel["panels"]));
    }
    all
}

#[test]
fn grafana_reads_the_stack_s_prometheus_jaeger_and_dashboards() {
    let prometheus = yaml("prometheus/prometheus.yml");
    let datasources = yaml("grafana/provisioning/datasources/datasources.yml");
    let providers = yaml("grafana/provisioning/dashboards/dashboards.yml");
    let services = compose::services();
    checks("grafana provisioning", |c| {
        let by_uid = |uid: &str| {
            datasources["datasources"]
                .as_sequence()
                .into_iter()
                .flatten()
                .find(|d| d["uid"].as_str() == Some(uid))
                .cloned()
                .unwrap_or(Value::Null)
        };
        let (prometheus_source, jaeger_source) = (by_uid("prometheus"), by_uid("jaeger"));
        c.check(
            !prometheus_source.is_null() && !jaeger_source.is_null(),
            "grafana: Prometheus and Jaeger data sources are provisioned",
        );
        let scrape = scalar(&prometheus["global"]["scrape_interval"]).unwrap_or_default();
        c.check(
            scalar(&prometheus_source["jsonData"]["timeInterval"]).as_deref() == Some(scrape.as_str()),
            format!("grafana: the Prometheus data source's timeInterval matches the scrape interval ({scrape})"),
        );
        c.check(
            prometheus_source["url"].as_str() == Some("http://prometheus:9090"),
            "grafana: Prometheus at the compose service",
        );
        c.check(
            jaeger_source["url"]
                .as_str()
                .is_some_and(|u| u.starts_with("http://jaeger:16686")),
            "grafana: Jaeger at the compose service",
        );
        let paths: Vec<&str> = providers["providers"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|p| p["options"]["path"].as_str())
            .collect();
        let mounted = strings(&services["grafana"]["volumes"])
            .into_iter()
            .filter(|m| m.starts_with("./dashboards"))
            .any(|m| {
                m.split(':')
                    .nth(1)
                    .is_some_and(|target| paths.contains(&target))
            });
        c.check(
            mounted,
            "grafana: the dashboards provider reads the mounted dashboards directory",
        );
    });
}

#[test]
fn prometheus_scrapes_the_gateways_and_the_collector_and_the_dashboard_draws_lost_spans() {
    let prometheus = yaml("prometheus/prometheus.yml");
    let dashboard: Json = serde_json::from_str(&text("dashboards/wsgate.json"))
        .expect("dashboards/wsgate.json is JSON");
    checks("prometheus scraping", |c| {
        let jobs = prometheus["scrape_configs"]
            .as_sequence()
            .cloned()
            .unwrap_or_default();
        let all: Vec<&str> = jobs.iter().flat_map(targets).collect();
        for gateway in ["gateway-a", "gateway-b"] {
            c.check(
                all.contains(&format!("{gateway}:{ADMIN_PORT}").as_str()),
                format!("prometheus: scrapes {gateway} on its admin port"),
            );
        }
        c.check(
            all.contains(&"otel-collector:8889"),
            "prometheus: scrapes the collector's span metrics",
        );
        let own: Vec<&Value> = jobs
            .iter()
            .filter(|job| targets(job).contains(&"otel-collector:8888"))
            .collect();
        c.check(
            own.len() == 1,
            "prometheus: scrapes the collector's own metrics (otel-collector:8888)",
        );
        let job = own
            .first()
            .and_then(|j| j["job_name"].as_str())
            .unwrap_or("None");
        let exprs: Vec<&str> = panels(&dashboard["panels"])
            .into_iter()
            .flat_map(|p| p["targets"].as_array().into_iter().flatten())
            .filter_map(|t| t["expr"].as_str())
            .collect();
        for metric in [
            "otelcol_exporter_send_failed_spans_total",
            "otelcol_exporter_enqueue_failed_spans_total",
        ] {
            let selector = format!("{metric}{{job=\"{job}\"}}");
            c.check(
                exprs.iter().any(|e| e.contains(&selector)),
                format!("dashboard: a panel draws {metric} from the collector's job ({job}): spans lost before Jaeger"),
            );
        }
    });
}
