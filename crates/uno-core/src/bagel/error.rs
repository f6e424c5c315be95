//! Errors of the BAGEL model: configuration, inputs that do not match the pack, and the
//! errors of the pieces it is built from.

use crate::checkpoint::CheckpointError;
use crate::objectives::ObjectiveError;
use crate::vision::VisionError;
use uno_mot::MotError;
use uno_packing::PackError;

#[derive(Debug, thiserror::Error)]
pub enum BagelError {
    #[error("invalid BAGEL config: {0}")]
    Config(String),
    /// The pixels handed to the forward do not match the pack's images.
    #[error("image {index} of the pack: {message}")]
    Image { index: usize, message: String },
    #[error(transparent)]
    Mot(#[from] MotError),
    #[error(transparent)]
    Vision(#[from] VisionError),
    #[error(transparent)]
    Objective(#[from] ObjectiveError),
    #[error(transparent)]
    Pack(#[from] PackError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}
