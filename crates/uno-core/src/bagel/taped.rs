//! The UNO forward with per-layer activation checkpointing: the decoder keeps only each
//! layer's input ([`crate::mot::DecoderTape`]), and [`LayerTape::gradients`] runs the
//! backward layer by layer.
//!
//! Burn 0.21 cannot recompute a layer inside the graph (a nested `backward()` deadlocks on
//! autodiff's global graph lock), so the backward is driven from here: the loss's own
//! backward (heads, final norms), then one recomputed layer at a time, then the
//! embeddings. The gradients are those of the plain forward up to summation order
//! (`crates/uno-core/tests/core/checkpointing.rs`).

use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;

use super::forward::batch_noise;
use super::{Bagel, BagelError, UnoBatch, UnoForward, UnoObjective};
use crate::mot::{DecoderTape, Routing};
use crate::vae::LatentCodec;

/// What [`LayerTape::gradients`] needs from a [`Bagel::uno_forward_taped`] pass.
#[derive(Debug)]
pub struct LayerTape<B: AutodiffBackend> {
    tape: DecoderTape<B>,
    routing: Routing<B>,
}

impl<B: AutodiffBackend> Bagel<B> {
    /// [`Self::uno_forward`] keeping only each decoder layer's input for the backward,
    /// instead of every activation of every layer: the same losses and hidden states, whose
    /// graph reaches back to the last layer's output only. Differentiate with
    /// [`LayerTape::gradients`], not `backward()` (which would stop at the last layer).
    pub fn uno_forward_taped(
        &self,
        batch: UnoBatch<'_, B>,
        codec: &impl LatentCodec<B>,
        objective: &UnoObjective,
    ) -> Result<(UnoForward<B>, LayerTape<B>), BagelError> {
        let noise = batch_noise(&batch, codec, objective)?;
        self.uno_forward_via(
            batch,
            &noise,
            codec,
            objective,
            |decoder, hidden, routing, positions, masks| {
                let (out, tape) = decoder.forward_taped(hidden, routing, positions, masks)?;
                let routing = routing.clone();
                Ok((out, LayerTape { tape, routing }))
            },
        )
    }
}

impl<B: AutodiffBackend> LayerTape<B> {
    /// The gradients of `loss` (computed from the outputs of the forward that made this
    /// tape) with respect to every parameter of `model` it reaches: its own backward, then
    /// each decoder layer recomputed and differentiated alone (last first), then the
    /// embeddings, summed per parameter.
    pub fn gradients(
        self,
        model: &Bagel<B>,
        loss: Tensor<B, 1>,
    ) -> Result<GradientsParams, BagelError> {
        self.tape
            .gradients(&model.language_model, model, &self.routing, loss)
            .map_err(BagelError::from)
    }
}
