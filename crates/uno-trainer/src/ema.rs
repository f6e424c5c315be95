//! Exponential moving average of the trainable weights (burn-optim has none).
//!
//! The EMA is a copy of the model with the SAME `ParamId`s. Frozen parameters are never
//! touched: the copy shares their tensors with the model (Burn tensors are reference
//! counted), so the frozen 7B expert is neither duplicated in memory nor updated. The
//! trainable ones are detached (no autodiff tracking) and updated after every optimizer step
//! as `ema = decay * ema + (1 - decay) * param`, as BAGEL's `ema_update` does.

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::{Tensor, backend::AutodiffBackend, container::TensorContainer};

use crate::params::TrainableParams;

/// A detached copy of `model` to serve as the EMA at step 0 (trainable tensors detached,
/// frozen ones shared).
pub fn ema_init<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    trainable: &TrainableParams,
) -> M {
    let mut mapper = Detach { trainable };
    model.clone().map(&mut mapper)
}

struct Detach<'a> {
    trainable: &'a TrainableParams,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Detach<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if !self.trainable.contains(param.id) {
            return param;
        }
        let (id, tensor, mapper) = param.consume();
        Param::from_mapped_value(id, Tensor::from_inner(tensor.inner()), mapper)
    }
}

/// One EMA step: every trainable parameter of `ema` becomes
/// `decay * ema + (1 - decay) * param`, where `param` is the parameter with the same id in
/// `model`. Frozen parameters are returned unchanged.
pub fn ema_update<B: AutodiffBackend, M: AutodiffModule<B>>(
    ema: M,
    model: &M,
    trainable: &TrainableParams,
    decay: f64,
) -> M {
    let mut collect = Collect::<B> {
        trainable,
        tensors: TensorContainer::new(),
        _backend: core::marker::PhantomData,
    };
    model.visit(&mut collect);
    let mut mapper = Update::<B> {
        current: collect.tensors,
        decay,
        _backend: core::marker::PhantomData,
    };
    ema.map(&mut mapper)
}

struct Collect<'a, B> {
    trainable: &'a TrainableParams,
    tensors: TensorContainer<ParamId>,
    _backend: core::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.trainable.contains(param.id) {
            self.tensors
                .register::<B::InnerBackend>(param.id, param.val().inner().into_primitive());
        }
    }
}

struct Update<B> {
    current: TensorContainer<ParamId>,
    decay: f64,
    _backend: core::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Update<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let Some(current) = self.current.remove::<B::InnerBackend>(&param.id) else {
            return param;
        };
        let current = Tensor::<B::InnerBackend, D>::from_primitive(current);
        let (id, ema, mapper) = param.consume();
        let ema = ema
            .inner()
            .mul_scalar(self.decay)
            .add(current.mul_scalar(1.0 - self.decay));
        Param::from_mapped_value(id, Tensor::from_inner(ema), mapper)
    }
}

/// The EMA to resume with: `model`'s frozen tensors (shared, not a second copy) with the
/// trainable tensors of `loaded_ema` (which must already carry the model's ids), detached.
pub fn ema_graft<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    loaded_ema: &M,
    trainable: &TrainableParams,
) -> M {
    let mut collect = Collect::<B> {
        trainable,
        tensors: TensorContainer::new(),
        _backend: core::marker::PhantomData,
    };
    loaded_ema.visit(&mut collect);
    let mut mapper = Replace::<B> {
        tensors: collect.tensors,
        _backend: core::marker::PhantomData,
    };
    model.clone().map(&mut mapper)
}

struct Replace<B> {
    tensors: TensorContainer<ParamId>,
    _backend: core::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Replace<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let Some(loaded) = self.tensors.remove::<B::InnerBackend>(&param.id) else {
            return param;
        };
        let (id, _, mapper) = param.consume();
        let loaded = Tensor::<B::InnerBackend, D>::from_primitive(loaded);
        Param::from_mapped_value(id, Tensor::from_inner(loaded), mapper)
    }
}
