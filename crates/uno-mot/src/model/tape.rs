//! Per-layer activation checkpointing driven from outside the autodiff graph.
//!
//! Burn 0.21 cannot checkpoint a layer inside the graph (a custom op whose backward runs a
//! nested `backward()` deadlocks on autodiff's global graph lock; crate docs, "Training
//! memory"). So [`MotModel::forward_taped`] runs the layers on the inner backend, keeping
//! only each layer's input, and hands the caller the decoder's output built on a fresh leaf;
//! after the caller's `backward()` of its loss, [`DecoderTape::backward`] walks the layers
//! in reverse: each is recomputed from its input under autodiff and backpropagated alone
//! (`sum(y * dL/dy)`), its input's gradient feeding the layer before; last, the gradient of
//! the decoder's input is pushed into the graph that produced it (the embeddings). Every
//! partial backward's gradients go to the caller, which collects its parameters' share.
//!
//! Kept per layer: its input, `[L, hidden]` in the compute type, instead of every
//! activation of the layer (projections, attention statistics, MLP). The price is one more
//! forward of every layer.

use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{FloatDType, Int, Tensor};

use super::{LayerRope, MotModel};
use crate::attention::{JointAttention, SampleAttention};
use crate::{MotError, Routing};

/// What [`DecoderTape::backward`] needs from a [`MotModel::forward_taped`] pass.
#[derive(Debug)]
pub struct DecoderTape<B: AutodiffBackend> {
    /// Each layer's input, expert order, off the graph (empty for an empty pack).
    inputs: Vec<Tensor<B::InnerBackend, 2>>,
    /// The last layer's output as a leaf: the caller's loss reaches the decoder through it.
    last: Option<Tensor<B, 2>>,
    /// The first layer's input on the graph of the decoder's input (the embeddings).
    entry: Option<Tensor<B, 2>>,
    position_ids: Tensor<B, 1, Int>,
    samples: Vec<SampleAttention>,
    dtype: FloatDType,
}

impl<B: AutodiffBackend> MotModel<B> {
    /// [`Self::forward`] without keeping any layer's activations: the same output (the
    /// layers compute the same operations on the same values, off the graph), whose graph
    /// holds only the final norms above a leaf, and the [`DecoderTape`] to backpropagate
    /// through the layers once the caller's loss has been differentiated.
    pub fn forward_taped(
        &self,
        hidden: Tensor<B, 2>,
        routing: &Routing<B>,
        position_ids: Tensor<B, 1, Int>,
        samples: &[SampleAttention],
    ) -> Result<(Tensor<B, 2>, DecoderTape<B>), MotError> {
        let len = self.check_inputs(&hidden, routing, &position_ids)?;
        let device = hidden.device();
        let attention = JointAttention::<B::InnerBackend>::new(
            samples,
            len,
            self.num_heads,
            self.num_kv_heads,
            self.attention,
            &device,
        )?;
        let mut tape = DecoderTape {
            inputs: Vec::new(),
            last: None,
            entry: None,
            position_ids: position_ids.clone(),
            samples: samples.to_vec(),
            dtype: hidden.dtype().into(),
        };
        if len == 0 {
            return Ok((hidden, tape));
        }
        let (hidden, out_dtype) = self.enter(hidden);
        tape.dtype = hidden.dtype().into();
        let entry = routing.to_expert_order(hidden);
        let rope = LayerRope::new(position_ids.inner(), self, tape.dtype);
        let inner_routing = routing.inner();
        let mut h = entry.clone().inner();
        for layer in &self.layers {
            tape.inputs.push(h.clone());
            h = layer.valid().forward(h, &inner_routing, &rope, |q, k, v| {
                attention.forward(q, k, v)
            });
        }
        let last = Tensor::from_inner(h).require_grad();
        let out = self.final_norm(last.clone(), routing).cast(out_dtype);
        tape.last = Some(last);
        tape.entry = Some(entry);
        Ok((out, tape))
    }
}

impl<B: AutodiffBackend> DecoderTape<B> {
    /// Backpropagate through the layers of `model` (the one that taped) and into the
    /// decoder's input, given `grads`, the gradients of the caller's loss (its `backward()`
    /// reached the decoder's output). `collect` receives the gradients of each partial
    /// backward in turn: each layer's (last layer first), then the input graph's; a
    /// parameter's gradient is in exactly one of them unless it is used in several places.
    /// Nothing is collected when the loss does not depend on the decoder's output.
    pub fn backward(
        self,
        model: &MotModel<B>,
        routing: &Routing<B>,
        grads: &B::Gradients,
        mut collect: impl FnMut(B::Gradients),
    ) -> Result<(), MotError> {
        let (Some(last), Some(entry)) = (self.last, self.entry) else {
            return Ok(());
        };
        let Some(mut upstream) = last.grad(grads) else {
            return Ok(());
        };
        let device = last.device();
        let attention = JointAttention::<B>::new(
            &self.samples,
            routing.len(),
            model.num_heads,
            model.num_kv_heads,
            model.attention,
            &device,
        )?;
        let rope = LayerRope::new(self.position_ids, model, self.dtype);
        for (layer, input) in model.layers.iter().zip(self.inputs).rev() {
            let input = Tensor::<B, 2>::from_inner(input).require_grad();
            let output = layer.forward(input.clone(), routing, &rope, |q, k, v| {
                attention.forward(q, k, v)
            });
            let grads = (output * Tensor::from_inner(upstream.clone()))
                .sum()
                .backward();
            upstream = input.grad(&grads).unwrap_or_else(|| upstream.zeros_like());
            collect(grads);
        }
        collect((entry * Tensor::from_inner(upstream)).sum().backward());
        Ok(())
    }

    /// The gradients of `loss` (computed from the output of the forward that made this
    /// tape) with respect to every parameter of `module` it reaches, `module` being the
    /// model that holds `decoder` (or `decoder` itself): the loss's own backward, then
    /// [`Self::backward`]'s partial backwards, summed per parameter. What a training step
    /// hands its optimiser.
    pub fn gradients<M: AutodiffModule<B>>(
        self,
        decoder: &MotModel<B>,
        module: &M,
        routing: &Routing<B>,
        loss: Tensor<B, 1>,
    ) -> Result<GradientsParams, MotError> {
        let grads = loss.backward();
        let mut accumulator = GradientsAccumulator::<M>::new();
        self.backward(decoder, routing, &grads, |partial| {
            accumulator.accumulate(module, GradientsParams::from_grads(partial, module));
        })?;
        accumulator.accumulate(module, GradientsParams::from_grads(grads, module));
        Ok(accumulator.grads())
    }
}
