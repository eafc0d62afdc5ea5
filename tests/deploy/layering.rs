//! The layering ARCHITECTURE.md states, enforced on the code (in the manner of
//! rust-analyzer's `tidy` tests):
//! - inside the gateway crate, every `crate::<module>` a module names is a
//!   layer below its own, in the order of the `layers` block of
//!   ARCHITECTURE.md, and every top-level module is in that block;
//! - the member crates depend only on what their boundary allows:
//!   `wsgate-protocol` on no runtime, telemetry or HTTP crate, `wsgate-bench`
//!   not on the gateway.
//!
//! And three invariants a reader of the imports can check, so this file does:
//! JSON stays in the protocol crate, every instrument is declared in
//! `telemetry/`, and no second rustls crypto provider is in the build.
//!
//! A module's own tests (`tests.rs`, `*_tests.rs`, a trailing
//! `#[cfg(test)] mod tests`, or `pub(super) mod tests` shared with a
//! sibling's tests) may reach anywhere: they are not layers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::checks::{cargo_metadata, checks, root, text};

/// The gateway's layers, top (entry) first, from ARCHITECTURE.md's fenced
/// block tagged `layers`: one module per line, `#` starts a comment.
fn layers() -> Vec<String> {
    let doc = text("ARCHITECTURE.md");
    let block = doc
        .split("```layers\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("ARCHITECTURE.md has a ```layers block");
    block
        .lines()
        .map(|line| line.split('#').next().unwrap_or("").trim().to_owned())
        .filter(|module| !module.is_empty())
        .collect()
}

/// Every non-test source file of the gateway crate: its path under src/, its
/// top-level module, and its code without its trailing test module.
fn sources() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let src = root().join("src");
    for path in rust_files(&src) {
        let relative = path.strip_prefix(&src).expect("under src");
        let top = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .expect("a file name")
            .trim_end_matches(".rs")
            .to_owned();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if matches!(top.as_str(), "main" | "lib")
            || name == "tests.rs"
            || name.ends_with("_tests.rs")
        {
            continue;
        }
        let source = std::fs::read_to_string(&path).expect("a source file");
        // The trailing test module, private or shared with a sibling's tests.
        let code = [
            "#[cfg(test)]\nmod tests",
            "#[cfg(test)]\npub(super) mod tests",
        ]
        .iter()
        .filter_map(|marker| source.find(marker))
        .min()
        .map_or(source.as_str(), |at| &source[..at])
        .to_owned();
        out.push((relative.display().to_string(), top, code));
    }
    out
}

/// Every top-level module of the gateway crate and the modules it names as
/// `crate::<module>` outside its tests.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (_, top, code) in sources() {
        let names = graph.entry(top.clone()).or_default();
        for (at, _) in code.match_indices("crate::") {
            let module: String = code[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !module.is_empty() && module != top {
                names.insert(module);
            }
        }
    }
    graph
}

fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("a source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

#[test]
fn every_module_imports_only_the_layers_below_it() {
    let layers = layers();
    let rank = |module: &str| layers.iter().position(|l| l == module);
    let graph = imports();
    checks("the layers of ARCHITECTURE.md", |c| {
        for module in graph.keys() {
            c.check(
                rank(module).is_some(),
                format!("src/{module} is a top-level module missing from the `layers` block"),
            );
        }
        for layer in &layers {
            c.check(
                graph.contains_key(layer),
                format!("the `layers` block names `{layer}`, which is not a module of src/"),
            );
        }
        for (module, names) in &graph {
            for name in names {
                if let (Some(from), Some(to)) = (rank(module), rank(name)) {
                    c.check(
                        to > from,
                        format!(
                            "src/{module} uses crate::{name}, which is not below it \
                             (an upward edge or a cycle)"
                        ),
                    );
                }
            }
        }
    });
}

/// What each member crate must not depend on, by its boundary.
const FORBIDDEN: &[(&str, &[&str])] = &[
    (
        "wsgate-protocol",
        &[
            "tokio",
            "tokio-tungstenite",
            "axum",
            "hyper",
            "opentelemetry",
            "opentelemetry_sdk",
            "tracing",
            "wsgate",
            "wsgate-bench",
        ],
    ),
    (
        "wsgate-bench",
        &["wsgate", "opentelemetry", "axum", "hyper"],
    ),
];

#[test]
fn member_crates_keep_to_their_boundaries() {
    let meta = cargo_metadata(root());
    assert!(meta.success, "cargo metadata: {}", meta.output());
    let meta: serde_json::Value = serde_json::from_str(&meta.stdout).expect("JSON");
    let packages = meta["packages"].as_array().expect("packages");
    checks("the member crates' dependencies", |c| {
        for (name, forbidden) in FORBIDDEN {
            let package = packages.iter().find(|p| p["name"] == *name);
            if !c.check(package.is_some(), format!("{name} is a workspace member")) {
                continue;
            }
            for dependency in package.unwrap()["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let normal = dependency["kind"].is_null();
                let dep = dependency["name"].as_str().unwrap_or("");
                c.check(
                    !normal || !forbidden.contains(&dep),
                    format!("{name} depends on {dep}, which its boundary forbids"),
                );
            }
        }
    });
}

#[test]
fn the_check_reads_edges_as_the_compiler_would() {
    // The graph must see a known edge and no test-only one: state uses the
    // hub; the hub uses nothing above it.
    let graph = imports();
    assert!(graph["state"].contains("hub"), "{:?}", graph["state"]);
    assert!(!graph["hub"].contains("telemetry"), "{:?}", graph["hub"]);
}

/// The gateway holds a message's data as an opaque `RawValue`; decoding and
/// encoding JSON is the protocol crate's.
#[test]
fn json_stays_in_the_protocol_crate() {
    checks("JSON in the gateway crate", |c| {
        for (file, _, code) in sources() {
            for (at, _) in code.match_indices("serde_json") {
                let path: String = code[at..]
                    .chars()
                    .take_while(|ch| ch.is_alphanumeric() || matches!(ch, '_' | ':'))
                    .collect();
                c.check(
                    path == "serde_json::value::RawValue",
                    format!("src/{file} uses {path}: only wsgate-protocol handles JSON"),
                );
            }
        }
    });
}

/// Instruments are created in `telemetry/` only, where their names, units and
/// closed label sets are reviewed together.
#[test]
fn every_instrument_is_declared_in_telemetry() {
    // The OTel meter's builders: `u64_counter(`, `f64_histogram(`,
    // `i64_up_down_counter(`, `u64_observable_gauge(`, ...
    let builder =
        regex::Regex::new(r"\b[uif]64_(observable_)?(counter|up_down_counter|histogram|gauge)\(")
            .expect("regex");
    checks("instruments outside src/telemetry/", |c| {
        for (file, top, code) in sources() {
            if let Some(found) = builder.find(&code) {
                c.check(
                    top == "telemetry",
                    format!(
                        "src/{file} creates an instrument (`{}`): declare it in src/telemetry/",
                        found.as_str()
                    ),
                );
            }
        }
    });
}

/// One rustls crypto provider, ring: with a second one compiled in, rustls
/// panics wherever it has to pick one itself.
#[test]
fn no_second_crypto_provider_is_in_the_build() {
    let lock = text("Cargo.lock");
    for provider in ["aws-lc-rs", "aws-lc-sys"] {
        assert!(
            !lock.contains(&format!("name = \"{provider}\"")),
            "Cargo.lock holds {provider}: find who brings it (cargo tree -i {provider}) and turn it off"
        );
    }
}
