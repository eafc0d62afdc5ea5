//! What the bench says on stderr while it runs: `indicatif` bars on a terminal,
//! and a line per phase (which scripts can wait for, e.g. `holding`).

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug, Clone, Copy)]
pub struct Ui {
    bars: bool,
    lines: bool,
}

impl Ui {
    /// Bars only on a terminal and never with `--json`; phase lines always.
    pub fn for_terminal(json: bool) -> Self {
        Self {
            bars: !json && std::io::stderr().is_terminal(),
            lines: true,
        }
    }

    /// Says nothing: for tests and embedding.
    pub fn silent() -> Self {
        Self {
            bars: false,
            lines: false,
        }
    }

    /// A bar counting to `len`, or a hidden one.
    pub fn bar(&self, len: u64, what: &'static str) -> ProgressBar {
        if !self.bars {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{prefix:>10} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(what);
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }

    pub fn line(&self, message: std::fmt::Arguments<'_>) {
        if self.lines {
            eprintln!("wsgate-bench: {message}");
        }
    }
}
