//! deploy/kubernetes/prometheusrule.yaml is what deploy/kubernetes/
//! generate-prometheusrule makes from the rule files prometheus/prometheus.yml
//! loads, and the generator follows rule files it has never seen. The
//! generator is the project's Python in .venv; only its exit status and the
//! YAML it writes are read.

use std::path::Path;
use std::process::Command;

use serde_yaml_ng::{Value, from_str, to_string};

use crate::checks::{Ran, checks, root, run, venv_tool};

fn generate(python: &Path, generator: &Path, check: bool) -> Ran {
    let mut command = Command::new(python);
    command.arg(generator);
    if check {
        command.arg("--check");
    }
    run(&mut command)
}

#[test]
fn prometheusrule_yaml_matches_a_fresh_generation() {
    let Some(python) = venv_tool("python3") else {
        return;
    };
    let ran = generate(
        &python,
        &root().join("deploy/kubernetes/generate-prometheusrule"),
        true,
    );
    assert!(
        ran.success,
        "deploy/kubernetes/prometheusrule.yaml differs from a fresh generation from the rule files \
         (run deploy/kubernetes/generate-prometheusrule):\n{}",
        ran.output()
    );
}

/// The generator on a made-up rule set: two files, one found by a glob,
/// groups in order; then --check notices an edit.
#[test]
fn the_generator_follows_rule_files_it_has_never_seen() {
    let Some(python) = venv_tool("python3") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temporary directory");
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("deploy/kubernetes")).expect("mkdir");
    std::fs::create_dir_all(dir.join("prometheus")).expect("mkdir");
    let generator = dir.join("deploy/kubernetes/generate-prometheusrule");
    std::fs::copy(
        root().join("deploy/kubernetes/generate-prometheusrule"),
        &generator,
    )
    .expect("copying the generator");
    // The generator re-executes itself in <its repository>/.venv unless it
    // already runs there: this copy's repository shares the real one.
    std::os::unix::fs::symlink(root().join(".venv"), dir.join(".venv")).expect("symlink");
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join("prometheus").join(name), text).expect("writing a rule file")
    };
    write(
        "prometheus.yml",
        "rule_files:\n  - first.yml\n  - extra_*.yml\n",
    );
    let mut first: Value = from_str(
        "groups:\n- name: g1\n  rules:\n  - alert: A\n    expr: up == 0\n    for: 1m\n    annotations:\n      description: \"two\\nlines\"\n",
    )
    .expect("YAML");
    let extra: Value = from_str(
        "groups:\n- name: g2\n  interval: 30s\n  rules:\n  - record: job:up:sum\n    expr: sum by (job) (up)\n\
         - name: g3\n  rules:\n  - alert: B\n    expr: '1'\n    labels:\n      severity: ticket\n",
    )
    .expect("YAML");
    write("first.yml", &to_string(&first).expect("YAML"));
    write("extra_slo.yml", &to_string(&extra).expect("YAML"));

    let made = generate(&python, &generator, false);
    assert!(
        made.success,
        "generator self-test: it cannot generate from an unseen rule set:\n{}",
        made.output()
    );
    checks("generator self-test", |c| {
        let output = std::fs::read_to_string(dir.join("deploy/kubernetes/prometheusrule.yaml"))
            .expect("the generated file");
        let output: Value = from_str(&output).expect("the generated file is YAML");
        let expected: Vec<Value> = [&first, &extra]
            .iter()
            .flat_map(|f| f["groups"].as_sequence().cloned().unwrap_or_default())
            .collect();
        c.check(
            output["spec"]["groups"].as_sequence() == Some(&expected),
            "generator self-test: the PrometheusRule holds every group of every rule file, in order, unchanged",
        );
        c.check(
            generate(&python, &generator, true).success,
            "generator self-test: --check passes right after generating",
        );
        first["groups"][0]["rules"][0]["for"] = Value::from("2m");
        write("first.yml", &to_string(&first).expect("YAML"));
        c.check(
            !generate(&python, &generator, true).success,
            "generator self-test: --check fails once a rule file changes",
        );
    });
}
