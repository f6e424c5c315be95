//! [`TrainSummary`]: what a `fit` call did, returned and printed at the end.

use std::fmt;
use std::path::PathBuf;

/// Summary of one [`crate::Trainer::fit`] call.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TrainSummary {
    /// Step count when `fit` started (non-zero after resume).
    pub start_step: u64,
    /// Step count when `fit` returned.
    pub end_step: u64,
    /// Steps skipped (non-finite) during this call.
    pub skipped: u64,
    /// Window size used for the two means below.
    pub window: usize,
    /// Mean total loss of the first `window` applied steps of this call.
    pub first_window_loss: Option<f64>,
    /// Mean total loss of the last `window` applied steps of this call.
    pub last_window_loss: Option<f64>,
    /// Wall time of the call in seconds.
    pub wall_time_s: f64,
    /// Tokens processed per second of wall time.
    pub tokens_per_s: f64,
    /// The last checkpoint written.
    pub last_checkpoint: Option<PathBuf>,
}

impl TrainSummary {
    /// Mean of the first and last `window` values of `losses`.
    pub(crate) fn windows(losses: &[f64], window: usize) -> (Option<f64>, Option<f64>) {
        let mean = |xs: &[f64]| (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64);
        let w = window.min(losses.len());
        (mean(&losses[..w]), mean(&losses[losses.len() - w..]))
    }
}

impl fmt::Display for TrainSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |x: Option<f64>| x.map_or("n/a".to_string(), |v| format!("{v:.5}"));
        writeln!(
            f,
            "trained steps {} -> {} ({} skipped) in {:.1}s, {:.0} tokens/s",
            self.start_step, self.end_step, self.skipped, self.wall_time_s, self.tokens_per_s
        )?;
        write!(
            f,
            "loss: first {} steps {}, last {} steps {}",
            self.window,
            opt(self.first_window_loss),
            self.window,
            opt(self.last_window_loss)
        )?;
        if let Some(dir) = &self.last_checkpoint {
            write!(f, "\ncheckpoint: {}", dir.display())?;
        }
        Ok(())
    }
}
