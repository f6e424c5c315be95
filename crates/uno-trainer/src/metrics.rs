//! Per-step metrics: one JSON object per line in `metrics.jsonl`.
//!
//! Non-finite values (the loss of a skipped step) are written as `null`, which JSON allows
//! and serde_json produces; reading them back gives NaN.
//!
//! On resume, [`trim_metrics`] first cuts the file back to the resumed checkpoint: lines of
//! steps the resumed run will redo are dropped (so no step appears twice), and a torn last
//! line (a crash while writing it) is removed rather than glued to the next one.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use uno_checkpoint::write_bytes_atomically;

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
    /// Each named component, combined over micro-batches like the loss (`null` when not
    /// finite).
    #[serde(deserialize_with = "nullable_map")]
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
    /// First data position (micro-batch index) this step read; `None` in lines written
    /// before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_position: Option<u64>,
    /// Why a skipped step was skipped (`non-finite loss` or `non-finite gradient norm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
    /// For a skipped step: the ids of the samples of the micro-batches it read (up to the
    /// non-finite one), as the data source names them ([`crate::DataSource::sample_ids`]),
    /// so that a bad sample can be found.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sample_ids: Vec<String>,
}

fn nullable_map<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<BTreeMap<String, f64>, D::Error> {
    let map = BTreeMap::<String, Option<f64>>::deserialize(d)?;
    Ok(map
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or(f64::NAN)))
        .collect())
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

/// What [`trim_metrics`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricsTrim {
    /// Lines kept.
    pub kept: usize,
    /// Complete lines dropped because they are past the resumed state.
    pub dropped: usize,
    /// Torn or unreadable lines dropped.
    pub torn: usize,
}

/// Cut `dir/metrics.jsonl` back to the state a run resumes from (`step` optimizer steps
/// applied, next data position `data_position`; both 0 for a fresh start, which empties
/// the file).
///
/// Kept: step lines whose first data position is before `data_position` (lines without a
/// recorded position: whose step is at most `step`), and evaluation lines of steps at most
/// `step`. Skipped steps that a checkpoint already moved past (the skip guard's abort) are
/// therefore kept, while steps the resumed run redoes are dropped. A last line without its
/// newline was torn by a crash and is dropped, as is any line that is not a JSON object.
/// The file is rewritten atomically, and only when something changes. A missing file is
/// left missing.
pub fn trim_metrics(dir: &Path, step: u64, data_position: u64) -> Result<MetricsTrim> {
    let path = dir.join(METRICS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(MetricsTrim::default()),
        Err(e) => return Err(TrainError::io("read", &path, e)),
    };
    let mut report = MetricsTrim::default();
    let mut kept = Vec::with_capacity(bytes.len());
    let complete = match bytes.iter().rposition(|b| *b == b'\n') {
        Some(end) => &bytes[..=end],
        None => &bytes[..0],
    };
    if complete.len() < bytes.len() {
        report.torn += 1;
    }
    for line in complete.split_inclusive(|b| *b == b'\n') {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(line) else {
            report.torn += 1;
            continue;
        };
        let Some(line_step) = value.get("step").and_then(serde_json::Value::as_u64) else {
            report.torn += 1;
            continue;
        };
        let keep = if value.get("eval").is_some() {
            line_step <= step
        } else {
            match value
                .get("data_position")
                .and_then(serde_json::Value::as_u64)
            {
                Some(position) => position < data_position,
                None => line_step <= step,
            }
        };
        if keep {
            report.kept += 1;
            kept.extend_from_slice(line);
        } else {
            report.dropped += 1;
        }
    }
    if kept.len() != bytes.len() {
        write_bytes_atomically(&path, &kept)?;
    }
    Ok(report)
}
