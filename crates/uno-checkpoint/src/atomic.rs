//! Durable, all-or-nothing file writes: the one place that knows how to replace a file so
//! that a crash (or `kill -9`) at any moment leaves either the old content or the complete
//! new one.
//!
//! The recipe: write a temporary file in the target's own directory (a rename is atomic only
//! within one filesystem), fsync it, rename it over the target, fsync the directory so the
//! rename itself survives a power cut. The weight writer and every config writer use
//! [`write_atomically`]; the trainer builds its checkpoint *directories* from
//! [`write_synced`] and [`sync_dir`] and renames the directory the same way.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::CheckpointError;

/// Replace `path` with the file that `write` creates at the temporary path it is given.
///
/// The temporary file (`.{name}.tmp-{pid}-{n}` next to `path`) is fsynced and renamed over
/// `path`, then the directory is fsynced (best effort: some filesystems refuse to fsync a
/// directory, and the new file is already complete and in place). On any error `path` is
/// untouched and the temporary file is removed.
pub fn write_atomically(
    path: impl AsRef<Path>,
    write: impl FnOnce(&Path) -> Result<(), CheckpointError>,
) -> Result<(), CheckpointError> {
    let path = path.as_ref();
    let Some(file_name) = path.file_name() else {
        return Err(CheckpointError::Write {
            path: path.to_path_buf(),
            reason: "the path names no file".into(),
        });
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        file_name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = write(&tmp).and_then(|()| commit(&tmp, path, dir));
    if result.is_err() {
        // Nothing to clean if the temporary file was never created.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// [`write_atomically`] with the whole content in memory (configs, JSON, small files).
pub fn write_bytes_atomically(path: impl AsRef<Path>, bytes: &[u8]) -> Result<(), CheckpointError> {
    write_atomically(path, |tmp| write_synced(tmp, bytes))
}

/// Create (or truncate) `path`, write `bytes` and fsync the file. Not atomic by itself: for
/// files inside a temporary directory that is renamed into place as a whole.
pub fn write_synced(path: impl AsRef<Path>, bytes: &[u8]) -> Result<(), CheckpointError> {
    let path = path.as_ref();
    let mut file = File::create(path).map_err(CheckpointError::io("create", path))?;
    file.write_all(bytes)
        .map_err(CheckpointError::io("write", path))?;
    file.sync_all().map_err(CheckpointError::io("fsync", path))
}

/// Fsync a directory, making the creations and renames inside it durable.
pub fn sync_dir(dir: impl AsRef<Path>) -> Result<(), CheckpointError> {
    let dir = dir.as_ref();
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(CheckpointError::io("fsync", dir))
}

/// fsync `tmp`, rename it to `path`, fsync the directory (best effort).
fn commit(tmp: &Path, path: &Path, dir: &Path) -> Result<(), CheckpointError> {
    OpenOptions::new()
        .write(true)
        .open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(CheckpointError::io("sync", tmp))?;
    std::fs::rename(tmp, path).map_err(|source| CheckpointError::Io {
        action: "rename into place",
        path: PathBuf::from(path),
        source,
    })?;
    #[cfg(unix)]
    let _ = sync_dir(dir);
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
