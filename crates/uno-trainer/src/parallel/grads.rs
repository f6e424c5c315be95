//! The sum over peers of the trainable parameters' gradients, in one all-reduce.
//!
//! burn-optim's `GradientsParams::all_reduce` walks parameters in `ParamId` order and
//! reduces one tensor per call; ids differ between processes (and uno-trainer reassigns
//! them on resume), and one call per tensor means one synchronisation per tensor. Here the
//! gradients are concatenated in the module's visit order (the same on every peer, since
//! every peer builds the same model), summed in one call, and split back.
//!
//! A trainable parameter without a gradient on this peer (unused by its micro-batches)
//! contributes zeros and a zero presence flag (the flags travel at the end of the same
//! vector and are read back in one device sync); it gets a gradient after the sum only when
//! some peer had one, so that AdamW skips exactly the parameters a single device would
//! have skipped for the same global batch.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData, backend::AutodiffBackend};

use super::peer::{Peer, collective_error};
use crate::error::Result;
use crate::params::TrainableParams;

/// The operation's name in errors.
const OP: &str = "all-reduce of the gradients";

/// `grads` summed over all peers (trainable parameters only; other entries are dropped).
pub(crate) fn all_reduce_grads<B: AutodiffBackend, M: AutodiffModule<B>>(
    peer: &Peer<B>,
    model: &M,
    grads: GradientsParams,
    trainable: &TrainableParams,
) -> Result<GradientsParams> {
    let mut flatten = Flatten::<B> {
        grads,
        trainable,
        parts: Vec::new(),
        present: Vec::new(),
    };
    model.visit(&mut flatten);
    let Some(device) = flatten.parts.first().map(|t| t.device()) else {
        return Ok(flatten.grads);
    };
    let flags = flatten.present.len();
    let mut parts = flatten.parts;
    parts.push(Tensor::from_data(
        TensorData::new(flatten.present, [flags]),
        &device,
    ));
    let summed = peer.all_reduce_sum(OP, Tensor::cat(parts, 0))?;
    let total = summed.dims()[0];
    let present = summed
        .clone()
        .slice(total - flags..total)
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| {
            collective_error(
                OP,
                peer.rank(),
                format!("reading the presence flags: {e:?}"),
            )
        })?;
    let mut split = Split::<B> {
        summed,
        present: present.into_iter(),
        offset: 0,
        trainable,
        grads: GradientsParams::new(),
    };
    model.visit(&mut split);
    Ok(split.grads)
}

/// Each trainable parameter's gradient (or zeros) flattened, and its presence flag.
struct Flatten<'a, B: AutodiffBackend> {
    grads: GradientsParams,
    trainable: &'a TrainableParams,
    parts: Vec<Tensor<B::InnerBackend, 1>>,
    present: Vec<f32>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !self.trainable.contains(param.id) {
            return;
        }
        let value = param.val();
        let n = value.shape().num_elements();
        let device = value.device();
        let (grad, present) = match self.grads.remove::<B::InnerBackend, D>(param.id) {
            Some(grad) => (grad.reshape([n]), 1.0),
            None => (Tensor::zeros([n], &device), 0.0),
        };
        self.parts.push(grad);
        self.present.push(present);
    }
}

/// The inverse of [`Flatten`] on the summed vector.
struct Split<'a, B: AutodiffBackend> {
    summed: Tensor<B::InnerBackend, 1>,
    /// The summed presence flags, in visit order.
    present: std::vec::IntoIter<f32>,
    offset: usize,
    trainable: &'a TrainableParams,
    grads: GradientsParams,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Split<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !self.trainable.contains(param.id) {
            return;
        }
        let dims = param.val().dims();
        let n: usize = dims.iter().product();
        let start = self.offset;
        self.offset += n;
        if self.present.next().is_some_and(|p| p > 0.0) {
            let grad = self.summed.clone().slice(start..start + n).reshape(dims);
            self.grads.register::<B::InnerBackend, D>(param.id, grad);
        }
    }
}
