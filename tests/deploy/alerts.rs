//! The Prometheus configuration, the alert rules and their tests:
//! - `prometheus/alerts.yml` is what `prometheus/render-rules` makes of the
//!   template and `prometheus/rules.toml` (the renderer's own `--check`);
//! - promtool accepts the configuration and the rules, and the rules' unit
//!   tests pass (`promtool check config|rules`, `promtool test rules`);
//! - every alert has severity page or ticket, a summary, a description that
//!   shows `$value` and names its instance or job, and an absolute runbook_url
//!   made of rules.toml's `runbook_url` and an anchor of docs/runbook.md; it is
//!   seen firing in a test (with its labels and annotations asserted) and
//!   silent in another.
//!
//! promtool comes from Debian's `prometheus` package: a missing one skips the
//! test locally and fails it under CI=true.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use regex::Regex;
use serde_yaml_ng::Value;

use crate::checks::{checks, on_path, root, run, system_tool, text, yaml};

/// promtool (Debian's `prometheus` package), or `None` after saying the test
/// skips; in CI its absence fails the test.
fn promtool() -> Option<PathBuf> {
    system_tool("promtool")
}

#[test]
fn alerts_yml_is_what_the_template_and_settings_render() {
    let python = on_path("python3").expect("python3 (3.11 or later)");
    let ran = run(Command::new(python)
        .args(["prometheus/render-rules", "--check"])
        .current_dir(root()));
    assert!(
        ran.success,
        "prometheus/alerts.yml is stale: run prometheus/render-rules\n{}",
        ran.output()
    );
}

#[test]
fn promtool_accepts_the_config_and_rules() {
    let Some(promtool) = promtool() else { return };
    for args in [
        &["check", "config", "prometheus/prometheus.yml"][..],
        &["check", "rules", "prometheus/alerts.yml"],
    ] {
        let ran = run(Command::new(&promtool).args(args).current_dir(root()));
        assert!(
            ran.success,
            "promtool {}:\n{}",
            args.join(" "),
            ran.output()
        );
    }
}

/// One file per run: promtool 2.42 carries state from one file's evaluations
/// into the next one's when given both, and the SLO tests' values then shift
/// in the fourth digit. The SLO tests simulate days: about a minute.
#[test]
fn the_rules_unit_tests_pass() {
    let Some(promtool) = promtool() else { return };
    for file in ["prometheus/alerts_test.yml", "prometheus/slo_test.yml"] {
        let ran = run(Command::new(&promtool)
            .args(["test", "rules", file])
            .current_dir(root()));
        assert!(ran.success, "promtool test rules {file}:\n{}", ran.output());
    }
}

/// The anchor GitHub (and most Markdown renderers) give each heading of a
/// document, plus its explicit `<a id="...">` anchors.
fn anchors(markdown: &str) -> BTreeSet<String> {
    let heading = Regex::new(r"^(#{1,6})\s+(.*?)\s*#*\s*$").expect("regex");
    let tag = Regex::new(r"<[^>]+>").expect("regex");
    let explicit = Regex::new(r#"<a\s+(?:id|name)="([^"]+)""#).expect("regex");
    let mut anchors = BTreeSet::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        if let Some(m) = heading.captures(line) {
            let text = tag.replace_all(&m[2], "").trim().to_lowercase();
            let slug: String = text
                .chars()
                .filter(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ' '))
                .map(|c| if c == ' ' { '-' } else { c })
                .collect();
            let n = seen.entry(slug.clone()).or_insert(0);
            anchors.insert(if *n == 0 { slug } else { format!("{slug}-{n}") });
            *n += 1;
        }
        anchors.extend(explicit.captures_iter(line).map(|m| m[1].to_owned()));
    }
    anchors
}

fn str_at<'a>(value: &'a Value, keys: &[&str]) -> &'a str {
    keys.iter()
        .fold(value, |v, k| &v[*k])
        .as_str()
        .unwrap_or("")
}

#[test]
fn every_alert_is_tested_firing_and_silent_and_has_a_runbook_section() {
    let settings: toml::Table = text("prometheus/rules.toml")
        .parse()
        .expect("prometheus/rules.toml is TOML");
    let runbook_base = settings["runbook_url"].as_str().expect("runbook_url");
    let anchors = anchors(&text("docs/runbook.md"));
    let rules = yaml("prometheus/alerts.yml");
    let tests: Vec<Value> = ["prometheus/alerts_test.yml", "prometheus/slo_test.yml"]
        .iter()
        .flat_map(|file| {
            yaml(file)["tests"]
                .as_sequence()
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    let instance_or_job = Regex::new(r"\$labels\.(instance|job)\b").expect("regex");
    checks("alerts, their tests and their runbook sections", |c| {
        let mut alerts: BTreeMap<&str, &Value> = BTreeMap::new();
        let groups = rules["groups"].as_sequence().into_iter().flatten();
        for rule in groups.flat_map(|g| g["rules"].as_sequence().into_iter().flatten()) {
            if let Some(name) = rule["alert"].as_str() {
                c.check(
                    alerts.insert(name, rule).is_none(),
                    format!("{name}: defined twice"),
                );
            }
        }
        c.check(!alerts.is_empty(), "prometheus/alerts.yml: no alerts found");
        for (name, rule) in &alerts {
            let severity = str_at(rule, &["labels", "severity"]);
            c.check(
                matches!(severity, "page" | "ticket"),
                format!("{name}: labels.severity is {severity:?}, want page or ticket"),
            );
            for key in ["summary", "description", "runbook_url"] {
                c.check(
                    !str_at(rule, &["annotations", key]).is_empty(),
                    format!("{name}: annotations.{key} is missing"),
                );
            }
            let description = str_at(rule, &["annotations", "description"]);
            c.check(
                description.contains("$value"),
                format!("{name}: description does not show the current value ($value)"),
            );
            c.check(
                instance_or_job.is_match(description),
                format!("{name}: description names neither $labels.instance nor $labels.job"),
            );
            let url = str_at(rule, &["annotations", "runbook_url"]);
            let (base, anchor) = url.split_once('#').unwrap_or((url, ""));
            c.check(
                base.starts_with("https://") || base.starts_with("http://"),
                format!("{name}: runbook_url {url:?} is not absolute (Alertmanager and Grafana cannot open it)"),
            );
            c.check(
                base == runbook_base,
                format!(
                    "{name}: runbook_url {url:?} is not rules.toml's runbook_url {runbook_base:?}"
                ),
            );
            c.check(
                anchors.contains(anchor),
                format!("{name}: runbook_url anchor #{anchor} is not a heading in docs/runbook.md"),
            );
        }
        let (mut firing, mut silent) = (BTreeSet::new(), BTreeSet::new());
        for group in &tests {
            let group_name = group["name"].as_str().unwrap_or("(unnamed test group)");
            for case in group["alert_rule_test"].as_sequence().into_iter().flatten() {
                let alert = case["alertname"].as_str().unwrap_or("");
                let Some(rule) = alerts.get(alert) else {
                    c.check(
                        false,
                        format!("test {group_name:?}: alertname {alert:?} is not in alerts.yml"),
                    );
                    continue;
                };
                let expected = case["exp_alerts"]
                    .as_sequence()
                    .cloned()
                    .unwrap_or_default();
                if expected.is_empty() {
                    silent.insert(alert);
                    continue;
                }
                firing.insert(alert);
                let annotations: BTreeSet<&str> = strings_of_keys(&rule["annotations"]);
                for e in &expected {
                    c.check(
                        !str_at(e, &["exp_labels", "severity"]).is_empty(),
                        format!(
                            "test {group_name:?}: {alert} firing without asserting its severity"
                        ),
                    );
                    let asserted = strings_of_keys(&e["exp_annotations"]);
                    let missing: Vec<_> = annotations.difference(&asserted).collect();
                    c.check(
                        missing.is_empty(),
                        format!("test {group_name:?}: {alert} firing without asserting annotations {missing:?}"),
                    );
                }
            }
        }
        for name in alerts.keys() {
            c.check(
                firing.contains(name),
                format!("{name}: no test where it fires"),
            );
            c.check(
                silent.contains(name),
                format!("{name}: no test where it stays silent"),
            );
        }
    });
}

fn strings_of_keys(mapping: &Value) -> BTreeSet<&str> {
    mapping
        .as_mapping()
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| k.as_str())
        .collect()
}

#[test]
fn anchors_follow_github_s_rules() {
    let doc = "# Runbook\n## WsgateDown\n## Two words, and (punctuation)!\n```\n# not a heading\n```\n## WsgateDown\n<a id=\"custom\"></a>\n";
    let got = anchors(doc);
    let want = [
        "runbook",
        "wsgatedown",
        "two-words-and-punctuation",
        "wsgatedown-1",
        "custom",
    ];
    assert_eq!(got, want.iter().map(|s| s.to_string()).collect(), "{got:?}");
}
