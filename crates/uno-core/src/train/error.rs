//! [`RunError`]: everything that can stop a UNO run, each naming its culprit.

use std::path::PathBuf;

use crate::bagel::BagelError;
use crate::checkpoint::CheckpointError;
use crate::data::DataError;
use crate::trainer::{BoxError, TrainError};

/// Errors of [`super::run`] and [`super::RunConfig`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// A run-config value parsed but is out of range.
    #[error("config `{key}` = {value}: {reason}")]
    InvalidConfig {
        /// The dotted key.
        key: &'static str,
        /// The offending value, as text.
        value: String,
        /// The accepted range.
        reason: &'static str,
    },
    /// The run asks for another number of metaqueries than the model has (they are
    /// weights, so a run cannot change their number).
    #[error("config model.metaqueries = {config} but the model has {model} metaqueries")]
    MetaqueryMismatch {
        /// `model.metaqueries` of the run config.
        config: usize,
        /// The model's `num_metaqueries`.
        model: usize,
    },
    /// An image transform of the run does not fit the model's grids (`data.vae_image` /
    /// `data.vit_image`: stride or largest size).
    #[error("config `{key}`: {reason}")]
    TransformMismatch {
        /// The dotted key.
        key: &'static str,
        /// What disagrees, with both values.
        reason: String,
    },
    /// The data's tokenizer does not fit the model's vocabulary or special tokens.
    #[error("tokenizer {}: {reason}", .path.display())]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What disagrees.
        reason: String,
    },
    /// The output folder already holds this run's or another run's checkpoints.
    #[error(
        "{} already holds checkpoints: resume them, or choose another output_dir for a new run",
        .dir.display()
    )]
    ExistingRun {
        /// The output folder.
        dir: PathBuf,
    },
    /// The output folder holds a model that no run wrote (a release folder, say): a run
    /// would overwrite its configs and weights, so it is refused.
    #[error(
        "{} holds a model ({found}) that no run wrote; a run writes its own configs and \
         weights there and never overwrites another model: choose another output_dir",
        .dir.display()
    )]
    ForeignFolder {
        /// The output folder.
        dir: PathBuf,
        /// The model files found there.
        found: String,
    },
    /// `--resume` with settings that differ from the run's record and would make the
    /// resumed run differ from an uninterrupted one.
    #[error(
        "resuming {} with changed settings that break exact resume: {}; restore them, or \
         allow the change (RunSpec::allow_config_change, train_bagel --allow-config-change)",
        .dir.display(),
        .changes.join("; ")
    )]
    ConfigChanged {
        /// The run folder.
        dir: PathBuf,
        /// `key: recorded -> now`, one per changed setting.
        changes: Vec<String>,
    },
    /// The run folder's record (`run.toml`, `run_inputs.json`) could not be written or read.
    #[error("run record {}: {reason}", .path.display())]
    Record {
        /// The record file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A file operation failed.
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The configuration, the loop or its checkpoints.
    #[error(transparent)]
    Trainer(#[from] TrainError),
    /// The model: building, loading or its forward.
    #[error(transparent)]
    Model(#[from] BagelError),
    /// The data set or its tokenizer.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Writing the final weights.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// An evaluation-hook error, as the trainer reports it.
    #[error("evaluation: {0}")]
    Eval(BoxError),
}
