//! [`RunLock`]: one run per output folder.
//!
//! Two runs writing into one folder mix their checkpoints, delete each other's and
//! interleave their metrics. A run therefore holds an OS file lock on `run.lock` in its
//! folder for its whole life ([`std::fs::File::try_lock`]: `flock` on Unix, `LockFileEx` on
//! Windows). The OS drops the lock when the process ends, however it ends (`kill -9`
//! included), so a stale lock can never block a later run; the file itself stays and is
//! reused. The holder writes its PID into the file so that a refused run can name it.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Result, TrainError};

/// Name of the lock file inside a run folder.
pub const LOCK_FILE: &str = "run.lock";

/// An exclusive lock on a run folder, released on drop (or when the process dies).
#[derive(Debug)]
pub struct RunLock {
    /// Kept open: closing it releases the lock.
    _file: File,
    dir: PathBuf,
}

impl RunLock {
    /// Lock `dir` (created if missing) for this process, or fail with
    /// [`TrainError::Locked`] naming the holder's PID when another run holds it.
    ///
    /// The lock is per open file, not per process: a second `acquire` of the same folder in
    /// the same process fails too, as it should.
    pub fn acquire(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| TrainError::io("create", dir, e))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| TrainError::io("open", &path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                // The holder may not have written its PID yet: then there is none to name.
                let mut text = String::new();
                let holder = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse::<u32>().ok());
                return Err(TrainError::Locked {
                    dir: dir.to_path_buf(),
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(TrainError::io("lock", &path, e)),
        }
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.flush())
            .map_err(|e| TrainError::io("write", &path, e))?;
        Ok(Self {
            _file: file,
            dir: dir.to_path_buf(),
        })
    }

    /// The locked folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
