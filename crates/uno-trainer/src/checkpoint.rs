//! Checkpoint directories: `step-000100/` with `model.<ext>`, `ema.<ext>`, `optimizer.mpk`
//! and `trainer_state.json`, written atomically.
//!
//! Everything is written into `step-000100.tmp-<pid>/`, every file is fsynced
//! (`uno-checkpoint`'s write recipe), then
//! `trainer_state.json` (with the size of every other file) is written last and fsynced,
//! and the directory is renamed to its final name (then the parent is fsynced). A process
//! killed at any point leaves either a `.tmp-*` directory, which resume never considers, or
//! a complete checkpoint. Resume additionally checks the recorded file sizes and checksums
//! (XXH3-64, [`crate::checksum`]) and refuses a final-named directory that does not match,
//! rather than load corrupt state; [`crate::Trainer::resume_or_new`] then falls back to the
//! newest checkpoint that verifies.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uno_checkpoint::{sync_dir, write_synced};

use crate::checksum::{bytes_checksum, file_checksum};
use crate::error::{Result, TrainError};

/// Name of the state file, written last.
pub const STATE_FILE: &str = "trainer_state.json";
/// Name of the optimizer state file (Burn named-msgpack record).
pub const OPTIMIZER_FILE: &str = "optimizer.mpk";
/// Version of [`TrainerState`]'s layout: 2 added `checksums`. Version 1 states (sizes only)
/// are still read.
pub const STATE_FORMAT_VERSION: u32 = 2;

/// Everything besides tensors that resume needs (`trainer_state.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerState {
    /// [`STATE_FORMAT_VERSION`] at write time.
    pub format_version: u32,
    /// Optimizer steps applied.
    pub step: u64,
    /// Next data position (micro-batch index) to read.
    pub data_position: u64,
    /// [`crate::TrainRng`] state.
    pub rng_state: u64,
    /// The run's seed (informational).
    pub seed: u64,
    /// Skipped steps in a row at save time.
    pub consecutive_skips: u32,
    /// Skipped steps since the start of the run.
    pub skipped_total: u64,
    /// Optimizer record key (`ParamId` value at save time) to parameter path: ids change
    /// between processes, paths do not.
    pub optimizer_param_paths: BTreeMap<u64, String>,
    /// Paths of the trainable parameters (checked on resume).
    pub trainable_paths: Vec<String>,
    /// A run with sharded optimizer state (`optimizer.shard_state`): each peer's id -> path
    /// table, by rank, of its file [`optimizer_shard_file`]; then there is no
    /// [`OPTIMIZER_FILE`] and `optimizer_param_paths` is empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub optimizer_shards: Vec<BTreeMap<u64, String>>,
    /// Relative path and byte size of every other file in the checkpoint.
    pub files: BTreeMap<String, u64>,
    /// The data source's own state ([`crate::DataSource::state`]), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_state: Option<serde_json::Value>,
    /// In a data-parallel run whose data sources keep a state: each peer's, by rank (then
    /// `data_state` is absent). Another number of peers resumes them through
    /// [`crate::DataSource::reshard`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer_data_states: Vec<serde_json::Value>,
    /// Relative path and XXH3-64 (16 hex digits) of every other file in the checkpoint
    /// (absent in format version 1).
    #[serde(default)]
    pub checksums: BTreeMap<String, String>,
    /// XXH3-64 of this file's own pretty JSON written with this field absent, so that a
    /// flipped digit in the state itself (a step, a data position) is caught too (absent
    /// in format version 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_checksum: Option<String>,
}

impl TrainerState {
    /// The checksum of this state as [`CheckpointWriter::commit`] records it: of its
    /// pretty JSON without `state_checksum`.
    pub fn compute_checksum(&self) -> std::result::Result<String, serde_json::Error> {
        let bare = Self {
            state_checksum: None,
            ..self.clone()
        };
        Ok(bytes_checksum(&serde_json::to_vec_pretty(&bare)?))
    }
}

/// The optimizer state file of peer `rank` of `peers` when the state is sharded
/// (`optimizer-001-of-004.mpk`).
pub fn optimizer_shard_file(rank: usize, peers: usize) -> String {
    format!("optimizer-{rank:03}-of-{peers:03}.mpk")
}

/// `step-000100` for step 100.
pub fn checkpoint_dir_name(step: u64) -> String {
    format!("step-{step:06}")
}

/// The step of a COMPLETE checkpoint directory name (`step-000100`), `None` for anything
/// else (temporary `step-000100.tmp-123`, `step-000100.old-123`, other files).
pub fn parse_checkpoint_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("step-")?;
    if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Complete checkpoints under `root`, oldest first. A missing `root` has none.
pub fn list_checkpoints(root: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TrainError::io("list", root, e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| TrainError::io("list", root, e))?;
        let is_dir = entry
            .file_type()
            .map_err(|e| TrainError::io("stat", entry.path(), e))?
            .is_dir();
        if let (true, Some(step)) = (
            is_dir,
            entry.file_name().to_str().and_then(parse_checkpoint_name),
        ) {
            found.push((step, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// The most recent complete checkpoint under `root`.
pub fn latest_checkpoint(root: &Path) -> Result<Option<(u64, PathBuf)>> {
    Ok(list_checkpoints(root)?.pop())
}

/// Read `trainer_state.json` of `dir` and check that every recorded file is present with its
/// recorded size and checksum. Reads every file once (the checksum); a failure is
/// [`TrainError::BadCheckpoint`] naming the file.
pub fn read_verified_state(dir: &Path) -> Result<TrainerState> {
    let bad = |reason: String| TrainError::BadCheckpoint {
        path: dir.to_path_buf(),
        reason,
    };
    let state_path = dir.join(STATE_FILE);
    let text = fs::read_to_string(&state_path)
        .map_err(|e| bad(format!("cannot read {STATE_FILE}: {e}")))?;
    let state: TrainerState =
        serde_json::from_str(&text).map_err(|e| bad(format!("{STATE_FILE}: {e}")))?;
    if !(1..=STATE_FORMAT_VERSION).contains(&state.format_version) {
        return Err(bad(format!(
            "format_version {} (expected 1 to {STATE_FORMAT_VERSION})",
            state.format_version
        )));
    }
    if state.format_version >= 2 {
        let recorded = state.state_checksum.as_deref().unwrap_or("(none)");
        let actual = state
            .compute_checksum()
            .map_err(|e| bad(format!("{STATE_FILE}: {e}")))?;
        if recorded != actual {
            return Err(bad(format!(
                "{STATE_FILE} has checksum {actual}, {recorded} was written (corrupted)"
            )));
        }
    }
    if state.format_version >= 2 && state.checksums.len() != state.files.len() {
        return Err(bad(format!(
            "{STATE_FILE} records {} files but {} checksums",
            state.files.len(),
            state.checksums.len()
        )));
    }
    for (name, size) in &state.files {
        let path = dir.join(name);
        let actual = fs::metadata(&path)
            .map_err(|e| bad(format!("file {name}: {e}")))?
            .len();
        if actual != *size {
            return Err(bad(format!(
                "file {name} has {actual} bytes, {size} were written"
            )));
        }
        let Some(expected) = state.checksums.get(name) else {
            continue; // format version 1: sizes only
        };
        let (sum, _) = file_checksum(&path).map_err(|e| bad(format!("file {name}: {e}")))?;
        if &sum != expected {
            return Err(bad(format!(
                "file {name} has checksum {sum}, {expected} was written (corrupted)"
            )));
        }
    }
    Ok(state)
}

/// Writes one checkpoint into a temporary directory and renames it into place on
/// [`commit`](Self::commit). Dropped without commit, it removes the temporary directory.
#[derive(Debug)]
pub struct CheckpointWriter {
    root: PathBuf,
    tmp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl CheckpointWriter {
    /// Start the checkpoint of `step` under `root` (created if missing).
    pub fn begin(root: &Path, step: u64) -> Result<Self> {
        fs::create_dir_all(root).map_err(|e| TrainError::io("create", root, e))?;
        let tmp = Self::temporary_dir(root, step, std::process::id());
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| TrainError::io("remove", &tmp, e))?;
        }
        fs::create_dir(&tmp).map_err(|e| TrainError::io("create", &tmp, e))?;
        Ok(Self {
            root: root.to_path_buf(),
            tmp,
            target: root.join(checkpoint_dir_name(step)),
            committed: false,
        })
    }

    /// The folder that process `pid` writes the checkpoint of `step` into before the
    /// rename: other processes (the peers of a sharded optimizer) write their files there.
    pub fn temporary_dir(root: &Path, step: u64, pid: u32) -> PathBuf {
        root.join(format!("{}.tmp-{pid}", checkpoint_dir_name(step)))
    }

    /// Where to write file `name` of this checkpoint.
    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.join(name)
    }

    /// Write `bytes` to file `name` and fsync it.
    pub fn write_bytes(&self, name: &str, bytes: &[u8]) -> Result<()> {
        Ok(write_synced(self.path(name), bytes)?)
    }

    /// Fsync every file, record their sizes in `state.files`, write the state file last,
    /// and rename the directory into place (replacing an older checkpoint of the same step).
    /// Returns the final directory.
    pub fn commit(mut self, mut state: TrainerState) -> Result<PathBuf> {
        state.files.clear();
        state.checksums.clear();
        sync_tree(&self.tmp, &self.tmp, &mut state)?;
        let state_path = self.tmp.join(STATE_FILE);
        let json_error = |source| TrainError::Json {
            path: state_path.clone(),
            source,
        };
        state.state_checksum = Some(state.compute_checksum().map_err(json_error)?);
        let json = serde_json::to_vec_pretty(&state).map_err(json_error)?;
        write_synced(&state_path, &json)?;
        sync_dir(&self.tmp)?;
        // A checkpoint of the same step can exist (a periodic one, then an abort after
        // skipped steps): move it aside first; `.old-*` names are never resumed from.
        let old = self
            .target
            .with_extension(format!("old-{}", std::process::id()));
        let replaced = if self.target.exists() {
            fs::rename(&self.target, &old)
                .map_err(|e| TrainError::io("rename", &self.target, e))?;
            true
        } else {
            false
        };
        fs::rename(&self.tmp, &self.target).map_err(|e| TrainError::io("rename", &self.tmp, e))?;
        self.committed = true;
        sync_dir(&self.root)?;
        if replaced {
            fs::remove_dir_all(&old).map_err(|e| TrainError::io("remove", &old, e))?;
        }
        Ok(self.target.clone())
    }
}

impl Drop for CheckpointWriter {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: a leftover `.tmp-*` directory is harmless (never resumed from).
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Delete the oldest complete checkpoints so that at most `keep_last` remain.
pub fn prune_checkpoints(root: &Path, keep_last: usize) -> Result<Vec<PathBuf>> {
    let all = list_checkpoints(root)?;
    let excess = all.len().saturating_sub(keep_last);
    let mut removed = Vec::new();
    for (_, dir) in all.into_iter().take(excess) {
        // Rename first so that a crash half-way through the deletion never leaves a
        // final-named, half-deleted directory that resume would consider.
        let doomed = dir.with_extension(format!("old-{}", std::process::id()));
        fs::rename(&dir, &doomed).map_err(|e| TrainError::io("rename", &dir, e))?;
        fs::remove_dir_all(&doomed).map_err(|e| TrainError::io("remove", &doomed, e))?;
        removed.push(dir);
    }
    Ok(removed)
}

/// Fsync every file under `dir` (recursively) and record its size and checksum in `state`,
/// keyed by its path relative to `base` with `/` separators.
fn sync_tree(base: &Path, dir: &Path, state: &mut TrainerState) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|e| TrainError::io("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| TrainError::io("list", dir, e))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| TrainError::io("stat", &path, e))?;
        if kind.is_dir() {
            sync_tree(base, &path, state)?;
            sync_dir(&path)?;
        } else {
            let file = File::open(&path).map_err(|e| TrainError::io("open", &path, e))?;
            file.sync_all()
                .map_err(|e| TrainError::io("fsync", &path, e))?;
            let size = file
                .metadata()
                .map_err(|e| TrainError::io("stat", &path, e))?
                .len();
            let rel = path
                .strip_prefix(base)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            // Read back once written: the checksum covers the file as the writer left it.
            let (sum, _) = file_checksum(&path)?;
            state.files.insert(rel.clone(), size);
            state.checksums.insert(rel, sum);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_only_when_complete() {
        assert_eq!(parse_checkpoint_name("step-000100"), Some(100));
        assert_eq!(parse_checkpoint_name("step-1234567"), Some(1_234_567));
        assert_eq!(parse_checkpoint_name("step-000100.tmp-42"), None);
        assert_eq!(parse_checkpoint_name("step-000100.old-42"), None);
        assert_eq!(parse_checkpoint_name("step-12"), None);
        assert_eq!(parse_checkpoint_name("metrics.jsonl"), None);
        assert_eq!(checkpoint_dir_name(7), "step-000007");
    }
}
