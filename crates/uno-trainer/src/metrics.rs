//! Per-step metrics: one JSON object per line in `metrics.jsonl`.
//!
//! Non-finite values (the loss of a skipped step) are written as `null`, which JSON allows
//! and serde_json produces; reading them back gives NaN.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Result, TrainError};

/// File name of the metrics log inside the run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// One optimizer step (applied or skipped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// The step number this line describes (1-based: the step count after an applied step).
    pub step: u64,
    /// Learning rate used (or that would have been used, for a skipped step).
    pub lr: f64,
    /// Total loss: the mean over micro-batches, or their sum for a token-weighted model
    /// (then the loss of the whole step's tokens); `null` when not finite.
    #[serde(deserialize_with = "nullable_f64")]
    pub loss: f64,
    /// Each named component, combined over micro-batches like the loss.
    pub components: BTreeMap<String, f64>,
    /// Global L2 gradient norm before clipping (`null` when not finite or not computed).
    #[serde(deserialize_with = "nullable_f64")]
    pub grad_norm: f64,
    /// Tokens per second of wall time over this step.
    pub tokens_per_s: f64,
    /// Samples per second of wall time over this step.
    pub samples_per_s: f64,
    /// Wall time of this step in seconds.
    pub step_time_s: f64,
    /// Whether the update was skipped (non-finite loss or gradient norm).
    pub skipped: bool,
    /// Named counts of the step, summed over its micro-batches ([`crate::StepOutput::counts`]:
    /// for UNO the tokens of each kind and the samples the data skipped).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<String, u64>,
}

fn nullable_f64<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Appends [`StepMetrics`] lines (and evaluation lines) to `metrics.jsonl`, flushing each
/// line so that a crash loses at most the line being written.
#[derive(Debug)]
pub struct MetricsWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl MetricsWriter {
    /// Open (append) `dir/metrics.jsonl`, creating `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io("create", dir, e))?;
        let path = dir.join(METRICS_FILE);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| TrainError::io("open", &path, e))?;
        Ok(Self {
            path,
            out: BufWriter::new(file),
        })
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one step line.
    pub fn write_step(&mut self, metrics: &StepMetrics) -> Result<()> {
        self.write_value(metrics)
    }

    /// Append an evaluation line `{"step": .., "eval": {name: value}}`.
    pub fn write_eval(&mut self, step: u64, values: &[(String, f64)]) -> Result<()> {
        let eval: BTreeMap<&str, f64> = values.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        self.write_value(&serde_json::json!({ "step": step, "eval": eval }))
    }

    fn write_value<T: Serialize>(&mut self, value: &T) -> Result<()> {
        serde_json::to_writer(&mut self.out, value).map_err(|source| TrainError::Json {
            path: self.path.clone(),
            source,
        })?;
        self.out
            .write_all(b"\n")
            .and_then(|()| self.out.flush())
            .map_err(|e| TrainError::io("write", &self.path, e))
    }
}
