//! Vision pieces of BAGEL: the SigLIP NaViT encoder, the patchify helpers and the MLP
//! connector that maps ViT tokens into the language model's hidden size.
//!
//! * [`SiglipVisionModel`]: the NaViT encoder (patch embedding as a Linear, learned position
//!   table indexed by `row * max_patches_per_side + col`, images attend only to themselves);
//! * [`MlpConnector`]: `fc2(gelu_tanh(fc1(x)))`; the fixed 2-D sin-cos `vit_pos_embed` table
//!   added after it belongs to the model (`crate::bagel::vit_tokens_to_llm` does both).
//!
//! All errors on user data are [`VisionError`]s ([`crate::patch`], shared with
//! [`crate::embed`] and [`crate::vae`]); nothing here panics on bad input shapes or ids.

mod connector;
mod siglip;

pub use crate::patch::VisionError;
pub use connector::{MlpConnector, MlpConnectorConfig};
pub use siglip::{
    SiglipAttention, SiglipEncoder, SiglipEncoderLayer, SiglipMlp, SiglipVisionConfig,
    SiglipVisionEmbeddings, SiglipVisionModel, SiglipVisionTransformer,
};
