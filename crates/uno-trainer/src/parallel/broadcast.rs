//! Peer 0's weights on every peer: at the start of a run and after a resume, so that every
//! replica starts from bit-identical weights whatever each one initialised or loaded.

use burn::module::{AutodiffModule, ModuleMapper, Param};
use burn::tensor::{Tensor, backend::AutodiffBackend};

use super::peer::Peer;
use crate::error::{Result, TrainError};
use crate::params::TrainableParams;

/// `module` with every float parameter replaced by peer 0's, or, with `only` given, every
/// parameter in `only` (the EMA's trainable ones: its frozen tensors are the model's,
/// shared, and must stay so). `require_grad` flags and ids are kept.
pub(crate) fn broadcast_module<B: AutodiffBackend, M: AutodiffModule<B>>(
    peer: &Peer<B>,
    module: M,
    only: Option<&TrainableParams>,
) -> Result<M> {
    let mut mapper = Broadcast {
        peer,
        only,
        error: None,
    };
    let module = module.map(&mut mapper);
    match mapper.error {
        Some(e) => Err(e),
        None => Ok(module),
    }
}

struct Broadcast<'a, B: AutodiffBackend> {
    peer: &'a Peer<B>,
    only: Option<&'a TrainableParams>,
    /// The first failure (a mapper cannot return one; later parameters are left alone).
    error: Option<TrainError>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Broadcast<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if self.error.is_some() || self.only.is_some_and(|t| !t.contains(param.id)) {
            return param;
        }
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        match self
            .peer
            .broadcast("broadcast of the weights", tensor.clone().inner())
        {
            Ok(received) => {
                let tensor = Tensor::from_inner(received).set_require_grad(require_grad);
                Param::from_mapped_value(id, tensor, mapper)
            }
            Err(e) => {
                self.error = Some(e);
                Param::from_mapped_value(id, tensor, mapper)
            }
        }
    }
}
