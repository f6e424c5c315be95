//! Vision pieces of BAGEL: the SigLIP NaViT encoder, the patchify helpers and the MLP
//! connector that maps ViT tokens into the language model's hidden size.
//!
//! * [`patchify`] / [`unpatchify`]: an image to patch rows in `(py, px, c)` order and back;
//! * [`SiglipVisionModel`]: the NaViT encoder (patch embedding as a Linear, learned position
//!   table indexed by `row * max_patches_per_side + col`, images attend only to themselves);
//! * [`MlpConnector`]: `fc2(gelu_tanh(fc1(x)))`; the fixed 2-D sin-cos `vit_pos_embed` table
//!   added after it is a [`crate::embed::PositionEmbedding`] ([`vit_tokens_to_llm`] does
//!   both).
//!
//! All errors on user data are [`VisionError`]s (shared with [`crate::embed`] and
//! [`crate::vae`]); nothing here panics on bad input shapes or ids.

mod connector;
mod patch;
mod siglip;

pub use connector::{MlpConnector, MlpConnectorConfig, vit_tokens_to_llm};
pub use patch::{ImageLayout, patchify, unpatchify};
pub use siglip::{
    SiglipAttention, SiglipEncoder, SiglipEncoderLayer, SiglipMlp, SiglipVisionConfig,
    SiglipVisionEmbeddings, SiglipVisionModel, SiglipVisionTransformer,
};

/// Errors on bad user input to the vision, embedding and VAE pieces. Every message names the
/// offending value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VisionError {
    /// An image side is not a multiple of the patch (or downsampling) size.
    #[error(
        "{what}: image of {height}x{width} is not divisible by {patch} (height and width must be multiples)"
    )]
    NotDivisible {
        what: &'static str,
        height: usize,
        width: usize,
        patch: usize,
    },
    /// A position id indexes past the end of a position table.
    #[error("{what}: position id {id} at index {index} is out of the table of {rows} rows")]
    PositionIdOutOfRange {
        what: &'static str,
        id: usize,
        index: usize,
        rows: usize,
    },
    /// An image's patch grid is larger than the position table's side.
    #[error("{what}: patch grid {rows}x{cols} exceeds the position table's {max}x{max}")]
    GridTooLarge {
        what: &'static str,
        rows: usize,
        cols: usize,
        max: usize,
    },
    /// A tensor or list does not have the shape or length that was expected.
    #[error("{what}: expected {expected}, found {found}")]
    ShapeMismatch {
        what: &'static str,
        expected: String,
        found: String,
    },
    /// A configuration value cannot describe a valid module.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
}

impl VisionError {
    /// `Ok` when both sides are multiples of a non-zero `patch`, else [`Self::NotDivisible`].
    pub(crate) fn check_divisible(
        what: &'static str,
        height: usize,
        width: usize,
        patch: usize,
    ) -> Result<(), Self> {
        if patch == 0 || !height.is_multiple_of(patch) || !width.is_multiple_of(patch) {
            return Err(Self::NotDivisible {
                what,
                height,
                width,
                patch,
            });
        }
        Ok(())
    }

    pub(crate) fn shape(
        what: &'static str,
        expected: impl core::fmt::Debug,
        found: impl core::fmt::Debug,
    ) -> Self {
        Self::ShapeMismatch {
            what,
            expected: format!("{expected:?}"),
            found: format!("{found:?}"),
        }
    }
}

/// Check position ids against a table of `rows` rows.
pub(crate) fn check_ids(what: &'static str, ids: &[usize], rows: usize) -> Result<(), VisionError> {
    match ids.iter().enumerate().find(|(_, id)| **id >= rows) {
        Some((index, &id)) => Err(VisionError::PositionIdOutOfRange {
            what,
            id,
            index,
            rows,
        }),
        None => Ok(()),
    }
}

/// Position ids as an Int tensor on `device`.
pub(crate) fn ids_tensor<B: burn::tensor::backend::Backend>(
    ids: &[usize],
    device: &B::Device,
) -> burn::tensor::Tensor<B, 1, burn::tensor::Int> {
    let data: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    burn::tensor::Tensor::from_data(burn::tensor::TensorData::new(data, [ids.len()]), device)
}
