//! The BAGEL model assembled around the MoT decoder, and its UNO forward.
//!
//! * [`BagelConfig`]: the language model, ViT and generation settings, with tiny presets;
//! * [`Bagel`]: embeddings, `lm_head`, the MoT decoder, SigLIP ViT + connector, generation
//!   embeddings and UNO's metaqueries, with field names that follow BAGEL's checkpoint keys;
//! * [`Bagel::uno_forward`]: one packed batch in, the three UNO losses out;
//! * [`pack_attention`]: a pack's block masks as the decoder's attention segments.

mod config;
mod error;
mod forward;
mod io;
pub mod keys;
mod mask;
mod model;
mod precision;
mod taped;
mod vit;

pub use config::{BagelConfig, CodecConfig};
pub use error::BagelError;
pub use forward::{LossNormalization, UnoBatch, UnoForward, UnoObjective, flow_slots};
pub use io::{AE_FILE, METAQUERY_KEY, UNO_CONFIG, load_flux_ae, save_codec, weights_file};
pub use mask::{pack_attention, sample_attention};
pub use model::Bagel;
pub use precision::Precision;
pub use taped::LayerTape;
pub use vit::vit_tokens_to_llm;
