//! # uno-core
//!
//! The crate users depend on: UNO (Understanding-Oriented Post-Training) for BAGEL-style
//! mixture-of-transformers models, on [Burn](https://burn.dev).
//!
//! It re-exports the workspace crates under short names and the Burn it was built with, so
//! a user's `Cargo.toml` needs only `uno-core`:
//!
//! * [`packing`]: samples to one packed sequence, positions, loss indexes, block masks;
//! * [`data`]: data sets (synthetic shapes, JSONL manifests) and tokenizers;
//! * [`checkpoint`]: memory-mapped safetensors reading and atomic writing;
//! * [`mot`]: the mixture-of-transformers decoder;
//! * [`objectives`]: flow matching, caption cross entropy, metaquery regression;
//! * [`trainer`]: the post-training loop;
//! * [`backend`]: the Burn backends enabled by this crate's features.

#![warn(missing_docs)]

pub mod bagel;
pub mod embed;
pub mod generate;
pub mod patch;
pub mod train;
pub mod vae;
pub mod vision;

pub use burn;
pub use uno_checkpoint as checkpoint;
pub use uno_data as data;
pub use uno_mot as mot;
pub use uno_objectives as objectives;
pub use uno_packing as packing;
pub use uno_trainer as trainer;

/// Burn backends compiled in by `uno-core`'s features (`flex` and `autodiff` by default;
/// `ndarray`, `wgpu` and `cuda` opt in).
pub mod backend {
    #[cfg(feature = "autodiff")]
    pub use burn::backend::Autodiff;
    #[cfg(feature = "cuda")]
    pub use burn::backend::Cuda;
    #[cfg(feature = "flex")]
    pub use burn::backend::Flex;
    #[cfg(feature = "ndarray")]
    pub use burn::backend::NdArray;
    #[cfg(feature = "wgpu")]
    pub use burn::backend::Wgpu;
}
