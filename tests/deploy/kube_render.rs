//! deploy/kubernetes and its overlays as a cluster would receive them. With
//! kubectl on PATH (it embeds kustomize) the base and every overlay are
//! rendered by `kubectl kustomize`; without it the base is read directly (it
//! only lists plain files) and the overlays are only checked for their files.
//! kubectl is not required in CI (no Debian package ships it), as before.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_yaml_ng::Value;

use crate::checks::{Ran, checks, keys, on_path, root, run, strings, yaml_documents};

/// One rendering: `base`, or an overlay's path, and its documents.
pub struct Rendered {
    pub name: String,
    pub docs: Vec<Value>,
}

fn base() -> PathBuf {
    root().join("deploy/kubernetes")
}

fn overlays() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/overlays"))
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|dir| dir.join("kustomization.yaml").is_file())
        .collect();
    found.sort();
    found
}

fn shown(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

fn kustomization(directory: &Path) -> Value {
    crate::checks::yaml(&shown(&directory.join("kustomization.yaml")))
}

/// The base's documents read without kustomize, from the files it lists.
fn base_read_directly() -> Vec<Value> {
    let kustomization = kustomization(&base());
    strings(&kustomization["resources"])
        .into_iter()
        .flat_map(|resource| {
            let path = base().join(resource);
            let text =
                std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", shown(&path)));
            yaml_documents(&text, &shown(&path))
        })
        .collect()
}

fn kustomize(kubectl: &Path, directory: &Path) -> Ran {
    run(Command::new(kubectl).arg("kustomize").arg(directory))
}

/// (kind, name) order, in which two renderings of the same resources compare.
fn sorted(mut docs: Vec<Value>) -> Vec<Value> {
    let key = |d: &Value| {
        (
            d["kind"].as_str().unwrap_or("").to_owned(),
            d["metadata"]["name"].as_str().unwrap_or("").to_owned(),
        )
    };
    docs.sort_by_key(key);
    docs
}

/// The base and each overlay, rendered once per test run; a rendering that
/// fails fails every test that needs it, with kubectl's message.
pub fn rendered() -> &'static [Rendered] {
    static RENDERED: OnceLock<Vec<Rendered>> = OnceLock::new();
    RENDERED.get_or_init(|| {
        let Some(kubectl) = on_path("kubectl") else {
            eprintln!("deploy tests: kubectl is not on PATH: the base is read directly and the overlays are not rendered");
            return vec![Rendered { name: "base".to_owned(), docs: base_read_directly() }];
        };
        std::iter::once(("base".to_owned(), base()))
            .chain(overlays().into_iter().map(|o| (shown(&o), o)))
            .map(|(name, directory)| {
                let ran = kustomize(&kubectl, &directory);
                assert!(ran.success, "kubectl kustomize {} fails:\n{}", shown(&directory), ran.output());
                let docs = yaml_documents(&ran.stdout, &format!("kubectl kustomize {name}"));
                Rendered { name, docs }
            })
            .collect()
    })
}

#[test]
fn the_base_is_plain_yaml_that_kustomize_renders_unchanged() {
    let kustomization = kustomization(&base());
    checks("deploy/kubernetes", |c| {
        let extra: Vec<&str> = keys(&kustomization)
            .filter(|k| !["apiVersion", "kind", "resources"].contains(k))
            .collect();
        c.check(
            extra.is_empty(),
            format!("deploy/kubernetes: the base uses no kustomize transformation (found {extra:?}), so it renders without kustomize"),
        );
        for resource in strings(&kustomization["resources"]) {
            c.check(
                base().join(resource).is_file(),
                format!("deploy/kubernetes: resource {resource} exists"),
            );
        }
        if let Some(kubectl) = on_path("kubectl") {
            let ran = kustomize(&kubectl, &base());
            if c.check(
                ran.success,
                format!(
                    "kubectl kustomize deploy/kubernetes renders: {}",
                    ran.output()
                ),
            ) {
                let docs = yaml_documents(&ran.stdout, "kubectl kustomize deploy/kubernetes");
                c.check(
                    sorted(docs) == sorted(base_read_directly()),
                    "kubectl kustomize renders the base exactly as its plain files read",
                );
            }
        }
    });
}

#[test]
fn every_overlay_renders() {
    let overlays = overlays();
    checks("deploy/overlays", |c| {
        c.check(
            !overlays.is_empty(),
            "there is an overlay to render (deploy/overlays)",
        );
        let kubectl = on_path("kubectl");
        for overlay in &overlays {
            match &kubectl {
                Some(kubectl) => {
                    let ran = kustomize(kubectl, overlay);
                    c.check(
                        ran.success,
                        format!(
                            "kubectl kustomize {} renders: {}",
                            shown(overlay),
                            ran.output()
                        ),
                    );
                }
                None => {
                    let kustomization = kustomization(overlay);
                    let listed = strings(&kustomization["resources"])
                        .into_iter()
                        .chain(strings(&kustomization["components"]));
                    for path in listed {
                        c.check(
                            overlay.join(path).exists(),
                            format!("{}: {path} exists", shown(overlay)),
                        );
                    }
                }
            }
        }
    });
}
