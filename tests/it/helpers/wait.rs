//! Waiting with a deadline: tests poll for what they expect and never sleep
//! to synchronise; a missing external tool skips locally and fails in CI.

use std::future::Future;
use std::time::Duration;

/// How long any single expectation may take before the test fails. Generous:
/// it bounds waits on a loaded CI machine running debug builds, and costs
/// nothing when things work.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `probe` until it returns `Ok`, failing the test after [`DEADLINE`]
/// with the last `Err`, which says what was awaited and what was seen instead.
pub async fn poll_until<T>(mut probe: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(waiting) => assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting: {waiting}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Awaits `future`, failing the test after [`DEADLINE`].
pub async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(DEADLINE, future)
        .await
        .expect("timed out")
}

/// Whether tests may skip when an external tool is missing: never in CI.
pub fn require_tool(tool: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !in_ci,
            "{tool} is required in CI (CI=true) but is not on PATH; ./scripts/test installs it"
        );
        eprintln!(
            "\n*** SKIPPING: {tool} is not installed; run ./scripts/test to install it ***\n"
        );
    }
    found
}
