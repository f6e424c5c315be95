//! Errors for bad samples and configurations. Every variant names the sample and split
//! (indexes in the order the caller supplied them) so a bad record can be found in a data
//! set of millions.

use crate::split::SplitKind;

/// Why a sample could not be packed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackError {
    /// A sample lowered to no splits at all (e.g. a custom sample with an empty plan).
    #[error("sample {sample}: has no splits")]
    EmptySample {
        /// Index of the sample among those the caller supplied.
        sample: usize,
    },
    /// A text-like split (text, caption) with no tokens.
    #[error("sample {sample}, split {split} ({kind:?}): has no tokens")]
    EmptySplit {
        /// Index of the sample among those the caller supplied.
        sample: usize,
        /// Index of the split in the sample's plan (dropped images counted).
        split: usize,
        /// [`SplitKind::Text`] or [`SplitKind::Caption`].
        kind: SplitKind,
    },
    /// A caption or metaquery split with no noised target image before it in its sample.
    #[error(
        "sample {sample}, split {split} ({kind:?}): supervision split has no noised target image before it"
    )]
    SupervisionWithoutTarget {
        /// Index of the sample among those the caller supplied.
        sample: usize,
        /// Index of the supervision split in the sample's plan.
        split: usize,
        /// [`SplitKind::Caption`] or [`SplitKind::Metaqueries`].
        kind: SplitKind,
    },
    /// A metaquery split while the configuration asks for zero metaqueries.
    #[error("sample {sample}, split {split}: metaquery split requested but num_metaqueries is 0")]
    ZeroMetaqueries {
        /// Index of the sample among those the caller supplied.
        sample: usize,
        /// Index of the metaquery split in the sample's plan.
        split: usize,
    },
    /// A token id outside the vocabulary.
    #[error(
        "sample {sample}, split {split} ({kind:?}): token {position} has id {id}, not below vocab_size {vocab_size}"
    )]
    TokenOutOfVocab {
        /// Index of the sample among those the caller supplied.
        sample: usize,
        /// Index of the split in the sample's plan.
        split: usize,
        /// [`SplitKind::Text`] or [`SplitKind::Caption`].
        kind: SplitKind,
        /// Index of the first bad token within the split's tokens (special tokens not
        /// counted).
        position: usize,
        /// The bad token id.
        id: u32,
        /// [`crate::PackingConfig::vocab_size`].
        vocab_size: u32,
    },
    /// An image side that is zero or not a multiple of the patch / latent grid.
    #[error(
        "sample {sample}, split {split} ({kind:?}): image {height}x{width} is not a positive multiple of {multiple} pixels per side"
    )]
    ImageNotDivisible {
        /// Index of the sample among those the caller supplied.
        sample: usize,
        /// Index of the image split in the sample's plan.
        split: usize,
        /// Which image split: ViT, clean VAE or noised VAE.
        kind: SplitKind,
        /// Image height in pixels.
        height: usize,
        /// Image width in pixels.
        width: usize,
        /// Pixels per token side: the ViT patch (14) or the VAE token size (16).
        multiple: usize,
    },
    /// An image whose token grid exceeds the position table (ViT 70x70, latents 64x64).
    #[error(
        "sample {sample}, split {split} ({kind:?}): image {height}x{width} gives a {rows}x{cols} grid, more than the {max}x{max} position table"
    )]
    ImageTooLarge {
        /// Index of the sample among those the caller supplied.
        sample: usize,
        /// Index of the image split in the sample's plan.
        split: usize,
        /// Which image split: ViT, clean VAE or noised VAE.
        kind: SplitKind,
        /// Image height in pixels.
        height: usize,
        /// Image width in pixels.
        width: usize,
        /// Token rows the image would need.
        rows: usize,
        /// Token columns the image would need.
        cols: usize,
        /// Side of the position table (`vit_max_patches_per_side` or `max_latent_size`).
        max: usize,
    },
    /// A sample longer than `max_sample_tokens` (or than a packer's hard maximum).
    #[error("sample {sample}: {tokens} tokens, more than the maximum of {max}")]
    SampleTooLong {
        /// Index of the sample among those the caller supplied (for a
        /// [`crate::GreedyPacker`], among all samples offered to it).
        sample: usize,
        /// Tokens the sample would take, special tokens included.
        tokens: usize,
        /// The limit it exceeds.
        max: usize,
    },
    /// An inconsistent configuration: a special token outside the vocabulary, a zero size,
    /// or a [`crate::PackBudget`] with `expected_tokens` zero or above `max_tokens`.
    #[error("invalid packing config: {0}")]
    Config(String),
}
