//! [`loss_with_gradients`]: a loss for a model that computes its gradients itself.
//!
//! The trainer differentiates the loss a [`crate::TrainStep`] returns. A model whose
//! backward cannot be one `backward()` of its loss (uno-core's per-layer activation
//! checkpointing runs one backward per decoder layer) computes its parameters' gradients
//! `G` itself and returns `value + sum_p <p, G_p> - detach(sum_p <p, G_p>)`: its value is
//! the loss's, its gradient with respect to each parameter `p` is exactly `G_p` (`G_p`
//! times the ones of a sum's backward), and its graph holds the parameters only, so the
//! trainer's scaling, accumulation, all-reduce and clipping apply unchanged.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, backend::AutodiffBackend};

/// A scalar equal to `value` (shape `[1]`) whose gradient with respect to each parameter of
/// `module` is that parameter's entry in `grads` (parameters without one get none).
pub fn loss_with_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    value: Tensor<B, 1>,
    grads: &GradientsParams,
) -> Tensor<B, 1> {
    let mut inner = InnerProducts::<B> { grads, sum: None };
    module.visit(&mut inner);
    let value = value.detach();
    match inner.sum {
        Some(sum) => value + sum.clone() - sum.detach(),
        None => value,
    }
}

/// `sum_p <p, G_p>` over the parameters that have a gradient.
struct InnerProducts<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    sum: Option<Tensor<B, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for InnerProducts<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(grad) = self.grads.get::<B::InnerBackend, D>(param.id) else {
            return;
        };
        let term = (param.val() * Tensor::<B, D>::from_inner(grad))
            .sum()
            .reshape([1]);
        self.sum = Some(match self.sum.take() {
            Some(sum) => sum + term,
            None => term,
        });
    }
}
