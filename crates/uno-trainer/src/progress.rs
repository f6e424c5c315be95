//! Progress bar with ETA (indicatif), drawn only when enabled and stdout is a terminal, so
//! logs and CI output stay clean.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Thin wrapper over an indicatif bar counting optimizer steps.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar for `total` steps starting at `start`; hidden unless `enabled` and stdout is a
    /// terminal.
    pub fn new(total: u64, start: u64, enabled: bool) -> Self {
        let target = if enabled && std::io::stdout().is_terminal() {
            ProgressDrawTarget::stdout()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(total), target);
        if let Ok(style) = ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise} < {eta_precise}] {msg}",
        ) {
            bar.set_style(style);
        }
        bar.set_position(start);
        Self { bar }
    }

    /// Whether anything is drawn.
    pub fn is_hidden(&self) -> bool {
        self.bar.is_hidden()
    }

    /// Move to `step` and show the latest loss and learning rate.
    pub fn update(&self, step: u64, loss: f64, lr: f64, skipped: bool) {
        self.bar.set_position(step);
        let flag = if skipped { " SKIPPED" } else { "" };
        self.bar
            .set_message(format!("loss {loss:.4} lr {lr:.2e}{flag}"));
    }

    /// Leave the bar at its final state.
    pub fn finish(&self) {
        self.bar.finish();
    }
}
