//! Inference: text-to-image and editing with BAGEL's flow sampler and classifier-free
//! guidance, captioning through the understanding path, and PNG grids.
//!
//! * [`sampling_timesteps`] and [`euler`]: the schedule and the integrator;
//! * [`Guidance`]: text and image CFG with the renorm variants;
//! * [`Generator`]: a model, its codec and packing; [`Generator::generate`] and
//!   [`Generator::caption`];
//! * [`to_rgb8`], [`grid`], [`save_png`]: images out;
//! * [`sample_grid`]: a BAGEL folder and prompts to a PNG grid (and captions), the entry
//!   point behind `examples/generate.rs`.
//!
//! Contexts (prompt; for editing the source image's ViT and clean-VAE splits) are packed
//! by [`crate::packing`] exactly as in training, with the noised target split last, so a
//! branch's context is a prefix the image tokens attend to and nothing attends back.

mod caption;
mod error;
mod folder;
mod grid;
mod guidance;
mod sampler;
mod schedule;
mod source;

pub use caption::{CaptionConfig, Decoding, pick};
pub use error::GenerateError;
pub use folder::{GridReport, GridSpec, sample_grid};
pub use grid::{GUTTER, grid, save_png, to_rgb8};
pub use guidance::{Guidance, Renorm};
pub use sampler::{Generator, ImageRequest, SamplerConfig, euler};
pub use schedule::sampling_timesteps;
pub use source::EditSource;
