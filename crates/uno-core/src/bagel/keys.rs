//! BAGEL's checkpoint names for every parameter of [`Bagel`](super::Bagel), derived from
//! the module tree: one rule table instead of a hand-written list, so a new field cannot
//! silently miss its key (the round-trip test checks the full key set against ARCHITECTURE.md's).
//!
//! Rules (module path -> `ema.safetensors` key):
//! * `embed_tokens` -> `language_model.model.embed_tokens.weight`; `lm_head.*` ->
//!   `language_model.lm_head.*`; `metaqueries` -> `uno.metaqueries` (UNO's addition);
//! * `language_model.layers.{i}.und.<rest>` -> `language_model.model.layers.{i}.<rest>`;
//!   the generation expert (`moe_gen`) takes BAGEL's `_moe_gen` suffix on the part under
//!   the layer: `self_attn.q_proj_moe_gen.*`, `mlp_moe_gen.gate_proj.*`,
//!   `input_layernorm_moe_gen.*`; `language_model.{norm,norm_moe_gen}` ->
//!   `language_model.model.{norm,norm_moe_gen}`;
//! * `generation.<x>` -> `<x>` (`vae2llm`, `llm2vae`, `time_embedder.mlp.{0,2}`,
//!   `latent_pos_embed`); everything else keeps its path (`vit_model.vision_model.*`,
//!   `connector.*`, `vit_pos_embed.*`);
//! * Burn's norms store `gamma`/`beta`, PyTorch's `weight`/`bias`; Burn's Linear weights are
//!   `[in, out]`, PyTorch's `[out, in]` ([`Layout::TorchLinear`]).

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::{Tensor, backend::Backend};

use crate::checkpoint::{CheckpointError, Layout, WeightReader, WeightWriter};

/// Maps a parameter's module path and parent container type to its checkpoint key.
pub type KeyRule = fn(&[String], &str) -> (String, Layout);

/// PyTorch's name and layout of a Burn parameter: norms' `gamma`/`beta` are
/// `weight`/`bias`, Linear weights are transposed. Returns the path without the leaf, the
/// PyTorch leaf name and the layout.
fn torch_leaf<'p>(path: &'p [String], parent: &str) -> (&'p [String], String, Layout) {
    let (leaf, head) = path
        .split_last()
        .map_or(("", path), |(l, h)| (l.as_str(), h));
    let norm = matches!(
        parent,
        "Struct:RmsNorm" | "Struct:LayerNorm" | "Struct:GroupNorm"
    );
    let leaf = match leaf {
        "gamma" if norm => "weight",
        "beta" if norm => "bias",
        other => other,
    };
    let layout = if parent == "Struct:Linear" && leaf == "weight" {
        Layout::TorchLinear
    } else {
        Layout::AsStored
    };
    (head, leaf.to_string(), layout)
}

/// Module path = checkpoint path, with PyTorch's leaf names and layouts (the FLUX VAE's
/// `ae.safetensors`, whose module tree mirrors its keys).
pub fn torch_key(path: &[String], parent: &str) -> (String, Layout) {
    let (head, leaf, layout) = torch_leaf(path, parent);
    let mut key = head.join(".");
    if !key.is_empty() {
        key.push('.');
    }
    key.push_str(&leaf);
    (key, layout)
}

/// The BAGEL checkpoint key and file layout of the parameter of [`super::Bagel`] at `path`.
pub fn bagel_key(path: &[String], parent: &str) -> (String, Layout) {
    let (parts, leaf, layout) = torch_leaf(path, parent);
    let head: Vec<&str> = parts.iter().map(String::as_str).collect();
    let prefix = match head.as_slice() {
        [] if leaf == "embed_tokens" => {
            return ("language_model.model.embed_tokens.weight".into(), layout);
        }
        [] if leaf == "metaqueries" => return ("uno.metaqueries".into(), layout),
        ["lm_head"] => "language_model.lm_head".to_string(),
        ["language_model", "layers", i, "und", rest @ ..] => {
            format!("language_model.model.layers.{i}.{}", rest.join("."))
        }
        ["language_model", "layers", i, "moe_gen", first, rest @ ..] => {
            let gen_part = match (*first, rest) {
                ("self_attn", [module, tail @ ..]) => {
                    format!("self_attn.{module}_moe_gen{}", dotted(tail))
                }
                (module, tail) => format!("{module}_moe_gen{}", dotted(tail)),
            };
            format!("language_model.model.layers.{i}.{gen_part}")
        }
        ["language_model", rest @ ..] => format!("language_model.model.{}", rest.join(".")),
        ["generation", "time_embedder", linear] => {
            format!("time_embedder.{}", linear.replacen("mlp_", "mlp.", 1))
        }
        ["generation", rest @ ..] => rest.join("."),
        other => other.join("."),
    };
    (format!("{prefix}.{leaf}"), layout)
}

fn dotted(parts: &[&str]) -> String {
    parts.iter().map(|p| format!(".{p}")).collect()
}

/// Tracks the module path during a visit or map.
struct PathStack {
    rule: KeyRule,
    names: Vec<String>,
    containers: Vec<String>,
}

impl PathStack {
    fn new(rule: KeyRule) -> Self {
        Self {
            rule,
            names: Vec::new(),
            containers: Vec::new(),
        }
    }

    fn enter(&mut self, name: &str, container: &str) {
        self.names.push(name.to_string());
        self.containers.push(container.to_string());
    }

    fn exit(&mut self) {
        self.names.pop();
        self.containers.pop();
    }

    fn key(&self) -> (String, Layout) {
        (self.rule)(
            &self.names,
            self.containers.last().map_or("", String::as_str),
        )
    }
}

/// Every parameter's key and layout, and its shape in the file, in module order.
struct KeyCollector {
    stack: PathStack,
    keys: Vec<(String, Layout)>,
    shapes: Vec<Vec<usize>>,
}

impl KeyCollector {
    pub fn new(rule: KeyRule) -> Self {
        Self {
            stack: PathStack::new(rule),
            keys: Vec::new(),
            shapes: Vec::new(),
        }
    }
}

impl<B: Backend> ModuleVisitor<B> for KeyCollector {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.enter(name, container_type);
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.stack.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let (key, layout) = self.stack.key();
        // `lazy_shape`: a lazily initialised parameter is not materialised by asking.
        self.shapes
            .push(layout.file_shape(param.lazy_shape().as_slice()));
        self.keys.push((key, layout));
    }
}

/// Adds every parameter to a [`WeightWriter`] under its BAGEL key.
struct SaveVisitor<'w, 'a> {
    stack: PathStack,
    writer: &'w mut WeightWriter<'a>,
    error: Option<CheckpointError>,
}

impl<'w, 'a> SaveVisitor<'w, 'a> {
    pub fn new(writer: &'w mut WeightWriter<'a>, rule: KeyRule) -> Self {
        Self {
            stack: PathStack::new(rule),
            writer,
            error: None,
        }
    }
}

impl<B: Backend> ModuleVisitor<B> for SaveVisitor<'_, '_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.enter(name, container_type);
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.stack.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.error.is_none() {
            let (key, layout) = self.stack.key();
            self.error = self.writer.add_param(key, param, layout).err();
        }
    }
}

/// Replaces every parameter whose key the predicate accepts with the checkpoint's value
/// (keeping its id and `require_grad` flag); the first error is kept and reported after.
struct LoadMapper<'r, F> {
    stack: PathStack,
    reader: &'r WeightReader,
    load: F,
    error: Option<CheckpointError>,
}

impl<'r, F: Fn(&str) -> bool> LoadMapper<'r, F> {
    pub fn new(reader: &'r WeightReader, rule: KeyRule, load: F) -> Self {
        Self {
            stack: PathStack::new(rule),
            reader,
            load,
            error: None,
        }
    }
}

impl<B: Backend, F: Fn(&str) -> bool> ModuleMapper<B> for LoadMapper<'_, F> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.enter(name, container_type);
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.stack.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (key, layout) = self.stack.key();
        if self.error.is_some() || !(self.load)(&key) {
            return param;
        }
        let id: ParamId = param.id;
        let require_grad = param.is_require_grad();
        match self.reader.load_param(param.clone(), &key, layout) {
            Ok(loaded) => {
                debug_assert_eq!(loaded.id, id);
                loaded.set_require_grad(require_grad)
            }
            Err(e) => {
                self.error = Some(e);
                param
            }
        }
    }
}

/// Every parameter's checkpoint key and layout under `rule`, in module order.
pub fn module_keys<B: Backend, M: Module<B>>(module: &M, rule: KeyRule) -> Vec<(String, Layout)> {
    let mut collector = KeyCollector::new(rule);
    module.visit(&mut collector);
    collector.keys
}

/// Every parameter's checkpoint key under `rule` and its shape in the file, in module
/// order. Lazily initialised parameters stay unmaterialised.
pub fn module_key_shapes<B: Backend, M: Module<B>>(
    module: &M,
    rule: KeyRule,
) -> Vec<(String, Vec<usize>)> {
    let mut collector = KeyCollector::new(rule);
    module.visit(&mut collector);
    collector
        .keys
        .into_iter()
        .map(|(k, _)| k)
        .zip(collector.shapes)
        .collect()
}

/// Add every parameter of `module` to `writer` under its key.
pub fn save_module<B: Backend, M: Module<B>>(
    module: &M,
    writer: &mut WeightWriter<'_>,
    rule: KeyRule,
) -> Result<(), CheckpointError> {
    let mut visitor = SaveVisitor::new(writer, rule);
    module.visit(&mut visitor);
    visitor.error.map_or(Ok(()), Err)
}

/// Load every parameter of `module` whose key `load` accepts from `reader` (ids and
/// `require_grad` flags kept).
pub fn load_module<B: Backend, M: Module<B>>(
    module: M,
    reader: &WeightReader,
    rule: KeyRule,
    load: impl Fn(&str) -> bool,
) -> Result<M, CheckpointError> {
    let mut mapper = LoadMapper::new(reader, rule, load);
    let module = module.map(&mut mapper);
    mapper.error.map_or(Ok(module), Err)
}
