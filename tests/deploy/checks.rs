//! The vocabulary of the deployment checks: the repository's files as serde
//! values, a collector that reports every problem of a test at once, the
//! duration and size notations the files use, and the real tools some checks
//! hand a file to.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::LazyLock;

use regex::Regex;
use serde_yaml_ng::Value;

/// The repository root: every path in these checks is relative to it, as the
/// files name each other (compose mounts `./prometheus`, and so on).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A file's text; a missing file fails the test with its path.
#[track_caller]
pub fn text(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// One YAML document with its `<<` merge keys applied, as compose and every
/// other reader of these files sees it.
#[track_caller]
pub fn yaml(path: &str) -> Value {
    parse_yaml(&text(path), path)
}

#[track_caller]
pub fn parse_yaml(text: &str, what: &str) -> Value {
    let mut value: Value =
        serde_yaml_ng::from_str(text).unwrap_or_else(|e| panic!("{what} is not YAML: {e}"));
    value
        .apply_merge()
        .unwrap_or_else(|e| panic!("{what}: its merge keys do not apply: {e}"));
    value
}

/// Every non-empty document of a YAML stream (`---`-separated), as kustomize
/// writes them and as the manifests hold them.
#[track_caller]
pub fn yaml_documents(text: &str, what: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|document| {
            <Value as serde::Deserialize>::deserialize(document)
                .unwrap_or_else(|e| panic!("{what} is not YAML: {e}"))
        })
        .filter(|document| !document.is_null())
        .collect()
}

/// A YAML scalar as the text a program reading it would see (`"10s"`, `2`,
/// `true`); `None` for null, a mapping or a sequence.
pub fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The keys of a mapping (none for anything else), in file order.
pub fn keys(value: &Value) -> impl Iterator<Item = &str> {
    value
        .as_mapping()
        .into_iter()
        .flat_map(|m| m.keys().filter_map(Value::as_str))
}

/// Whether a mapping has a key, whatever its value (`batch:` defines a
/// component with its default settings).
pub fn has_key(value: &Value, key: &str) -> bool {
    value.as_mapping().is_some_and(|m| m.contains_key(key))
}

/// The strings of a sequence (none for anything else).
pub fn strings(value: &Value) -> Vec<&str> {
    value
        .as_sequence()
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The problems one test found. Each check is a condition and the sentence
/// that holds when it is true, naming the file and the place; the test fails
/// once, at the end, listing every sentence that did not hold, so one run
/// shows everything to fix.
#[derive(Default)]
pub struct Checks {
    passed: usize,
    problems: Vec<String>,
}

impl Checks {
    pub fn check(&mut self, condition: bool, message: impl Into<String>) -> bool {
        if condition {
            self.passed += 1;
        } else {
            self.problems.push(message.into());
        }
        condition
    }

    /// The problems found so far, for a test of a check itself.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }
}

/// Runs `body`'s checks and fails the test with all the problems it found. A
/// closure rather than a value to finish, so a check can never be forgotten
/// unreported.
#[track_caller]
pub fn checks(what: &str, body: impl FnOnce(&mut Checks)) {
    let mut checks = Checks::default();
    body(&mut checks);
    report(what, checks);
}

/// `checks` for a body that talks to servers (the live dashboard check).
pub async fn checks_async(what: &str, body: impl AsyncFnOnce(&mut Checks)) {
    let mut checks = Checks::default();
    body(&mut checks).await;
    report(what, checks);
}

#[track_caller]
fn report(what: &str, checks: Checks) {
    assert!(
        checks.passed + checks.problems.len() > 0,
        "{what}: checked nothing"
    );
    if !checks.problems.is_empty() {
        let list: Vec<String> = checks
            .problems
            .iter()
            .map(|p| format!("  FAIL {p}"))
            .collect();
        panic!(
            "{what}: {} problem(s):\n{}",
            checks.problems.len(),
            list.join("\n")
        );
    }
}

static GO_DURATION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$").expect("regex"));
static GO_DURATION_PART: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)").expect("regex"));

/// Seconds in a Go duration such as `1m30s` or `10s`, the notation of compose,
/// the collector and wsgate's own duration flags; `None` if it is not one.
pub fn go_seconds(text: &str) -> Option<f64> {
    let text = text.trim();
    if !GO_DURATION.is_match(text) {
        return None;
    }
    let seconds = GO_DURATION_PART.captures_iter(text).map(|c| {
        let unit = match &c[2] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            _ => 3600.0,
        };
        c[1].parse::<f64>().expect("digits") * unit
    });
    Some(seconds.sum())
}

/// MiB in a compose byte value such as `512m` or `1g`.
pub fn mebibytes(text: &str) -> Option<f64> {
    let text = text.trim().to_lowercase();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let number: f64 = text[..split].parse().ok()?;
    let scale = match &text[split..] {
        "" | "b" => 1.0 / f64::from(1 << 20),
        "k" => 1.0 / 1024.0,
        "m" => 1.0,
        "g" => 1024.0,
        _ => return None,
    };
    Some(number * scale)
}

/// Whether CI is running this: there a missing tool fails the test, which
/// `./scripts/test` installed; elsewhere the test says it skips and passes.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A Python tool from the project's virtual environment (`scripts/venv`
/// makes it from scripts/requirements.txt), or `None` after saying the test
/// skips; in CI its absence fails the test.
#[track_caller]
pub fn venv_tool(tool: &str) -> Option<PathBuf> {
    let path = root().join(".venv/bin").join(tool);
    if path.is_file() {
        return Some(path);
    }
    assert!(
        !in_ci(),
        "{tool} is required in CI (CI=true) but is not in .venv; ./scripts/test installs it"
    );
    eprintln!(
        "\n*** SKIPPING: .venv/bin/{tool} is missing; run ./scripts/venv to install it ***\n"
    );
    None
}

/// A program from a Debian package (`./scripts/install-test-deps` installs
/// it), on PATH or in /usr/bin or /usr/sbin; `None` after saying the test
/// skips, and in CI its absence fails the test.
#[track_caller]
pub fn system_tool(tool: &str) -> Option<PathBuf> {
    let found = on_path(tool).or_else(|| {
        ["/usr/bin", "/usr/sbin"]
            .iter()
            .map(|dir| Path::new(dir).join(tool))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            !in_ci(),
            "{tool} is required in CI (CI=true) but is missing; ./scripts/install-test-deps installs it"
        );
        eprintln!("\n*** SKIPPING: {tool} is missing; run ./scripts/install-test-deps ***\n");
    }
    found
}

/// A program on PATH, if there is one.
pub fn on_path(tool: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

/// What a tool did: its exit status and its two outputs, for a check's message.
pub struct Ran {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// The outputs, shortened to their end, for a failure message: shown to the
    /// reader, never interpreted.
    pub fn output(&self) -> String {
        let both = format!("{}\n{}", self.stdout.trim(), self.stderr.trim());
        let both = both.trim();
        let start = both.len().saturating_sub(1500);
        let start = (start..both.len())
            .find(|&i| both.is_char_boundary(i))
            .unwrap_or(0);
        both[start..].to_owned()
    }
}

/// Runs a command to its end; a command that cannot start fails the test.
#[track_caller]
pub fn run(command: &mut Command) -> Ran {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    Ran {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn durations_and_sizes_read_as_their_tools_read_them() {
    assert_eq!(go_seconds("1m30s"), Some(90.0));
    assert_eq!(go_seconds("2500us"), Some(0.0025));
    assert_eq!(go_seconds("10"), None);
    assert_eq!(go_seconds("5 minutes"), None);
    assert_eq!(mebibytes("512m"), Some(512.0));
    assert_eq!(mebibytes("1g"), Some(1024.0));
    assert_eq!(mebibytes("lots"), None);
}

/// `cargo metadata` for the workspace at `dir`, its own packages only, without
/// touching the network: what the manifests declare, as JSON.
pub fn cargo_metadata(dir: &Path) -> Ran {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    run(Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(dir))
}
