//! # uno-data
//!
//! Training data for UNO: a dataset trait, a JSONL manifest of real images, an embedded
//! synthetic set that needs no files, and the tokenizer they share. It depends on
//! `uno-packing` (a dataset yields packing [`Sample`]s), `image` and `tokenizers`, never on a
//! model: BAGEL's image transforms ([`ImageTransformConfig`]) and the shuffled epoch order
//! ([`EpochOrder`]) live here too, and so does [`shapes`], the ShapesBench prompts, split and
//! pixel judge over the synthetic world.
//!
//! A dataset yields [`TrainItem`]s: the packing [`Sample`] (token ids and image sizes) plus
//! the pixels the model encodes (the clean target, and for edits the source image).
//! Random access by index keeps training reproducible and resumable: the data position
//! saved in a checkpoint is just the next index.

#![warn(missing_docs)]

mod error;
mod image;
mod manifest;
mod order;
pub mod shapes;
mod synthetic;
mod tokenizer;
mod transform;

pub use error::{DataError, MISSING_SHOWN};
pub use image::RgbImage;
pub use manifest::{ManifestDataset, ManifestRecord};
pub use order::EpochOrder;
pub use synthetic::{Scene, Shape, ShapeKind, SyntheticConfig, SyntheticScenes};
pub use tokenizer::{SPECIAL_TOKENS, TextTokenizer};
pub use transform::{
    BAGEL_MAX_PIXELS, ImagePair, ImageTransformConfig, ImageTransforms, resize_bicubic,
};

use uno_packing::Sample;

/// One training example: what to pack, and the pixels behind its images.
///
/// Every image comes in two copies, each made by its own [`ImageTransformConfig`]: the
/// VAE side (the sizes of the sample's VAE and noised splits) and the ViT side (the sizes
/// of its ViT splits, and the clean target's ViT features that the visual loss regresses).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainItem {
    /// Token ids and image sizes, ready for the packer.
    pub sample: Sample,
    /// The clean target image: its VAE copy is noised for flow matching, its ViT copy gives
    /// the visual loss's targets.
    pub target: ImagePair,
    /// The source image of an edit (VAE copy for the clean VAE split, ViT copy for the ViT
    /// split); also the image of an understanding sample.
    pub source: Option<ImagePair>,
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
