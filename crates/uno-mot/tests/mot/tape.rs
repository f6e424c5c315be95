//! Per-layer activation checkpointing ([`MotModel::forward_taped`] and
//! [`uno_mot::DecoderTape::backward`]): the same output and the same gradients (every
//! trainable parameter's and the decoder input's) as the plain forward under autodiff,
//! with the dense and the blockwise attention, the understanding expert frozen.

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use uno_mot::{AttentionImpl, MotModel};
use uno_testing::{assert_close, assert_same_grads, to_vec, trained_grads};

use crate::common::{pack, randn, tiny};

/// A loss that reads every output row: `sum(out * w) + 0.1 sum(out^2)`.
fn loss<B: Backend>(out: Tensor<B, 2>, w: &Tensor<B, 2>) -> Tensor<B, 1> {
    (out.clone() * w.clone()).sum() + out.powi_scalar(2).sum().mul_scalar(0.1)
}

fn taped_check<B: AutodiffBackend>() {
    let device = B::Device::default();
    let p = pack::<B>(32, 31, &device);
    let w = randn::<B, 2>([p.len(), 32], 77, &device);
    let routing = p.routing(&device);
    for attention in [
        AttentionImpl::Dense,
        AttentionImpl::Blockwise {
            block_q: 4,
            block_k: 3,
        },
    ] {
        let mut model = tiny::<B>(3, 41, &device).freeze_und();
        model.attention = attention;
        // The decoder's input comes from a graph of its own (a trainable input here), as
        // the embeddings' rows do in BAGEL.
        let input = || p.hidden.clone().require_grad();

        let x = input();
        let out = model
            .forward(x.clone(), &routing, p.position_ids.clone(), &p.samples)
            .unwrap();
        let plain_out = to_vec(out.clone());
        let grads = loss(out, &w).backward();
        let plain_x = to_vec(x.grad(&grads).unwrap());
        let plain = trained_grads(&model, &GradientsParams::from_grads(grads, &model));

        let x = input();
        let (out, tape) = model
            .forward_taped(x.clone(), &routing, p.position_ids.clone(), &p.samples)
            .unwrap();
        assert_close(&to_vec(out.clone()), &plain_out, 1e-6, 1e-6);
        let grads = loss(out, &w).backward();
        let mut partials = Vec::new();
        tape.backward(&model, &routing, &grads, |g| partials.push(g))
            .unwrap();
        assert_eq!(
            partials.len(),
            3 + 1,
            "one backward per layer, then the input's"
        );
        let mut accumulator = GradientsAccumulator::<MotModel<B>>::new();
        accumulator.accumulate(&model, GradientsParams::from_grads(grads, &model));
        let mut taped_x = None;
        for partial in partials {
            if let Some(g) = x.grad(&partial) {
                taped_x = Some(to_vec(g));
            }
            accumulator.accumulate(&model, GradientsParams::from_grads(partial, &model));
        }
        assert_close(&taped_x.unwrap(), &plain_x, 1e-5, 1e-5);
        let taped = trained_grads(&model, &accumulator.grads());
        let reached = assert_same_grads(&taped, &plain, 1e-5);
        // Every generation-expert weight of every layer, and its final norm.
        assert!(reached > 3 * 10, "{reached} parameters reached");
        // The inner model still runs (the tape never changes the model).
        let _ = model.valid();
    }
}

// Gradients need autodiff: `backend_tests!` instantiates per backend, this wraps it.
fn taped_layers_give_the_plain_gradients<B: Backend>() {
    taped_check::<Autodiff<B>>();
}

uno_testing::backend_tests!(taped_layers_give_the_plain_gradients);
