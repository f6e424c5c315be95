//! Global gradient-norm clipping, as `torch.nn.utils.clip_grad_norm_` in BAGEL.
//!
//! burn-optim's `GradientClippingConfig::Norm` clips every tensor by its own norm, which
//! changes the direction of the update; BAGEL computes ONE L2 norm over all trainable
//! gradients and scales them all by `min(1, max_norm / (norm + 1e-6))`.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{ElementConversion, Tensor, backend::AutodiffBackend};

use crate::params::TrainableParams;

/// torch's `clip_grad_norm_` epsilon in the clip coefficient.
pub const CLIP_EPS: f64 = 1e-6;

/// The L2 norm over all gradients of the trainable parameters of `module`, read back to the
/// host once (one device sync). NaN/inf propagate, so callers can test `is_finite`.
pub fn global_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
    trainable: &TrainableParams,
) -> f64 {
    let mut visitor = SumSquares::<B> {
        grads,
        trainable,
        sum: None,
    };
    module.visit(&mut visitor);
    match visitor.sum {
        Some(sum) => sum.into_scalar().elem::<f64>().sqrt(),
        None => 0.0,
    }
}

struct SumSquares<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    trainable: &'a TrainableParams,
    sum: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SumSquares<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !self.trainable.contains(param.id) {
            return;
        }
        let Some(grad) = self.grads.get::<B::InnerBackend, D>(param.id) else {
            return;
        };
        // Rows first, then the row sums: each reduction stays far below the size at which
        // a multi-threaded CPU backend sums in scheduling-dependent order (burn-flex: 4M
        // elements), so the norm, and the run, are the same from one run to the next.
        let last = grad.dims()[D - 1].max(1);
        let rows = grad.shape().num_elements() / last;
        let sq = grad.square().reshape([rows, last]).sum_dim(1).sum();
        self.sum = Some(match self.sum.take() {
            Some(acc) => acc + sq,
            None => sq,
        });
    }
}

/// The factor BAGEL scales every gradient by: `min(1, max_norm / (norm + 1e-6))`.
pub fn clip_coefficient(norm: f64, max_norm: f64) -> f64 {
    (max_norm / (norm + CLIP_EPS)).min(1.0)
}

/// Multiply every trainable gradient of `module` by `scale`.
pub fn scale_grads<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: GradientsParams,
    trainable: &TrainableParams,
    scale: f64,
) -> GradientsParams {
    let mut visitor = Scale::<B> {
        grads,
        trainable,
        scale,
        _backend: core::marker::PhantomData,
    };
    module.visit(&mut visitor);
    visitor.grads
}

struct Scale<'a, B> {
    grads: GradientsParams,
    trainable: &'a TrainableParams,
    scale: f64,
    _backend: core::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !self.trainable.contains(param.id) {
            return;
        }
        if let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads
                .register::<B::InnerBackend, D>(param.id, grad.mul_scalar(self.scale));
        }
    }
}

/// Clip `grads` to a global L2 norm of `max_norm`; returns the clipped gradients and the
/// norm BEFORE clipping. Gradients are untouched when the norm is within the limit, or when
/// it is not finite (the caller skips such a step).
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: GradientsParams,
    trainable: &TrainableParams,
    max_norm: f64,
) -> (GradientsParams, f64) {
    let norm = global_grad_norm(module, &grads, trainable);
    if !norm.is_finite() {
        return (grads, norm);
    }
    let coef = clip_coefficient(norm, max_norm);
    if coef < 1.0 {
        (scale_grads(module, grads, trainable, coef), norm)
    } else {
        (grads, norm)
    }
}
