//! Continuing a benchmark that stopped ([`crate::resume_benchmark`]): what a finished unit
//! leaves behind, and the preset record that keeps two presets out of one folder.
//!
//! The full preset is many hours of training: an interrupted run (a crash, a closed laptop,
//! a job limit) must not lose the finished stages. So:
//!
//! * the folder records its preset (`preset.json`); a resume must bring the same preset,
//!   except for its seeds (seeds may be added later, each seed's arms are independent);
//! * a training run is finished when its final EMA weights exist (`train::run` writes them
//!   atomically after the last step); an unfinished one continues from its newest
//!   checkpoint (the pipeline writes one every tenth of a run), exactly as if it had not
//!   stopped, or starts again when it has none;
//! * an arm is finished when its `arm.json` (its judged scores) exists, written atomically
//!   once its images are judged; its scores are read back, not sampled again.
//!
//! What is cheap and deterministic (the ground truth's scores, stage 1's captions, the
//! gradient alignment) is computed again on resume.

use std::path::Path;

use serde_json::Value;
use uno_core::checkpoint::write_bytes_atomically;
use uno_core::trainer::checkpoint::latest_checkpoint;

use crate::{ArmScores, BenchError, BenchPreset};

/// The preset a benchmark folder was started with.
const PRESET_FILE: &str = "preset.json";
/// A judged arm's scores, in its run folder.
const ARM_FILE: &str = "arm.json";
/// What a finished training run writes last.
const FINAL_WEIGHTS: &str = "ema.safetensors";

/// Write `preset` as the record of the benchmark in `out`.
pub(crate) fn record_preset(out: &Path, preset: &BenchPreset) -> Result<(), BenchError> {
    write_atomically(&out.join(PRESET_FILE), &to_json(preset, "the preset")?)
}

/// Refuse to resume `out` with a preset other than the one it was started with (seeds
/// aside), then record `preset` (its seeds may differ).
pub(crate) fn check_recorded_preset(out: &Path, preset: &BenchPreset) -> Result<(), BenchError> {
    let path = out.join(PRESET_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BenchError::setting(
                "out",
                out.display(),
                "holds no benchmark to resume (no preset.json): run it without resume",
            ));
        }
        Err(e) => return Err(BenchError::io("read", path, e)),
    };
    let recorded: Value = serde_json::from_str(&text).map_err(|e| BenchError::Record {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let seeds = recorded
        .get("seeds")
        .and_then(|s| serde_json::from_value::<Vec<u64>>(s.clone()).ok())
        .ok_or_else(|| BenchError::Record {
            path: path.clone(),
            reason: "no list of seeds".into(),
        })?;
    let same_seeds = BenchPreset {
        seeds,
        ..preset.clone()
    };
    // The text, not parsed numbers, is compared: the same preset serialises to the same
    // text, while a parsed float may miss its last bit.
    if to_json(&same_seeds, "the preset")? != text {
        let ours = serde_json::to_value(&same_seeds).map_err(|source| BenchError::Serialize {
            name: "the preset",
            source,
        })?;
        let fields = differing_fields(&recorded, &ours);
        return Err(BenchError::PresetChanged {
            dir: out.to_path_buf(),
            recorded: recorded
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string(),
            fields,
        });
    }
    record_preset(out, preset)
}

/// The top-level fields of two JSON objects that differ (all of `b`'s when one is not an
/// object).
fn differing_fields(a: &Value, b: &Value) -> Vec<String> {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return vec!["the whole preset".into()];
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

/// Whether the training run in `dir` has finished (its final weights exist).
pub(crate) fn finished_run(dir: &Path) -> bool {
    dir.join(FINAL_WEIGHTS).is_file()
}

/// Whether an unfinished run in `dir` continues from its newest checkpoint (only when
/// `resuming`), or starts afresh: a run that stopped before its first checkpoint starts
/// again, and the trainer cuts what it had logged (`metrics.jsonl`) back to step 0.
pub(crate) fn continue_run(dir: &Path, resuming: bool) -> Result<bool, BenchError> {
    if !resuming || !dir.exists() {
        return Ok(false);
    }
    let checkpoint = latest_checkpoint(dir).map_err(|e| BenchError::Record {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(checkpoint.is_some())
}

/// The scores of the arm judged in `dir`, if it was.
pub(crate) fn finished_arm(dir: &Path) -> Result<Option<ArmScores>, BenchError> {
    let path = dir.join(ARM_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(BenchError::io("read", path, e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| BenchError::Record {
            path,
            reason: e.to_string(),
        })
}

/// Record that the arm in `dir` has been judged.
pub(crate) fn record_arm(dir: &Path, scores: &ArmScores) -> Result<(), BenchError> {
    write_atomically(&dir.join(ARM_FILE), &to_json(scores, "the arm's scores")?)
}

fn to_json<T: serde::Serialize>(value: &T, name: &'static str) -> Result<String, BenchError> {
    serde_json::to_string_pretty(value).map_err(|source| BenchError::Serialize { name, source })
}

/// Write `text` atomically (a temporary file renamed over `path`, synced): a reader never
/// sees half a record.
fn write_atomically(path: &Path, text: &str) -> Result<(), BenchError> {
    write_bytes_atomically(path, text.as_bytes()).map_err(|e| BenchError::Record {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}
