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
    /// The loss diverged: its running level rose far above its best (see
    /// [`crate::divergence`]). The weights are those of a diverged run, so no checkpoint is
    /// written; `last_checkpoint` is the newest good state.
    #[error(
        "training diverged at step {step}: the running loss {level:.4e} is more than \
         {factor} times its best level {best:.4e} (guards.divergence_factor); lower \
         optimizer.lr, or raise or disable (0) guards.divergence_factor; last checkpoint: {}",
        last_checkpoint.as_ref().map_or("none".to_string(), |p| p.display().to_string())
    )]
    Diverged {
        /// Optimizer steps applied when detected.
        step: u64,
        /// The running loss level.
        level: f64,
        /// The best settled level it is compared with.
        best: f64,
        /// `guards.divergence_factor`.
        factor: f64,
        /// The newest checkpoint, written before the divergence.
        last_checkpoint: Option<PathBuf>,
    },
    /// A stop was requested (SIGTERM / SIGINT, see [`crate::stop`]): the current step was
    /// finished and a checkpoint written; resume it to continue exactly.
    #[error(
        "stopped on request after step {step}; checkpoint {} (resume to continue)",
        checkpoint.display()
    )]
    Interrupted {
        /// Optimizer steps applied.
        step: u64,
        /// The checkpoint written before stopping.
        checkpoint: PathBuf,
    },
    /// Another run holds the output folder's lock ([`crate::RunLock`]).
    #[error(
        "{} is in use by another run{}; wait for it to end or choose another output_dir",
        dir.display(),
        holder.map_or(String::new(), |pid| format!(" (process {pid})"))
    )]
    Locked {
        /// The run folder.
        dir: PathBuf,
        /// The PID written by the holder, when it could be read.
        holder: Option<u32>,
    },
    /// Resume found checkpoints, but none passed verification.
    #[error(
        "no usable checkpoint in {}: {}",
        dir.display(),
        reasons.join("; ")
    )]
    NoUsableCheckpoint {
        /// The run folder.
        dir: PathBuf,
        /// Why each checkpoint was refused, newest first.
        reasons: Vec<String>,
    },
    /// A stop-signal handler could not be installed.
    #[error("cannot install a handler for signal {signal}: {source}")]
    Signals {
        /// The signal number.
        signal: i32,
        /// The OS error.
        source: std::io::Error,
    },
    /// An operation of burn-collective (register, all-reduce, broadcast, finish) failed on
    /// this peer; the other peers may be left waiting in the same operation.
    #[error("collective {op} on peer {peer}: {message}")]
    Collective {
        /// The operation (`register`, `all-reduce of the loss counts`, ...).
        op: &'static str,
        /// This peer's rank.
        peer: usize,
        /// burn-collective's error, as text (its type implements no `Error`).
        message: String,
    },
    /// Another peer of a data-parallel run failed (its own error says why); this peer
    /// stopped at the same point, and no checkpoint was written after it.
    #[error(
        "peer {failed} failed while {phase} at step {step} (its own error says why); peer \
         {peer} stopped with it"
    )]
    PeerFailed {
        /// The first (lowest) rank that failed.
        failed: usize,
        /// This peer's rank.
        peer: usize,
        /// Optimizer steps applied so far.
        step: u64,
        /// What the peers were doing (`reading data`, `forward and backward`, ...).
        phase: &'static str,
    },
    /// The peers of a data-parallel run joined at different steps or data positions (they
    /// resumed different checkpoints: a checkpoint written while they started?).
    #[error(
        "peer {peer} stands at step {step}, data position {data_position}, and another \
         peer does not; resume every peer from the same checkpoint"
    )]
    PeersDisagree {
        /// This peer's rank.
        peer: usize,
        /// Its step.
        step: u64,
        /// Its data position.
        data_position: u64,
    },
    /// A peer of a data-parallel run panicked (Burn panics on shape errors); it stopped
    /// every peer as an error would.
    #[error("peer {peer} panicked while {phase}: {message}")]
    PeerPanicked {
        /// The rank that panicked.
        peer: usize,
        /// What it was doing.
        phase: &'static str,
        /// The panic message.
        message: String,
    },
    /// A checkpoint holds the data-source states of a different number of peers than
    /// resume it (one device counts as one peer), and the data source cannot re-divide
    /// them ([`crate::DataSource::reshard`]).
    #[error(
        "the checkpoint holds the data states of {saved} peer(s) and {now} resume it, but the \
         data source cannot re-divide them ({reason}); resume with {saved}"
    )]
    PeerCountChanged {
        /// Peers whose data states the checkpoint holds.
        saved: usize,
        /// Peers resuming it.
        now: usize,
        /// The data source's reason.
        reason: String,
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
