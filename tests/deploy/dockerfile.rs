//! The Dockerfile builds with exactly the command CI runs (scripts/test), in
//! two steps: the dependencies in a layer of their own, against placeholder
//! sources, before the sources arrive; then wsgate. The placeholders are run
//! and cargo is asked whether they cover every target the manifest declares.

use std::path::Path;
use std::process::Command;

use regex::Regex;

use crate::checks::{Checks, cargo_metadata, checks, root, run, text};

const BUILD_COMMAND: &str = "cargo build --release --locked --workspace --bins";

/// The instructions, continuation lines joined and whitespace collapsed, in order.
fn instructions(dockerfile: &str) -> Vec<String> {
    let instruction = Regex::new(r"(?m)^[A-Z]+ (?:.*\\\n)*.*$").expect("regex");
    instruction
        .find_iter(dockerfile)
        .map(|m| {
            m.as_str()
                .replace("\\\n", " ")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[test]
fn the_image_is_built_as_ci_builds_in_a_cached_dependency_layer() {
    let dockerfile = text("Dockerfile");
    let all = instructions(&dockerfile);
    let end = all
        .iter()
        .skip(1)
        .position(|i| i.starts_with("FROM "))
        .map_or(all.len(), |i| i + 1);
    let build_stage = &all[..end];
    let index = |predicate: &dyn Fn(&str) -> bool| build_stage.iter().position(|i| predicate(i));
    let manifests_pattern = Regex::new(r"^COPY Cargo\.toml Cargo\.lock \S+$").expect("regex");
    let manifests = index(&|i| manifests_pattern.is_match(i));
    let sources = index(&|i| i.starts_with("COPY src"));
    let builds: Vec<usize> = (0..build_stage.len())
        .filter(|&i| build_stage[i].starts_with("RUN ") && build_stage[i].contains(BUILD_COMMAND))
        .collect();
    let run_alone = Regex::new(&format!(
        r"(^RUN |&& ){}( &&|$)",
        regex::escape(BUILD_COMMAND)
    ))
    .expect("regex");
    checks("Dockerfile", |c| {
        c.check(
            matches!((manifests, sources), (Some(m), Some(s)) if m < s),
            "Dockerfile: Cargo.toml and Cargo.lock are copied on their own, before the sources",
        );
        c.check(
            matches!((manifests, sources, &builds[..]), (Some(m), Some(s), [first, second]) if m < *first && *first < s && s < *second),
            "Dockerfile: the dependencies are built before `COPY src` (a cached layer), then wsgate after it",
        );
        let found: Vec<&String> = builds.iter().map(|&i| &build_stage[i]).collect();
        c.check(
            found.iter().all(|run| run_alone.is_match(run)),
            format!("Dockerfile builds with `{BUILD_COMMAND}` (found {found:?})"),
        );
        if let [first, second] = builds[..] {
            c.check(
                build_stage[second].contains("find src crates -name '*.rs' -exec touch {} +"),
                "Dockerfile: the real sources are touched before the final build (COPY keeps older mtimes than the placeholder build)",
            );
            let copies: Vec<&String> = build_stage[..first]
                .iter()
                .filter(|i| i.starts_with("COPY "))
                .collect();
            placeholders(c, &copies, &build_stage[first]);
        }
        c.check(
            text("scripts/test").contains(BUILD_COMMAND),
            "scripts/test (CI) runs the Dockerfile's build command",
        );
        c.check(
            dockerfile.lines().any(|l| {
                l.strip_prefix("USER ")
                    .is_some_and(|user| !user.trim().is_empty() && !user.starts_with("root"))
            }),
            "the runtime stage runs as a non-root user",
        );
        c.check(
            dockerfile
                .lines()
                .filter(|l| l.starts_with("FROM "))
                .count()
                == 2,
            "the Dockerfile is multi-stage (build, then a small runtime)",
        );
        c.check(
            all[end..].iter().any(|i| {
                i.starts_with("COPY --from=build")
                    && i.contains("/target/release/wsgate ")
                    && i.contains("/target/release/wsgate-bench ")
            }),
            "the runtime stage ships both binaries, wsgate and wsgate-bench",
        );
        c.check(
            dockerfile.contains("rust:1.95"),
            "the build stage uses the toolchain CI uses (1.95)",
        );
    });
}

/// Copies what the dependency layer's COPY instructions copy (the workspace's
/// manifests), runs its placeholder commands (everything before its cargo
/// build), then asks cargo where each target's source must be: each must
/// exist, or the layer fails to build.
fn placeholders(c: &mut Checks, copies: &[&String], run_instruction: &str) {
    let script = run_instruction
        .trim_start_matches("RUN ")
        .split(BUILD_COMMAND)
        .next()
        .unwrap_or("");
    let script = script.trim_end().trim_end_matches("&&").trim();
    let dir = tempfile::tempdir().expect("temporary directory");
    for copy in copies {
        let words: Vec<&str> = copy.split_whitespace().skip(1).collect();
        let Some((dest, sources)) = words.split_last() else {
            continue;
        };
        for source in sources {
            let target = match dest.strip_suffix('/') {
                Some(_) => dir
                    .path()
                    .join(dest)
                    .join(Path::new(source).file_name().unwrap()),
                None => dir.path().join(dest),
            };
            std::fs::create_dir_all(target.parent().unwrap()).expect("a directory");
            if let Err(e) = std::fs::copy(root().join(source), &target) {
                c.check(
                    false,
                    format!("Dockerfile: `{copy}` copies {source}, which exists ({e})"),
                );
            }
        }
    }
    let ran = run(Command::new("bash")
        .args(["-euc", script])
        .current_dir(dir.path()));
    c.check(
        ran.success,
        format!(
            "Dockerfile: the placeholder commands run ({})",
            ran.output()
        ),
    );
    let meta = cargo_metadata(dir.path());
    if !c.check(
        meta.success,
        format!(
            "Dockerfile: cargo reads the manifests next to the placeholders ({})",
            meta.output()
        ),
    ) {
        return;
    }
    let meta: serde_json::Value =
        serde_json::from_str(&meta.stdout).expect("cargo metadata prints JSON");
    for package in meta["packages"].as_array().into_iter().flatten() {
        for target in package["targets"].as_array().into_iter().flatten() {
            let source = Path::new(target["src_path"].as_str().unwrap_or(""));
            let shown = source.strip_prefix(dir.path()).unwrap_or(source).display();
            c.check(
                source.exists(),
                format!(
                    "Dockerfile: the dependency layer's placeholders include {shown} (target {})",
                    target["name"]
                ),
            );
        }
    }
}
