//! Whose folder is the output folder: a run writes its configs and final weights into its
//! output folder, so pointed at a BAGEL release (or any model folder no run wrote) it
//! would overwrite that model. [`check_not_foreign`] refuses such a folder before anything
//! is written.

use std::path::Path;

use super::RunError;
use super::record::RUN_CONFIG_FILE;
use crate::bagel::{AE_FILE, UNO_CONFIG};
use crate::trainer::checkpoint::list_checkpoints;
use crate::trainer::metrics::METRICS_FILE;

/// Files that make a folder a model folder: a run overwrites them.
const MODEL_FILES: [&str; 6] = [
    "llm_config.json",
    "vit_config.json",
    UNO_CONFIG,
    "model.safetensors",
    "ema.safetensors",
    AE_FILE,
];

/// Refuse `dir` when it holds model files but is not a run folder (no `run.toml`, no
/// checkpoints, no metrics: a release, or a folder some other tool wrote). A missing or
/// empty folder, or one a run wrote, is fine.
pub fn check_not_foreign(dir: &Path) -> Result<(), RunError> {
    if !dir.is_dir() {
        return Ok(());
    }
    let found: Vec<&str> = MODEL_FILES
        .into_iter()
        .filter(|name| dir.join(name).exists())
        .collect();
    if found.is_empty() {
        return Ok(());
    }
    let ours = dir.join(RUN_CONFIG_FILE).is_file()
        || dir.join(METRICS_FILE).is_file()
        || !list_checkpoints(dir)?.is_empty();
    if ours {
        return Ok(());
    }
    Err(RunError::ForeignFolder {
        dir: dir.to_path_buf(),
        found: found.join(", "),
    })
}
