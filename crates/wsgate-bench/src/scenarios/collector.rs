//! A real OpenTelemetry collector for the traced runs: rotel (a Rust OTLP
//! collector shipped on PyPI as a wheel), receiving OTLP/gRPC and discarding
//! it (blackhole exporter), on the bench's CPU. It is found in the project's
//! `.venv` (installed there by `scripts/venv rotel` when missing) unless
//! `--rotel` names it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

use super::pin;

/// A running rotel.
pub struct Collector {
    child: Child,
    /// `http://127.0.0.1:<port>`, its OTLP/gRPC endpoint.
    pub endpoint: String,
}

impl Collector {
    pub async fn start(rotel: &Path, log: &Path, cpu: Option<usize>) -> anyhow::Result<Self> {
        // A port the kernel just handed out and we released: rotel binds it
        // right after (rotel cannot report a port of its own choosing).
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let grpc = format!("127.0.0.1:{port}");
        let mut command = Command::new(rotel);
        command
            .args(["start", "--exporter", "blackhole", "--otlp-grpc-endpoint"])
            .arg(&grpc)
            .args(["--otlp-http-endpoint", "127.0.0.1:0"]);
        let mut child = pin::spawn_logged(command, log, cpu)?;
        let addr: SocketAddr = grpc.parse()?;
        for _ in 0..100 {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(50)).is_ok() {
                break;
            }
            if let Some(status) = child.try_wait()? {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                bail!("rotel exited ({status}): {text}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self {
            child,
            endpoint: format!("http://{grpc}"),
        })
    }

    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
            // SAFETY: kill only signals our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// rotel's binary: `explicit` if given, else the nearest `.venv`'s, installed
/// with the nearest `scripts/venv rotel` when missing.
pub fn find_rotel(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_owned());
    }
    let cwd = std::env::current_dir()?;
    if let Some(found) = cwd.ancestors().find_map(venv_rotel) {
        return Ok(found);
    }
    let Some(root) = cwd.ancestors().find(|d| d.join("scripts/venv").is_file()) else {
        bail!(
            "rotel not found: pass --rotel PATH (pip install rotel; the binary is site-packages/rotel/rotel-agent)"
        );
    };
    eprintln!("wsgate-bench scenarios: installing rotel into .venv (scripts/venv rotel)");
    let status = std::process::Command::new(root.join("scripts/venv"))
        .arg("rotel")
        .stdout(std::io::stderr())
        .status()
        .context("running scripts/venv rotel")?;
    if !status.success() {
        bail!("scripts/venv rotel failed ({status})");
    }
    venv_rotel(root).context("scripts/venv rotel installed no rotel-agent")
}

/// `<dir>/.venv/lib/python*/site-packages/rotel/rotel-agent`, if it exists.
fn venv_rotel(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir.join(".venv/lib"))
        .ok()?
        .flatten()
        .map(|python| python.path().join("site-packages/rotel/rotel-agent"))
        .find(|agent| agent.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_rotel_in_a_venv() {
        let dir = std::env::temp_dir().join(format!("wsgate-rotel-{}", std::process::id()));
        let pkg = dir.join(".venv/lib/python3.11/site-packages/rotel");
        std::fs::create_dir_all(&pkg).unwrap();
        assert_eq!(venv_rotel(&dir), None);
        std::fs::write(pkg.join("rotel-agent"), "").unwrap();
        assert_eq!(venv_rotel(&dir), Some(pkg.join("rotel-agent")));
        let explicit = Path::new("/opt/rotel-agent");
        assert_eq!(find_rotel(Some(explicit)).unwrap(), explicit);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
