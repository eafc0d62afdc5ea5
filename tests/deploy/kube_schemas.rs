//! Schemas for every rendered document. Built-in kinds go to
//! `kubernetes-validate --strict` (schemas bundled, offline) for the oldest and
//! newest Kubernetes the manifests must suit. The two Prometheus Operator kinds
//! go to check-jsonschema against their CRDs' own openAPIV3Schema, vendored in
//! deploy/schemas, made strict as `kubectl --validate=strict` is; that
//! validator is first shown to refuse a one-field change the API server would
//! refuse, so it cannot pass vacuously. Only the tools' exit statuses count.

use std::path::{Path, PathBuf};
use std::process::Command;

use regex::Regex;
use serde_json::{Value as Json, json};
use serde_yaml_ng::Value;

use crate::checks::{checks, run, venv_tool, yaml};
use crate::kube_render::rendered;

/// The oldest and the newest Kubernetes whose schemas kubernetes-validate
/// bundles (and that are still in use).
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];
const CRDS: [(&str, &str); 2] = [
    (
        "ServiceMonitor",
        "deploy/schemas/monitoring.coreos.com_servicemonitors.yaml",
    ),
    (
        "PrometheusRule",
        "deploy/schemas/monitoring.coreos.com_prometheusrules.yaml",
    ),
];

/// jsonschema's own Draft7Validator, as the Python check used, without
/// format checks: check-jsonschema would otherwise first validate the schema
/// against its metaschema, where Python's `re` refuses a pattern the API
/// server's Go regexp accepts (`^(?i)(abort|warn)?$`, a field wsgate never sets).
const VALIDATOR: [&str; 4] = [
    "--validator-class",
    "jsonschema.validators:Draft7Validator",
    "--disable-formats",
    "*",
];

fn is_custom(doc: &Value) -> bool {
    CRDS.iter()
        .any(|(kind, _)| doc["kind"].as_str() == Some(kind))
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> PathBuf {
    std::fs::write(path, serde_json::to_vec_pretty(value).expect("JSON"))
        .expect("writing a temporary file");
    path.to_owned()
}

#[test]
fn built_in_kinds_validate_strictly_on_the_oldest_and_newest_kubernetes() {
    let Some(validator) = venv_tool("kubernetes-validate") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    checks("built-in kinds", |c| {
        for rendering in rendered() {
            let files: Vec<PathBuf> = rendering
                .docs
                .iter()
                .filter(|d| !is_custom(d))
                .enumerate()
                .map(|(i, doc)| {
                    let kind = doc["kind"].as_str().unwrap_or("unknown");
                    let file = format!("{}-{i}-{kind}.json", rendering.name.replace('/', "_"));
                    write_json(&dir.path().join(file), doc)
                })
                .collect();
            c.check(
                !files.is_empty(),
                format!("{}: has built-in kinds to validate", rendering.name),
            );
            for version in KUBERNETES_VERSIONS {
                let ran = run(Command::new(&validator)
                    .args(["--strict", "--quiet", "-k", version])
                    .args(&files));
                c.check(
                    ran.success,
                    format!("{}: kubernetes-validate --strict -k {version} accepts every built-in kind: {}", rendering.name, ran.output()),
                );
            }
        }
    });
}

/// The CRD schema as the API server applies it with strict field validation:
/// an object with declared properties takes no others, unless the schema says
/// x-kubernetes-preserve-unknown-fields.
fn strict(node: &mut Json) {
    match node {
        Json::Object(object) => {
            let preserves =
                object.get("x-kubernetes-preserve-unknown-fields") == Some(&Json::Bool(true));
            if object.contains_key("properties")
                && !object.contains_key("additionalProperties")
                && !preserves
            {
                object.insert("additionalProperties".to_owned(), Json::Bool(false));
            }
            object.values_mut().for_each(strict);
        }
        Json::Array(items) => items.iter_mut().for_each(strict),
        _ => {}
    }
}

/// A custom kind's validator: its CRD's strict schema in a file
/// check-jsonschema reads, and the apiVersion the CRD serves.
struct CrdSchema {
    tool: PathBuf,
    schema: PathBuf,
    api_version: String,
    dir: tempfile::TempDir,
}

impl CrdSchema {
    fn new(tool: PathBuf, kind: &str) -> Self {
        let path = CRDS
            .iter()
            .find(|(k, _)| *k == kind)
            .expect("a vendored CRD")
            .1;
        let crd = yaml(path);
        assert_eq!(
            crd["spec"]["names"]["kind"].as_str(),
            Some(kind),
            "{path} is the {kind} CRD"
        );
        let versions = crd["spec"]["versions"].as_sequence().expect("CRD versions");
        let version = versions
            .iter()
            .find(|v| v["storage"].as_bool() == Some(true))
            .expect("a storage version");
        let mut schema = serde_json::to_value(&version["schema"]["openAPIV3Schema"]).expect("JSON");
        strict(&mut schema);
        let dir = tempfile::tempdir().expect("temporary directory");
        let schema = write_json(&dir.path().join(format!("{kind}.schema.json")), &schema);
        let api_version = format!(
            "{}/{}",
            crd["spec"]["group"].as_str().unwrap_or(""),
            version["name"].as_str().unwrap_or("")
        );
        Self {
            tool,
            schema,
            api_version,
            dir,
        }
    }

    /// What is wrong with a document by its CRD, and by what the API server
    /// checks of every object's metadata; empty if nothing.
    fn problems(&self, doc: &impl serde::Serialize) -> Vec<String> {
        let doc = serde_json::to_value(doc).expect("JSON");
        let file = write_json(&self.dir.path().join("instance.json"), &doc);
        let ran = run(Command::new(&self.tool)
            .arg("--schemafile")
            .arg(&self.schema)
            .args(VALIDATOR)
            .arg(file));
        let mut problems = Vec::new();
        if !ran.success {
            problems.push(format!("check-jsonschema refuses it: {}", ran.output()));
        }
        if doc["apiVersion"].as_str() != Some(&self.api_version) {
            problems.push(format!(
                "apiVersion is {}, the CRD serves {}",
                doc["apiVersion"], self.api_version
            ));
        }
        let subdomain =
            Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
                .expect("regex");
        let meta = &doc["metadata"];
        if !subdomain.is_match(meta["name"].as_str().unwrap_or("")) {
            problems.push(format!(
                "metadata.name {} is not a DNS subdomain",
                meta["name"]
            ));
        }
        for field in ["labels", "annotations"] {
            if !meta[field]
                .as_object()
                .is_none_or(|m| m.values().all(Json::is_string))
            {
                problems.push(format!("metadata.{field} values must be strings"));
            }
        }
        problems
    }
}

/// Each pair differs in one field the API server would refuse: the first must
/// pass and the second fail, or the validator proves nothing.
#[test]
fn the_crd_validator_refuses_what_the_api_server_would() {
    let Some(tool) = venv_tool("check-jsonschema") else {
        return;
    };
    let monitor = |endpoint: Json| {
        json!({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
        "metadata": {"name": "x"}, "spec": {"selector": {}, "endpoints": [endpoint]}})
    };
    let rule = |rule: Json| {
        json!({"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
        "metadata": {"name": "x"}, "spec": {"groups": [{"name": "g", "rules": [rule]}]}})
    };
    let cases = [
        (
            "ServiceMonitor",
            "an unknown endpoint field (intervall)",
            monitor(json!({"port": "admin", "interval": "15s"})),
            monitor(json!({"port": "admin", "intervall": "15s"})),
        ),
        (
            "PrometheusRule",
            "a `for` that is not a duration",
            rule(json!({"alert": "A", "expr": "1", "for": "5m"})),
            rule(json!({"alert": "A", "expr": "1", "for": "5 minutes"})),
        ),
    ];
    checks("the CRD validator", |c| {
        for (kind, what, good, bad) in cases {
            let schema = CrdSchema::new(tool.clone(), kind);
            let problems = schema.problems(&good);
            c.check(
                problems.is_empty(),
                format!("the {kind} CRD validator accepts a valid {kind}: {problems:?}"),
            );
            c.check(
                !schema.problems(&bad).is_empty(),
                format!("the CRD validator rejects a {kind} with {what}"),
            );
        }
    });
}

#[test]
fn custom_kinds_validate_against_their_crds() {
    let Some(tool) = venv_tool("check-jsonschema") else {
        return;
    };
    let schemas: Vec<(&str, CrdSchema)> = CRDS
        .iter()
        .map(|(kind, _)| (*kind, CrdSchema::new(tool.clone(), kind)))
        .collect();
    checks("custom kinds", |c| {
        for rendering in rendered() {
            let mut found: Vec<&str> = rendering
                .docs
                .iter()
                .filter(|d| is_custom(d))
                .filter_map(|d| d["kind"].as_str())
                .collect();
            found.sort_unstable();
            c.check(
                found == ["PrometheusRule", "ServiceMonitor"],
                format!(
                    "{}: has a ServiceMonitor and a PrometheusRule (found {found:?})",
                    rendering.name
                ),
            );
            for doc in rendering.docs.iter().filter(|d| is_custom(d)) {
                let kind = doc["kind"].as_str().unwrap_or("");
                let schema = &schemas
                    .iter()
                    .find(|(k, _)| *k == kind)
                    .expect("a schema per custom kind")
                    .1;
                let problems = schema.problems(doc);
                c.check(
                    problems.is_empty(),
                    format!(
                        "{}: {kind} {} validates against its CRD: {problems:?}",
                        rendering.name,
                        doc["metadata"]["name"].as_str().unwrap_or("?")
                    ),
                );
            }
        }
    });
}
