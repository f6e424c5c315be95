//! Errors of the BAGEL model: configuration, folders, inputs that do not match the pack,
//! and the errors of the pieces it is built from. Each variant names its culprit.

use std::path::PathBuf;

use crate::checkpoint::CheckpointError;
use crate::objectives::ObjectiveError;
use crate::vision::VisionError;
use uno_mot::MotError;
use uno_packing::PackError;

/// Everything that can go wrong building, loading, saving or running a [`super::Bagel`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BagelError {
    /// A configuration value out of range, or two that disagree.
    #[error("invalid BAGEL config `{field}` = {value}: {reason}")]
    InvalidConfig {
        /// The field (or fields) at fault.
        field: &'static str,
        /// Its value, as text.
        value: String,
        /// What it must be.
        reason: String,
    },
    /// A file of a model folder could not be written or listed.
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A folder's config file holds something no model has (an unknown key, a field that
    /// belongs in another file, a value of the wrong type).
    #[error("{}: {reason}", .path.display())]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        reason: String,
    },
    /// A config could not be serialised.
    #[error("cannot serialise {name}: {source}")]
    Serialize {
        /// The config file's name.
        name: &'static str,
        /// serde_json's error.
        source: serde_json::Error,
    },
    /// A file the model's configuration needs is not in its folder.
    #[error("{} does not exist: {why}", .path.display())]
    MissingFile {
        /// The absent file.
        path: PathBuf,
        /// Why it is needed and where it usually comes from.
        why: &'static str,
    },
    /// A model folder holds no weights file, or several candidates.
    #[error("{}: {reason}", .dir.display())]
    WeightsFile {
        /// The folder.
        dir: PathBuf,
        /// What was found.
        reason: String,
    },
    /// The inputs of a forward do not match its pack (latents, metaqueries, images).
    #[error("input does not match the pack: {what}: expected {expected}, got {got}")]
    PackMismatch {
        /// Which input.
        what: &'static str,
        /// What the pack needs.
        expected: String,
        /// What was given.
        got: String,
    },
    /// The pixels handed to the forward do not match the pack's images.
    #[error("image {index} of the pack: {message}")]
    Image {
        /// Index of the image in the pack.
        index: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The decoder.
    #[error(transparent)]
    Mot(#[from] MotError),
    /// The ViT, the embeddings or the codec.
    #[error(transparent)]
    Vision(#[from] VisionError),
    /// The losses.
    #[error(transparent)]
    Objective(#[from] ObjectiveError),
    /// Packing.
    #[error(transparent)]
    Pack(#[from] PackError),
    /// Reading or writing weights and configs.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

impl BagelError {
    pub(crate) fn invalid(
        field: &'static str,
        value: impl ToString,
        reason: impl Into<String>,
    ) -> Self {
        Self::InvalidConfig {
            field,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}
