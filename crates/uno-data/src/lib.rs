//! # uno-data
//!
//! Training data for UNO: a dataset trait, a JSONL manifest of real images, an embedded
//! synthetic set that needs no files, and the tokenizer they share. It depends on
//! `uno-packing` (a dataset yields packing [`Sample`]s), `image` and `tokenizers`, never on a
//! model: image transforms, buckets and token-budget plans live here too.
//!
//! A dataset yields [`TrainItem`]s: the packing [`Sample`] (token ids and image sizes) plus
//! the pixels the model encodes (the clean target, and for edits the source image).
//! Random access by index keeps training reproducible and resumable: the data position
//! saved in a checkpoint is just the next index.

#![warn(missing_docs)]

mod error;
mod image;
mod manifest;
mod synthetic;
mod tokenizer;

pub use error::{DataError, MISSING_SHOWN};
pub use image::{RgbImage, resize_to_bucket};
pub use manifest::{ManifestDataset, ManifestRecord};
pub use synthetic::{Scene, Shape, ShapeKind, SyntheticConfig, SyntheticScenes};
pub use tokenizer::{SPECIAL_TOKENS, TextTokenizer};

use uno_packing::Sample;

/// One training example: what to pack, and the pixels behind its images.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainItem {
    /// Token ids and image sizes, ready for the packer.
    pub sample: Sample,
    /// The clean target image (noised for flow matching; ViT targets for the visual loss).
    pub target: RgbImage,
    /// The source image of an edit.
    pub source: Option<RgbImage>,
    /// The prompt (or edit instruction) behind the token ids, for logs and sample grids.
    pub prompt: String,
    /// The re-caption behind the caption's token ids, for logs.
    pub caption: String,
}

/// A random-access data set.
pub trait Dataset {
    /// Number of items; valid indexes are `0..len()`.
    fn len(&self) -> usize;

    /// Whether the data set has no items.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `index`-th item. Errors name the record (and its file or line where there is one).
    fn get(&self, index: usize) -> Result<TrainItem, DataError>;
}
