//! Records the git commit the binary is built from, for the `revision` label of
//! `wsgate_build_info`.
//!
//! The revision reaches the code as the compile-time variable
//! `WSGATE_BUILD_REVISION`. A build that sets it itself (an image built from a
//! tarball or a copied tree, which has no `.git`) wins; otherwise this script
//! asks git. When neither works the code falls back to `unknown`: a build never
//! fails for want of version control.

use std::path::Path;
use std::process::Command;

const VAR: &str = "WSGATE_BUILD_REVISION";

fn main() {
    println!("cargo:rerun-if-env-changed={VAR}");
    if std::env::var_os(VAR).is_some_and(|v| !v.is_empty()) {
        // rustc inherits it from the environment; `option_env!` reads it there.
        return;
    }
    let Some(revision) = git(&["rev-parse", "--verify", "HEAD"]) else {
        return;
    };
    println!("cargo:rustc-env={VAR}={revision}");
    // Rebuild when HEAD moves: a commit, a checkout or a reset rewrites HEAD
    // (detached) or the branch's ref (loose or packed). Only existing paths
    // are named, because Cargo reruns the script on every build for a path
    // that does not exist.
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(&["symbolic-ref", "--quiet", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &branch]));
        watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    }
    for path in watched.into_iter().flatten() {
        if Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}

/// The trimmed output of a successful git command, or `None` (no git, not a
/// repository, or a repository git refuses to read).
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}
