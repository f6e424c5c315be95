//! BAGEL's mapping from ViT output to language-model input tokens: the connector plus the
//! fixed 2-D sin-cos `vit_pos_embed`. It belongs to the model, which owns both pieces.

use burn::tensor::{Tensor, backend::Backend};

use crate::embed::PositionEmbedding;
use crate::patch::VisionError;
use crate::vision::MlpConnector;

/// ViT output to language-model input tokens, as BAGEL does it:
/// `connector(vit_out) + vit_pos_embed[position_ids]`, with the same ids the ViT used.
///
/// # Errors
/// [`VisionError::ShapeMismatch`] when the id count differs from the rows,
/// [`VisionError::PositionIdOutOfRange`] for an id past the table.
pub fn vit_tokens_to_llm<B: Backend>(
    connector: &MlpConnector<B>,
    vit_pos_embed: &PositionEmbedding<B>,
    vit_out: Tensor<B, 2>,
    position_ids: &[usize],
) -> Result<Tensor<B, 2>, VisionError> {
    let [n, _] = vit_out.dims();
    if position_ids.len() != n {
        return Err(VisionError::shape(
            "connector position ids (one per ViT token)",
            n,
            position_ids.len(),
        ));
    }
    let pos = vit_pos_embed.forward(position_ids)?;
    let out = connector.forward(vit_out);
    let [_, d] = out.dims();
    let [_, dp] = pos.dims();
    if d != dp {
        return Err(VisionError::shape(
            "vit_pos_embed width (connector out_dim)",
            d,
            dp,
        ));
    }
    Ok(out + pos)
}
