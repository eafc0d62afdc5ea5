//! The PromQL the project ships (alert and recording rules, dashboard panels,
//! Grafana links, the runbook's and the SLO document's queries) selects
//! histogram buckets in a way that works on Prometheus 2 and 3 alike.
//!
//! Prometheus 3 normalises the `le` label of classic histograms when it
//! ingests them: the bucket wsgate exposes as `le="1"` is stored as
//! `le="1.0"`, while `le="0.25"` stays as it is. A selector such as
//! `le="1"` therefore matches nothing on Prometheus 3, and `le="1.0"` nothing
//! on Prometheus 2, silently: the query returns no data and an alert built on
//! it never fires. Only whole-number boundaries are affected, so a matcher on
//! `le` must either name a fractional boundary or match both spellings of a
//! whole one, e.g. `le=~"1(\\.0)?"`.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

/// One query and where it was found, for the failure message.
struct Query {
    place: String,
    expr: String,
}

/// A matcher on `le`: operator and the quoted value (PromQL accepts double,
/// single and back quotes).
static LE_MATCHER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"\ble\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)"#)
        .expect("valid regex")
});

/// Numbers written in a regex matcher; each whole one is a boundary to try.
static NUMBER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[0-9]+(?:\\*\.[0-9]+)?").expect("valid regex"));

/// Why a matcher on `le` breaks on one of the two versions, or `None`.
fn le_problem(op: &str, quoted: &str) -> Option<String> {
    let value = unquote(quoted);
    if op == "=" || op == "!=" {
        let whole = value
            .parse::<f64>()
            .is_ok_and(|f| f.is_finite() && f.fract() == 0.0);
        return whole.then(|| {
            format!(
                "le{op}{quoted} names a whole-number bucket, which Prometheus 2 stores as \
                 le=\"{n}\" and Prometheus 3 as le=\"{n}.0\": use le=~\"{n}(\\\\.0)?\"",
                n = value.trim_end_matches(".0")
            )
        });
    }
    let Ok(re) = Regex::new(&format!("^(?:{value})$")) else {
        return Some(format!("le{op}{quoted} is not a valid regex"));
    };
    for number in NUMBER.find_iter(&value) {
        let digits: String = number.as_str().replace('\\', "");
        let Ok(f) = digits.parse::<f64>() else {
            continue;
        };
        if !f.is_finite() || f.fract() != 0.0 {
            continue;
        }
        let v2 = format!("{f:.0}");
        let v3 = format!("{f:.0}.0");
        if re.is_match(&v2) != re.is_match(&v3) {
            return Some(format!(
                "le{op}{quoted} matches only one of le=\"{v2}\" (Prometheus 2) and \
                 le=\"{v3}\" (Prometheus 3): write {v2}(\\\\.0)?"
            ));
        }
    }
    None
}

/// The string a PromQL string literal denotes (back quotes are raw).
fn unquote(quoted: &str) -> String {
    let inner = &quoted[1..quoted.len() - 1];
    if quoted.starts_with('`') {
        return inner.to_owned();
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(escaped) = chars.next() {
                out.push(escaped);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Every `le` problem in the queries, one line each.
fn le_problems(queries: &[Query]) -> Vec<String> {
    let mut problems = Vec::new();
    for q in queries {
        for m in LE_MATCHER.captures_iter(&q.expr) {
            if let Some(why) = le_problem(&m[1], &m[2]) {
                problems.push(format!("{}: {why}", q.place));
            }
        }
    }
    problems
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Files under `dir` whose names end with one of `suffixes`, sorted.
fn files(dir: &str, suffixes: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![root().join(dir)];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.map(|e| e.expect("directory entry").path()) {
            if entry.is_dir() {
                pending.push(entry);
            } else if suffixes
                .iter()
                .any(|s| entry.to_string_lossy().ends_with(s))
            {
                found.push(entry);
            }
        }
    }
    found.sort();
    found
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Keys whose string values are PromQL, in rule files, dashboards and
/// Grafana provisioning (template variables, trace-to-metrics links).
const QUERY_KEYS: [&str; 3] = ["expr", "query", "definition"];

fn yaml_queries(value: &Yaml, place: &str, out: &mut Vec<Query>) {
    match value {
        Yaml::Mapping(map) => {
            // A rule names itself; use that in messages.
            let name = ["alert", "record", "name", "title"]
                .iter()
                .find_map(|k| map.get(*k).and_then(Yaml::as_str));
            let place = match name {
                Some(n) => format!("{place} > {n}"),
                None => place.to_owned(),
            };
            for (k, v) in map {
                match (k.as_str(), v.as_str()) {
                    (Some(k), Some(expr)) if QUERY_KEYS.contains(&k) => out.push(Query {
                        place: format!("{place} ({k})"),
                        expr: expr.to_owned(),
                    }),
                    _ => yaml_queries(v, &place, out),
                }
            }
        }
        Yaml::Sequence(items) => items.iter().for_each(|v| yaml_queries(v, place, out)),
        _ => {}
    }
}

fn json_queries(value: &Json, place: &str, out: &mut Vec<Query>) {
    match value {
        Json::Object(map) => {
            let place = match map.get("title").or(map.get("name")).and_then(Json::as_str) {
                Some(n) => format!("{place} > {n}"),
                None => place.to_owned(),
            };
            for (k, v) in map {
                match v.as_str() {
                    Some(expr) if QUERY_KEYS.contains(&k.as_str()) => out.push(Query {
                        place: format!("{place} ({k})"),
                        expr: expr.to_owned(),
                    }),
                    _ => json_queries(v, &place, out),
                }
            }
        }
        Json::Array(items) => items.iter().for_each(|v| json_queries(v, place, out)),
        _ => {}
    }
}

/// The fenced ```promql blocks of a Markdown file, one query per block.
fn markdown_queries(text: &str, place: &str, out: &mut Vec<Query>) {
    let mut block: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        let fence = line.trim_start();
        match &mut block {
            None if fence.starts_with("```promql") => block = Some((n + 1, String::new())),
            Some(_) if fence.starts_with("```") => {
                let (start, expr) = block.take().expect("open block");
                out.push(Query {
                    place: format!("{place}:{start}"),
                    expr,
                });
            }
            Some((_, expr)) => {
                expr.push_str(line);
                expr.push('\n');
            }
            None => {}
        }
    }
}

/// Every query the project ships, with where it is.
fn shipped_queries() -> Vec<Query> {
    let mut out = Vec::new();
    let mut yaml_files = files("prometheus", &[".yml", ".yaml"]);
    yaml_files.extend(files("grafana", &[".yml", ".yaml"]));
    for path in yaml_files {
        // Unit-test files feed input series, both spellings of `le` on
        // purpose; only their PromQL expression tests are queries.
        let doc: Yaml = serde_yaml_ng::from_str(&read(&path))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let doc = match doc.get("tests") {
            Some(tests) => tests_without_input(tests),
            None => doc,
        };
        yaml_queries(&doc, &relative(&path), &mut out);
    }
    for path in files("dashboards", &[".json"]) {
        let doc: Json = serde_json::from_str(&read(&path))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        json_queries(&doc, &relative(&path), &mut out);
    }
    for path in files("docs", &[".md"]) {
        markdown_queries(&read(&path), &relative(&path), &mut out);
    }
    out
}

/// A promtool test file's test groups without their `input_series`.
fn tests_without_input(tests: &Yaml) -> Yaml {
    let mut tests = tests.clone();
    if let Yaml::Sequence(groups) = &mut tests {
        for group in groups {
            if let Yaml::Mapping(map) = group {
                map.remove("input_series");
            }
        }
    }
    tests
}

#[test]
fn shipped_queries_select_whole_number_buckets_on_prometheus_2_and_3() {
    let queries = shipped_queries();
    // The walk must find the files it guards, or it proves nothing.
    for needle in [
        "prometheus/alerts.yml",
        "dashboards/wsgate.json",
        "docs/runbook.md",
    ] {
        assert!(
            queries.iter().any(|q| q.place.starts_with(needle)),
            "no queries found in {needle}"
        );
    }
    assert!(
        queries.iter().any(|q| LE_MATCHER.is_match(&q.expr)),
        "no `le` matcher found anywhere: the walk is broken"
    );
    let problems = le_problems(&queries);
    assert!(
        problems.is_empty(),
        "{} selector(s) on `le` that match nothing on Prometheus 2 or 3:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

#[track_caller]
fn check(query: &str, broken: bool) {
    let problems = le_problems(&[Query {
        place: "q".into(),
        expr: query.into(),
    }]);
    assert_eq!(!problems.is_empty(), broken, "{query}: {problems:?}");
}

#[test]
fn whole_number_le_selectors_are_caught_and_portable_ones_pass() {
    // Broken on one version or the other.
    check(r#"rate(x_bucket{le="1"}[5m])"#, true);
    check(r#"rate(x_bucket{job="a", le="10"}[5m])"#, true);
    check(r#"rate(x_bucket{le="1.0"}[5m])"#, true);
    check(r#"x_bucket{le!="86400"}"#, true);
    check(r#"x_bucket{le=~"1"}"#, true);
    check(r#"x_bucket{le=~"1\\.0"}"#, true);
    check(r#"x_bucket{le=~"0.5|1"}"#, true);
    check(r#"x_bucket{le='1'}"#, true);
    check(r#"x_bucket{le=`5`}"#, true);
    // Portable: both spellings, or a fractional boundary.
    check(r#"x_bucket{le=~"1(\\.0)?"}"#, false);
    check(r#"x_bucket{le=~`1(\.0)?`}"#, false);
    check(r#"x_bucket{le=~"0.5|1(\\.0)?"}"#, false);
    check(r#"x_bucket{le="0.25"}"#, false);
    check(r#"x_bucket{le="+Inf"}"#, false);
    check(r#"sum by (le) (rate(x_bucket[5m]))"#, false);
    check(r#"x{handle="1"}"#, false);
}
