//! Grafana's side, without Grafana: the dashboards it loads, the queries and
//! template variables in them, its provisioned data sources (with the
//! environment expansion it applies to provisioning files), and the variables
//! it substitutes into a query before sending it to Prometheus.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value as Json;
use serde_yaml_ng::Value;

use crate::checks::{text, yaml};
use crate::monitoring::panels;

/// The dashboards Grafana loads.
pub fn dashboards() -> Vec<(String, Json)> {
    let mut paths: Vec<_> = std::fs::read_dir(crate::checks::root().join("dashboards"))
        .expect("dashboards/")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let name = format!("dashboards/{}", p.file_name().unwrap().to_string_lossy());
            let json = serde_json::from_str(&text(&name))
                .unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
            (name, json)
        })
        .collect()
}

/// One panel query.
pub struct Target {
    pub panel: String,
    pub ref_id: String,
    pub expr: String,
    /// Grafana fetches exemplars for it as well.
    pub exemplar: bool,
}

/// Every panel query of a dashboard, rows' nested panels included.
pub fn targets(dashboard: &Json) -> Vec<Target> {
    panels(&dashboard["panels"])
        .into_iter()
        .flat_map(|p| {
            let panel = p["title"].as_str().unwrap_or_default();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| Target {
                    panel: panel.to_owned(),
                    ref_id: t["refId"].as_str().unwrap_or("?").to_owned(),
                    expr: t["expr"].as_str().unwrap_or_default().to_owned(),
                    exemplar: t["exemplar"].as_bool().unwrap_or(false),
                })
        })
        .collect()
}

/// A template variable's name and its query.
pub fn variables(dashboard: &Json) -> Vec<(String, String)> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            let query = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .filter(|q| !q.is_empty())
                .or(v["definition"].as_str())
                .unwrap_or_default();
            (
                v["name"].as_str().unwrap_or_default().to_owned(),
                query.to_owned(),
            )
        })
        .collect()
}

/// What Grafana does to every string of a provisioning file: `$$` is a
/// literal `$`, `$NAME`/`${NAME}` an environment variable (unset: empty).
fn provisioning_expand(value: &Value) -> Value {
    static ENV: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\$\{(\w+)\}|\$(\w+)").expect("regex"));
    match value {
        Value::String(s) => Value::String(
            s.split("$$")
                .map(|part| {
                    ENV.replace_all(part, |c: &regex::Captures| {
                        let name = c.get(1).or(c.get(2)).expect("a group").as_str();
                        std::env::var(name).unwrap_or_default()
                    })
                    .into_owned()
                })
                .collect::<Vec<_>>()
                .join("$"),
        ),
        Value::Sequence(items) => Value::Sequence(items.iter().map(provisioning_expand).collect()),
        Value::Mapping(map) => Value::Mapping(
            map.iter()
                .map(|(k, v)| (k.clone(), provisioning_expand(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The provisioned data sources by uid, as Grafana expands them.
pub fn datasources() -> (Value, Vec<Value>) {
    let file = yaml("grafana/provisioning/datasources/datasources.yml");
    let sources = file["datasources"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    (file, sources)
}

pub fn datasource(sources: &[Value], uid: &str) -> Value {
    sources
        .iter()
        .find(|d| d["uid"].as_str() == Some(uid))
        .map(provisioning_expand)
        .unwrap_or(Value::Null)
}

/// The Jaeger data source's trace-to-metrics links: name and query, expanded.
pub fn links() -> Vec<(String, String)> {
    let (_, sources) = datasources();
    let jaeger = datasource(&sources, "jaeger");
    jaeger["jsonData"]["tracesToMetrics"]["queries"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|q| {
            (
                q["name"].as_str().unwrap_or("?").to_owned(),
                q["query"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// What Grafana substitutes given a 1 s scrape interval (the data source's
/// timeInterval): $__rate_interval = max(4 x scrape, $__interval + scrape).
pub const BUILTINS: [(&str, &str); 6] = [
    ("__rate_interval", "4s"),
    ("__interval", "1s"),
    ("__interval_ms", "1000"),
    ("__range", "5m"),
    ("__range_s", "300"),
    ("__range_ms", "300000"),
];
static VARIABLE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]").expect("regex"));
pub static LABEL_VALUES: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)^\s*label_values\((.*),\s*(\w+)\s*\)\s*$").expect("regex"));
static REGEX_SPECIAL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"([\\^$*+?.()|\[\]{}])").expect("regex"));

/// `expr` with Grafana's variables substituted; `Err` names an unknown one.
pub fn interpolate(expr: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut unknown = None;
    let out = VARIABLE.replace_all(expr, |c: &regex::Captures| {
        let name = c
            .get(1)
            .or(c.get(2))
            .or(c.get(3))
            .expect("a group")
            .as_str();
        vars.get(name).cloned().unwrap_or_else(|| {
            unknown = Some(name.to_owned());
            String::new()
        })
    });
    match unknown {
        Some(name) => Err(name),
        None => Ok(out.into_owned()),
    }
}

/// Grafana's Prometheus formatting of a (multi-)value for `=~`: escaped,
/// and `(a|b)` for more than one.
pub fn regex_value(values: &[String]) -> String {
    let escaped: Vec<String> = values
        .iter()
        .map(|v| REGEX_SPECIAL.replace_all(v, r"\\$1").into_owned())
        .collect();
    match escaped.as_slice() {
        [one] => one.clone(),
        _ => format!("({})", escaped.join("|")),
    }
}

#[test]
fn variables_interpolate_as_grafana_does() {
    let vars: BTreeMap<String, String> = [
        ("job", "wsgate"),
        (
            "instance",
            regex_value(&["127.0.0.1:9".into()]).leak() as &str,
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(
        interpolate(r#"up{job=~"$job", instance=~"${instance}"}"#, &vars),
        Ok(r#"up{job=~"wsgate", instance=~"127\\.0\\.0\\.1:9"}"#.to_owned())
    );
    assert_eq!(
        interpolate("rate(x[$__rate_interval])", &vars),
        Err("__rate_interval".to_owned())
    );
    assert_eq!(regex_value(&["a".into(), "b".into()]), "(a|b)");
}
