//! Which parameters are trainable, found by walking the module (a [`ModuleVisitor`]).
//!
//! A parameter is trainable when its tensor requires grad; `Module::no_grad()` turns that off
//! for a frozen sub-module (the understanding expert). Paths (`gen.weight`) are the stable
//! names across processes: `ParamId`s are fresh for every freshly built model, so the
//! optimizer state is saved with a path table and re-keyed on resume.

use std::collections::{HashMap, HashSet};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::{Tensor, backend::AutodiffBackend};

/// One float parameter of a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamInfo {
    /// Dotted module path (`layers.0.weight`).
    pub path: String,
    /// Burn's id of the parameter.
    pub id: ParamId,
    /// Whether the parameter requires grad (gets gradients, optimizer state and EMA).
    pub trainable: bool,
    /// Number of elements.
    pub numel: usize,
}

/// Every float parameter of `module`, in visit order.
pub fn param_inventory<B: AutodiffBackend, M: Module<B>>(module: &M) -> Vec<ParamInfo> {
    let mut visitor = Inventory {
        path: Vec::new(),
        params: Vec::new(),
    };
    module.visit(&mut visitor);
    visitor.params
}

struct Inventory {
    path: Vec<String>,
    params: Vec<ParamInfo>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Inventory {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let tensor = param.val();
        self.params.push(ParamInfo {
            path: self.path.join("."),
            id: param.id,
            trainable: tensor.is_require_grad(),
            numel: tensor.shape().num_elements(),
        });
    }
}

/// The trainable parameters of a model: ids for fast lookup, paths for checkpoints.
#[derive(Debug, Clone)]
pub struct TrainableParams {
    ids: HashSet<ParamId>,
    by_path: Vec<(String, ParamId)>,
    numel: usize,
    frozen_numel: usize,
}

impl TrainableParams {
    /// Collect from a model.
    pub fn of<B: AutodiffBackend, M: Module<B>>(module: &M) -> Self {
        let inventory = param_inventory::<B, M>(module);
        let mut ids = HashSet::new();
        let mut by_path = Vec::new();
        let (mut numel, mut frozen_numel) = (0, 0);
        for p in inventory {
            if p.trainable {
                ids.insert(p.id);
                by_path.push((p.path, p.id));
                numel += p.numel;
            } else {
                frozen_numel += p.numel;
            }
        }
        Self {
            ids,
            by_path,
            numel,
            frozen_numel,
        }
    }

    /// Whether `id` is trainable.
    pub fn contains(&self, id: ParamId) -> bool {
        self.ids.contains(&id)
    }

    /// Number of trainable parameter tensors.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether nothing is trainable.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Trainable (path, id) pairs in visit order.
    pub fn by_path(&self) -> &[(String, ParamId)] {
        &self.by_path
    }

    /// Trainable element count.
    pub fn numel(&self) -> usize {
        self.numel
    }

    /// Frozen element count.
    pub fn frozen_numel(&self) -> usize {
        self.frozen_numel
    }
}

/// Give the float parameters of `module` the ids that `ids_by_path` assigns to their paths
/// (parameters whose path is absent keep their id). Used to make the EMA copy share the
/// model's ids after both were loaded from files, whatever ids the load hook produced.
pub fn reassign_ids<B: AutodiffBackend, M: Module<B>>(
    module: M,
    ids_by_path: &HashMap<String, ParamId>,
) -> M {
    let mut mapper = Reassign {
        path: Vec::new(),
        ids_by_path,
    };
    module.map(&mut mapper)
}

struct Reassign<'a> {
    path: Vec<String>,
    ids_by_path: &'a HashMap<String, ParamId>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Reassign<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let id = self
            .ids_by_path
            .get(&self.path.join("."))
            .copied()
            .unwrap_or(id);
        Param::from_mapped_value(id, tensor, mapper)
    }
}
