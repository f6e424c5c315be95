//! Errors of generation and captioning.

use std::path::PathBuf;

use crate::bagel::BagelError;
use crate::data::DataError;

/// Everything that can stop generation, captioning or writing the images.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GenerateError {
    /// A sampler, guidance or decoding setting out of range.
    #[error("invalid setting {name} = {value}: expected {expected}")]
    Setting {
        /// The setting.
        name: &'static str,
        /// Its value, as text.
        value: String,
        /// The accepted range.
        expected: &'static str,
    },
    /// A request the model cannot serve (wrong image size, empty prompt list, ...).
    #[error("request {index}: {message}")]
    Request {
        /// Index of the request.
        index: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The model: loading, or its forward.
    #[error(transparent)]
    Model(#[from] BagelError),
    /// The tokenizer or the synthetic prompts.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The model folder does not exist.
    #[error(
        "{} is not a folder: train one with `cargo run --release --example train_bagel`, or name a BAGEL folder",
        .path.display()
    )]
    NotAFolder {
        /// The path given.
        path: PathBuf,
    },
    /// No tokenizer was given and the synthetic vocabulary is not the model's.
    #[error(
        "the model's vocabulary has {model} tokens, not the synthetic set's {synthetic}: give its tokenizer.json"
    )]
    Vocabulary {
        /// The model's vocabulary size.
        model: usize,
        /// The synthetic vocabulary's size.
        synthetic: usize,
    },
    /// A generated image holds NaN or infinite values: the model's weights are not finite
    /// (a diverged run), so nothing is written.
    #[error(
        "the image of prompt {prompt:?} under seed {seed} has {count} non-finite values: \
         the weights of {} are probably NaN or infinite (a diverged run); nothing written",
        .model_dir.display()
    )]
    NonFinite {
        /// The model folder.
        model_dir: PathBuf,
        /// The prompt.
        prompt: String,
        /// The seed.
        seed: u64,
        /// Non-finite values in the image.
        count: usize,
    },
    /// The run record of a folder (its `run.toml`, for an edit source's transforms) does
    /// not load.
    #[error("{}: {source}", .path.display())]
    RunRecord {
        /// The `run.toml`.
        path: PathBuf,
        /// Why it does not load.
        source: Box<crate::train::RunError>,
    },
    /// The PNG could not be written.
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        /// The output file.
        path: PathBuf,
        /// The encoder's error.
        source: image::ImageError,
    },
}

impl GenerateError {
    pub(crate) fn setting(
        name: &'static str,
        value: impl ToString,
        expected: &'static str,
    ) -> Self {
        Self::Setting {
            name,
            value: value.to_string(),
            expected,
        }
    }
}

macro_rules! from_via_bagel {
    ($($t:ty),+) => {$(
        impl From<$t> for GenerateError {
            fn from(e: $t) -> Self {
                Self::Model(BagelError::from(e))
            }
        }
    )+};
}
from_via_bagel!(
    crate::mot::MotError,
    crate::vision::VisionError,
    crate::packing::PackError
);
