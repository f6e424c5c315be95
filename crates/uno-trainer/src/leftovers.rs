//! Leftovers of killed writes: `step-000100.tmp-<pid>/` (a checkpoint being written),
//! `step-000100.old-<pid>/` (one being replaced or pruned) and `.<name>.tmp-<pid>-<n>` (an
//! atomic file write, `uno-checkpoint`'s recipe). Resume never reads them, but each
//! checkpoint one is a whole checkpoint (tens of GB at 7B), so a run removes those whose
//! writer is dead before it starts.
//!
//! "Dead" means the PID is not a live process: on Linux, `/proc/<pid>` is absent. Where
//! that cannot be told (no `/proc`), nothing is removed. The caller holds the folder's
//! [`crate::RunLock`], so a live writer of another run cannot be racing it anyway; the PID
//! check is what keeps a folder shared by mistake (no lock, e.g. a network filesystem that
//! ignores `flock`) safe.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Result, TrainError};

/// The writer's PID of a leftover name, `None` for anything else.
pub fn leftover_pid(name: &str) -> Option<u32> {
    if let Some(rest) = name.strip_prefix("step-") {
        let (_, suffix) = rest.split_once('.')?;
        let pid = suffix
            .strip_prefix("tmp-")
            .or_else(|| suffix.strip_prefix("old-"))?;
        return pid.parse().ok();
    }
    // `.{file}.tmp-{pid}-{n}`
    let rest = name.strip_prefix('.')?;
    let (_, tail) = rest.rsplit_once(".tmp-")?;
    let (pid, n) = tail.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// Whether process `pid` is alive; `true` when it cannot be told (no `/proc`), so that
/// nothing is removed on a guess. This process counts as alive.
pub fn pid_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return true;
    }
    proc.join(pid.to_string()).exists()
}

/// Remove every leftover directly under `root` whose writer is dead; returns what was
/// removed. A missing `root` has none.
pub fn remove_stale_leftovers(root: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TrainError::io("list", root, e)),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| TrainError::io("list", root, e))?;
        let Some(pid) = entry.file_name().to_str().and_then(leftover_pid) else {
            continue;
        };
        if pid_alive(pid) {
            continue;
        }
        let path = entry.path();
        let is_dir = entry
            .file_type()
            .map_err(|e| TrainError::io("stat", &path, e))?
            .is_dir();
        let result = if is_dir {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        result.map_err(|e| TrainError::io("remove", &path, e))?;
        removed.push(path);
    }
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftover_names_give_their_pid() {
        assert_eq!(leftover_pid("step-000100.tmp-4242"), Some(4242));
        assert_eq!(leftover_pid("step-000100.old-17"), Some(17));
        assert_eq!(leftover_pid(".uno_config.json.tmp-99-3"), Some(99));
        assert_eq!(leftover_pid(".model.safetensors.tmp-5-0"), Some(5));
        assert_eq!(leftover_pid("step-000100"), None);
        assert_eq!(leftover_pid("step-000100.tmp-x"), None);
        assert_eq!(leftover_pid("metrics.jsonl"), None);
        assert_eq!(leftover_pid(".hidden"), None);
        assert_eq!(leftover_pid(".a.tmp-1"), None);
    }

    #[test]
    fn this_process_is_alive() {
        assert!(pid_alive(std::process::id()));
    }
}
