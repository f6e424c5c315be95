//! Shared by the `vision`, `embed` and `vae` tests (a module of this test binary): reads the
//! fixtures written by `tools/vision_reference.py` and loads their PyTorch-named weights
//! into Burn modules by parameter path.
//!
//! The loader is a test helper, not the checkpoint loader: it walks the module with a
//! `ModuleMapper`, turns each parameter path into a key (`prefix + path`, norm
//! `gamma`/`beta` -> `weight`/`bias`, `mlp_0`/`mlp_2` -> `mlp.0`/`mlp.2`), transposes Linear
//! weights (`[out, in]` -> `[in, out]`), checks shapes, and fails when a parameter has no
//! key or a key under the prefix is left unused. So a passing fixture test also checks that
//! the field names map 1:1 to the checkpoint's.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::BTreeSet;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Tensor, TensorData, backend::Backend};

pub use uno_testing::Fixture;

/// uno-core's fixtures: files under `tests/data/`, and loading a whole module from them.
pub trait CoreFixture {
    /// `tests/data/{name}` of this crate.
    fn load(name: &str) -> Self;

    /// Load every parameter of `module` from the keys `prefix + path`; see the module docs.
    fn load_into<B: Backend, M: Module<B>>(&self, module: M, prefix: &str, device: &B::Device)
    -> M;
}

impl CoreFixture for Fixture {
    fn load(name: &str) -> Self {
        Fixture::read(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR")))
    }

    fn load_into<B: Backend, M: Module<B>>(
        &self,
        module: M,
        prefix: &str,
        device: &B::Device,
    ) -> M {
        let mut mapper = Loader::<B> {
            fixture: self,
            prefix: prefix.to_string(),
            stack: Vec::new(),
            used: RefCell::new(BTreeSet::new()),
            device: device.clone(),
        };
        let module = module.map(&mut mapper);
        let unused: Vec<String> = self
            .keys()
            .into_iter()
            .filter(|k| {
                k.starts_with(prefix)
                    && !k.starts_with("input.")
                    && !k.starts_with("expected.")
                    && !mapper.used.borrow().contains(k)
            })
            .collect();
        assert!(
            unused.is_empty(),
            "keys under '{prefix}' not used by the module: {unused:?}"
        );
        module
    }
}

struct Loader<'a, B: Backend> {
    fixture: &'a Fixture,
    prefix: String,
    /// (field name, container type of the struct holding it)
    stack: Vec<(String, String)>,
    used: RefCell<BTreeSet<String>>,
    device: B::Device,
}

impl<B: Backend> ModuleMapper<B> for Loader<'_, B> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack
            .push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (leaf, parent) = self
            .stack
            .last()
            .cloned()
            .expect("parameter inside a struct");
        let mut parts: Vec<String> = self.stack.iter().map(|(n, _)| n.clone()).collect();
        let is_norm = parent.ends_with(":LayerNorm") || parent.ends_with(":GroupNorm");
        let transpose = parent.ends_with(":Linear") && leaf == "weight";
        let last = parts.last_mut().unwrap();
        if is_norm && leaf == "gamma" {
            *last = "weight".into();
        } else if is_norm && leaf == "beta" {
            *last = "bias".into();
        }
        let path = parts
            .join(".")
            .replace("mlp_0", "mlp.0")
            .replace("mlp_2", "mlp.2");
        let key = format!("{}{}", self.prefix, path);
        let (data, shape) = self.fixture.f32(&key);
        self.used.borrow_mut().insert(key.clone());
        let device = self.device.clone();
        param.map(|old| {
            let mut t = Tensor::<B, D>::from_data(TensorData::new(data, shape.clone()), &device);
            if transpose {
                t = t.transpose();
            }
            assert_eq!(old.dims(), t.dims(), "{key}: shape (file {shape:?})");
            t
        })
    }
}
