//! Errors for bad samples and configurations. Every variant names the sample and split
//! (indexes in the order the caller supplied them) so a bad record can be found in a data
//! set of millions.

use crate::split::SplitKind;

/// Why a sample could not be packed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackError {
    /// A sample lowered to no splits at all (e.g. a custom sample with an empty plan).
    #[error("sample {sample}: has no splits")]
    EmptySample { sample: usize },
    /// A text-like split (text, caption) with no tokens.
    #[error("sample {sample}, split {split} ({kind:?}): has no tokens")]
    EmptySplit {
        sample: usize,
        split: usize,
        kind: SplitKind,
    },
    /// A caption or metaquery split with no noised target image before it in its sample.
    #[error(
        "sample {sample}, split {split} ({kind:?}): supervision split has no noised target image before it"
    )]
    SupervisionWithoutTarget {
        sample: usize,
        split: usize,
        kind: SplitKind,
    },
    /// A metaquery split while the configuration asks for zero metaqueries.
    #[error("sample {sample}, split {split}: metaquery split requested but num_metaqueries is 0")]
    ZeroMetaqueries { sample: usize, split: usize },
    /// A token id outside the vocabulary.
    #[error(
        "sample {sample}, split {split} ({kind:?}): token {position} has id {id}, not below vocab_size {vocab_size}"
    )]
    TokenOutOfVocab {
        sample: usize,
        split: usize,
        kind: SplitKind,
        position: usize,
        id: u32,
        vocab_size: u32,
    },
    /// An image side that is zero or not a multiple of the patch / latent grid.
    #[error(
        "sample {sample}, split {split} ({kind:?}): image {height}x{width} is not a positive multiple of {multiple} pixels per side"
    )]
    ImageNotDivisible {
        sample: usize,
        split: usize,
        kind: SplitKind,
        height: usize,
        width: usize,
        multiple: usize,
    },
    /// An image whose token grid exceeds the position table (ViT 70x70, latents 64x64).
    #[error(
        "sample {sample}, split {split} ({kind:?}): image {height}x{width} gives a {rows}x{cols} grid, more than the {max}x{max} position table"
    )]
    ImageTooLarge {
        sample: usize,
        split: usize,
        kind: SplitKind,
        height: usize,
        width: usize,
        rows: usize,
        cols: usize,
        max: usize,
    },
    /// A sample longer than `max_sample_tokens` (or than a packer's hard maximum).
    #[error("sample {sample}: {tokens} tokens, more than the maximum of {max}")]
    SampleTooLong {
        sample: usize,
        tokens: usize,
        max: usize,
    },
    /// An inconsistent configuration.
    #[error("invalid packing config: {0}")]
    Config(String),
}
