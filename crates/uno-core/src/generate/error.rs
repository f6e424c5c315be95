//! Errors of generation and captioning.

use std::path::PathBuf;

use crate::bagel::BagelError;

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// A sampler, guidance or decoding setting out of range.
    #[error("invalid setting {name} = {value}: expected {expected}")]
    Setting {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    /// A request the model cannot serve (wrong image size, empty prompt list, ...).
    #[error("request {index}: {message}")]
    Request { index: usize, message: String },
    #[error(transparent)]
    Model(#[from] BagelError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
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
