//! Comparing two ways of computing a module's gradients parameter by parameter (e.g. a
//! checkpointed backward against the plain one).

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;

use crate::{assert_close, to_vec};

/// Every trained (`require_grad`) parameter of `module` in visit order, with its gradient
/// in `grads` read back to the host (`None` when it has none).
pub fn trained_grads<B: AutodiffBackend, M: Module<B>>(
    module: &M,
    grads: &GradientsParams,
) -> Vec<(ParamId, Option<Vec<f32>>)> {
    struct Read<'a> {
        grads: &'a GradientsParams,
        out: Vec<(ParamId, Option<Vec<f32>>)>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Read<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if param.val().is_require_grad() {
                let grad = self.grads.get::<B::InnerBackend, D>(param.id).map(to_vec);
                self.out.push((param.id, grad));
            }
        }
    }
    let mut read = Read {
        grads,
        out: Vec::new(),
    };
    module.visit(&mut read);
    read.out
}

/// `got` and `want` ([`trained_grads`] of the same module) reach the same parameters, with
/// gradients within `tol` of the largest entry of each parameter's (and `tol` relative);
/// returns how many parameters have a gradient.
#[track_caller]
pub fn assert_same_grads(
    got: &[(ParamId, Option<Vec<f32>>)],
    want: &[(ParamId, Option<Vec<f32>>)],
    tol: f32,
) -> usize {
    assert_eq!(got.len(), want.len(), "trained parameter count");
    let mut reached = 0;
    for ((id, got), (_, want)) in got.iter().zip(want) {
        match (got, want) {
            (Some(got), Some(want)) => {
                let scale = want.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
                assert_close(got, want, tol * scale, tol);
                reached += 1;
            }
            (None, None) => {}
            _ => panic!(
                "parameter {id}: a gradient in one {}, in the other {}",
                got.is_some(),
                want.is_some()
            ),
        }
    }
    reached
}
