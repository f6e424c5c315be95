//! # uno-packing
//!
//! Turns BAGEL / UNO training samples into one packed sequence: the token plan, RoPE
//! position ids, index lists per token group and loss, and a compact block attention mask.
//! Pure Rust; Burn tensors appear only at the edge ([`index_tensor`],
//! [`SampleMask::to_tensor`]).
//!
//! A UNO text-to-image sample packs as
//! `prompt (causal) -> noised target (noise) -> re-caption (caption) -> metaqueries`,
//! where the caption and metaqueries see the noised target but not the prompt (the paper's
//! leakage masking, section 3.3 and Figure 4), so their losses can only be lowered by
//! making the generation expert's noised-image representations more understandable.
//!
//! ```
//! use uno_packing::{ImageSize, PackedSequence, PackingConfig, Sample};
//!
//! let config = PackingConfig { num_metaqueries: 4, ..PackingConfig::default() };
//! let sample = Sample::text_to_image(vec![10, 11], ImageSize::new(32, 32), vec![20, 21, 22]);
//! let pack = PackedSequence::pack(&[sample], &config).unwrap();
//! // prompt 2+2, image 2x2 latents + 2 markers, caption 3+2, 4 metaqueries
//! assert_eq!(pack.len, 4 + 6 + 5 + 4);
//! assert_eq!(pack.caption_ce.labels, [20, 21, 22, config.special_tokens.im_end]);
//! let mask = &pack.samples[0].mask;
//! assert!(!mask.attends(10, 0)); // the caption never sees the prompt
//! assert!(mask.attends(10, 5)); // but sees the noised image
//! ```

#![warn(missing_docs)]

mod composition;
mod config;
mod error;
mod mask;
mod packed;
mod packer;
mod plan;
mod sample;
mod split;
mod tensor;

pub use composition::TokenComposition;
pub use config::{MetaqueryAttention, PackingConfig, SpecialTokens, SupervisionVisibility};
pub use error::PackError;
pub use mask::{SampleMask, SplitMask};
pub use packed::{
    CeTargets, ImageKind, ImageLayout, MetaqueryGroup, PackedSequence, SampleLayout, SplitLayout,
    TimestepSlot,
};
pub use packer::{GreedyPacker, PackBudget};
pub use sample::{EditDropout, Sample, SampleKind, Supervision};
pub use split::{AttnMode, Expert, ImageSize, SplitKind, SplitSpec};
pub use tensor::index_tensor;
