//! The trainer's error type: every failure names the key, path or value that caused it.

use std::path::PathBuf;

/// An error from a user hook (model weights I/O, data source, evaluation): the trainer does
/// not know the model's or the data's error types, so they are boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias of this crate.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

/// Errors of the configuration, the loop and the checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The TOML text did not parse or did not match [`crate::TrainConfig`] (unknown keys
    /// included); toml's message names the key and the line.
    #[error("config {source_name}: {message}")]
    ConfigParse {
        /// The file path, or `<string>` / `<overrides>`.
        source_name: String,
        /// toml's message (key, line, column).
        message: String,
    },
    /// A `key=value` override was malformed or named a key the config does not have.
    #[error("config override `{key}`: {reason}")]
    Override {
        /// The dotted key as written.
        key: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A config value parsed but is out of range.
    #[error("config `{key}` = {value}: {reason}")]
    InvalidConfig {
        /// The dotted key.
        key: &'static str,
        /// The offending value, as text.
        value: String,
        /// The accepted range.
        reason: &'static str,
    },
    /// A filesystem operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was attempted (`create`, `write`, `rename`, ...).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file or directory of a checkpoint could not be written or synced (the error names
    /// the path).
    #[error(transparent)]
    Storage(#[from] uno_checkpoint::CheckpointError),
    /// A Burn record (optimizer state) could not be written or read.
    #[error("optimizer state {}: {message}", path.display())]
    Record {
        /// The record file.
        path: PathBuf,
        /// The recorder's message.
        message: String,
    },
    /// `trainer_state.json` (or a metrics line) could not be (de)serialised.
    #[error("json {}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// serde_json's error.
        source: serde_json::Error,
    },
    /// The model's weight save/load hook failed.
    #[error("model weights {}: {source}", path.display())]
    Weights {
        /// The weights file given to the hook.
        path: PathBuf,
        /// The hook's error.
        source: BoxError,
    },
    /// The data source failed to produce a batch.
    #[error("data source at position {position}: {source}")]
    Data {
        /// The data position (micro-batch index) requested.
        position: u64,
        /// The source's error.
        source: BoxError,
    },
    /// The model's forward step failed.
    #[error("forward step at step {step}: {source}")]
    Forward {
        /// The optimizer step being computed (0-based).
        step: u64,
        /// The model's error.
        source: BoxError,
    },
    /// The evaluation hook failed.
    #[error("evaluation at step {step}: {source}")]
    Eval {
        /// The step after which evaluation ran.
        step: u64,
        /// The hook's error.
        source: BoxError,
    },
    /// A checkpoint directory is present under its final name but is not usable (missing
    /// or truncated file, bad state); resume refuses it rather than load corrupt state.
    #[error("checkpoint {}: {reason}", path.display())]
    BadCheckpoint {
        /// The checkpoint directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Too many consecutive steps had a non-finite loss or gradient norm. The last good
    /// state was saved to `checkpoint` before giving up.
    #[error(
        "{skips} consecutive steps skipped (non-finite loss or grad norm) at step {step}; \
         last good state saved to {}",
        checkpoint.display()
    )]
    TooManySkips {
        /// Consecutive skipped steps.
        skips: u32,
        /// Optimizer steps applied so far.
        step: u64,
        /// Where the last good state was saved.
        checkpoint: PathBuf,
    },
    /// A previous step failed half-way (an error from a hook while the weights were moved
    /// out); the trainer must be rebuilt from a checkpoint.
    #[error("trainer is unusable after an earlier failed step; resume from a checkpoint")]
    Poisoned,
}

impl TrainError {
    /// Shorthand for [`TrainError::Io`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
