//! The MoT decoder: layers of (und expert, gen expert) around one joint attention.

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::nn::RmsNorm;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, FloatDType, Int, Tensor};

use crate::attention::{
    AttentionImpl, JointAttention, SampleAttention, attend, from_heads, to_heads,
};
use crate::layers::{ExpertLayer, normalize, rms_norm};
use crate::rope::{HeadRope, RopeTables};
use crate::{MotConfig, MotError, Routing};

mod tape;

pub use tape::DecoderTape;

/// One decoder layer: the understanding expert's and the generation expert's parameters.
/// The attention is shared (computed jointly over both experts' Q/K/V).
#[derive(Module, Debug)]
pub struct MotLayer<B: Backend> {
    /// Understanding expert (BAGEL's plain names).
    pub und: ExpertLayer<B>,
    /// Generation expert (BAGEL's `_moe_gen` names).
    pub moe_gen: ExpertLayer<B>,
}

impl<B: Backend> MotLayer<B> {
    /// One layer on the residual stream `h` (`[L, hidden]`, *expert order*, see [`Routing`]).
    ///
    /// Each expert computes Q/K/V for its rows; they are put in sequence order, RoPE is
    /// applied, `attn(q, k, v)` returns the attention output in sequence order, which goes
    /// back to expert order for `o_proj` and the MLP.
    fn forward(
        &self,
        h: Tensor<B, 2>,
        routing: &Routing<B>,
        rope: &LayerRope<B>,
        attn: impl FnOnce(Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 2>) -> Tensor<B, 2>,
    ) -> Tensor<B, 2> {
        let a = &self.und.self_attn;
        let (nh, nkv, hd) = (a.num_heads, a.num_kv_heads, a.head_dim);
        let qkv = routing.per_expert(h.clone(), |x| self.und.qkv(x), |x| self.moe_gen.qkv(x));
        let qkv = routing.to_seq_order(qkv);
        let q = qkv.clone().narrow(1, 0, nh * hd);
        let k = qkv.clone().narrow(1, nh * hd, nkv * hd);
        let v = qkv.narrow(1, (nh + nkv) * hd, nkv * hd);
        let q = rope.q.apply(q);
        let k = rope.k.apply(k);
        let out = routing.to_expert_order(attn(q, k, v));
        routing.per_expert2(
            h,
            out,
            |x, o| self.und.finish(x, o),
            |x, o| self.moe_gen.finish(x, o),
        )
    }
}

/// RoPE for the queries and the keys of every layer of one forward pass, built once.
struct LayerRope<B: Backend> {
    q: HeadRope<B>,
    k: HeadRope<B>,
}

impl<B: Backend> LayerRope<B> {
    /// Tables in `dtype`, the activations' type (the angles are f32 either way).
    fn new<M: Backend>(
        position_ids: Tensor<B, 1, Int>,
        model: &MotModel<M>,
        dtype: FloatDType,
    ) -> Self {
        let tables = RopeTables::new(position_ids, model.head_dim, model.rope_theta);
        let tables = RopeTables {
            cos: tables.cos.cast(dtype),
            sin: tables.sin.cast(dtype),
        };
        Self {
            q: tables.for_heads(model.num_heads),
            k: tables.for_heads(model.num_kv_heads),
        }
    }
}

/// BAGEL's mixture-of-transformers decoder (Qwen2 layers with an understanding and a
/// generation expert), without embeddings and `lm_head` (those live in `uno-core`).
///
/// Checkpoint names (BAGEL `language_model.model.` prefix):
///
/// | here | BAGEL |
/// |---|---|
/// | `layers.{i}.und.self_attn.q_proj` | `layers.{i}.self_attn.q_proj` |
/// | `layers.{i}.moe_gen.self_attn.q_proj` | `layers.{i}.self_attn.q_proj_moe_gen` |
/// | `layers.{i}.und.mlp.gate_proj` | `layers.{i}.mlp.gate_proj` |
/// | `layers.{i}.moe_gen.mlp.gate_proj` | `layers.{i}.mlp_moe_gen.gate_proj` |
/// | `layers.{i}.moe_gen.input_layernorm` | `layers.{i}.input_layernorm_moe_gen` |
/// | `norm`, `norm_moe_gen` | `norm`, `norm_moe_gen` |
///
/// Linear weights are `[in, out]` here (PyTorch: `[out, in]`), norm weights are `gamma`.
#[derive(Module, Debug)]
pub struct MotModel<B: Backend> {
    /// Decoder layers.
    pub layers: Vec<MotLayer<B>>,
    /// Final norm of understanding tokens.
    pub norm: RmsNorm<B>,
    /// Final norm of generation tokens.
    pub norm_moe_gen: RmsNorm<B>,
    /// Model width.
    pub hidden_size: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// RoPE base.
    pub rope_theta: f64,
    /// How [`Self::forward`] computes the joint attention.
    pub attention: AttentionImpl,
    /// The float type the layers compute in (`None`: the input's). See
    /// [`Self::with_compute_dtype`].
    pub compute_dtype: Option<FloatDType>,
}

/// Keys and values of a prefilled context, per layer, for incremental inference.
///
/// Preallocated for `capacity` tokens and written in place (`slice_assign` on tensors the
/// cache alone holds), so decoding one token at a time costs the new rows, not a copy of
/// the whole cache per token, and a query that is not kept ([`CacheWrite::Discard`], the
/// image tokens at every sampler step) reuses the room after the context. K is stored after
/// k-norm and RoPE, V as projected; both `[capacity, kv_heads * head_dim]` per layer.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<(Tensor<B, 2>, Tensor<B, 2>)>,
    len: usize,
    capacity: usize,
}

/// What [`MotModel::forward_cached`] does with the new tokens' keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheWrite {
    /// They join the context (prefill, decoding token by token): the cache grows by `n`.
    Keep,
    /// They are written after the context for this call only and the cache keeps its
    /// length, so the next query sees the same context (a sampler step).
    Discard,
}

impl<B: Backend> KvCache<B> {
    /// Number of cached (kept) tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tokens the cache has room for (kept ones plus those of a query).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Cached `(k, v)` of one layer, `[len, kv_heads * head_dim]` each (`None` when the
    /// layer does not exist).
    pub fn layer(&self, index: usize) -> Option<(Tensor<B, 2>, Tensor<B, 2>)> {
        self.layers.get(index).map(|(k, v)| {
            (
                k.clone().narrow(0, 0, self.len),
                v.clone().narrow(0, 0, self.len),
            )
        })
    }
}

/// Gives every float parameter a fresh id and a fresh autodiff leaf (trainable), keeping
/// the values: copies must not share ids (optimizer state, gradients) or graph nodes.
struct FreshCopy;

impl<B: Backend> ModuleMapper<B> for FreshCopy {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let tensor = param.val();
        Param::initialized(ParamId::new(), tensor.detach().require_grad())
    }
}

/// Casts every float parameter to one type, keeping its id and whether it requires a
/// gradient (the cast of a trainable parameter is a new leaf, not a node of the old one).
struct CastParams(FloatDType);

impl<B: Backend> ModuleMapper<B> for CastParams {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let dtype = self.0;
        param.map(|t| {
            let trainable = t.is_require_grad();
            let cast = t.detach().cast(dtype);
            if trainable { cast.require_grad() } else { cast }
        })
    }
}

impl<B: Backend> MotModel<B> {
    /// Random init from a config already validated (use [`MotConfig::init`]).
    pub(crate) fn new(config: &MotConfig, device: &B::Device) -> Self {
        let layers = (0..config.num_hidden_layers)
            .map(|_| MotLayer {
                und: ExpertLayer::new(config, device),
                moe_gen: ExpertLayer::new(config, device),
            })
            .collect();
        Self {
            layers,
            norm: rms_norm(config.hidden_size, config.rms_norm_eps, device),
            norm_moe_gen: rms_norm(config.hidden_size, config.rms_norm_eps, device),
            hidden_size: config.hidden_size,
            num_heads: config.num_attention_heads,
            num_kv_heads: config.num_key_value_heads,
            head_dim: config.head_dim(),
            rope_theta: config.rope_theta,
            attention: config.attention,
            compute_dtype: None,
        }
    }

    /// Forward a packed sequence.
    ///
    /// - `hidden`: `[L, hidden]`, one row per token of the pack (embeddings, ViT/VAE tokens
    ///   already projected to the model width).
    /// - `routing`: which rows go to which expert ([`Routing::new`] validates it).
    /// - `position_ids`: `[L]` 1-D RoPE positions (tokens of one image share an id).
    /// - `samples`: the pack's samples, tiling `0..L` in order, each with its own attention
    ///   pattern. Attention is block-diagonal over them, computed as [`Self::attention`]
    ///   says.
    ///
    /// Returns `[L, hidden]` in sequence order, each row normalised by its expert's final
    /// norm (`norm` for und rows, `norm_moe_gen` for gen rows). Differentiable; under
    /// `Autodiff` see [`crate::attention`] for the memory kept per layer.
    pub fn forward(
        &self,
        hidden: Tensor<B, 2>,
        routing: &Routing<B>,
        position_ids: Tensor<B, 1, Int>,
        samples: &[SampleAttention],
    ) -> Result<Tensor<B, 2>, MotError> {
        let len = self.check_inputs(&hidden, routing, &position_ids)?;
        let attention = JointAttention::new(
            samples,
            len,
            self.num_heads,
            self.num_kv_heads,
            self.attention,
            &hidden.device(),
        )?;
        if len == 0 {
            return Ok(hidden);
        }
        let (hidden, out_dtype) = self.enter(hidden);
        let rope = LayerRope::new(position_ids, self, hidden.dtype().into());
        let mut h = routing.to_expert_order(hidden);
        for layer in &self.layers {
            h = layer.forward(h, routing, &rope, |q, k, v| attention.forward(q, k, v));
        }
        Ok(self.final_norm(h, routing).cast(out_dtype))
    }

    /// Mixed precision: the layers compute in `dtype` (bf16) whatever the type of the
    /// input and of each parameter. The input is cast to `dtype` on entry and the output
    /// back to the input's type; every weight is cast at use, so parameters kept in f32
    /// (the trainable generation expert's master weights) get f32 gradients through the
    /// cast, and parameters stored in `dtype` ([`Self::store_und_as`]) are used as they are.
    /// Activations are `dtype` (what that saves in a training step is measured in
    /// docs/performance.md: about a third of the peak above the weights, not a half).
    ///
    /// Backends: flex and cuda compute in bf16; ndarray and wgpu do not support it.
    pub fn with_compute_dtype(mut self, dtype: FloatDType) -> Self {
        self.compute_dtype = Some(dtype);
        self
    }

    /// Store the understanding expert (every layer's `und` and the final `norm`) as `dtype`,
    /// keeping parameter ids and whether each requires a gradient. With
    /// [`Self::freeze_und`] and [`Self::with_compute_dtype`] this is BAGEL's frozen half in
    /// bf16: it is never trained, so it needs no f32 master copy.
    pub fn store_und_as(mut self, dtype: FloatDType) -> Self {
        let mut cast = CastParams(dtype);
        self.layers = self
            .layers
            .into_iter()
            .map(|l| MotLayer {
                und: l.und.map(&mut cast),
                moe_gen: l.moe_gen,
            })
            .collect();
        self.norm = self.norm.map(&mut cast);
        self
    }

    /// `hidden` in the compute type, and the type the output returns to.
    fn enter(&self, hidden: Tensor<B, 2>) -> (Tensor<B, 2>, FloatDType) {
        let input: FloatDType = hidden.dtype().into();
        match self.compute_dtype {
            Some(dtype) => (hidden.cast(dtype), input),
            None => (hidden, input),
        }
    }

    /// An empty cache with room for `capacity` tokens, allocated once on `device`.
    pub fn kv_cache(&self, capacity: usize, device: &B::Device) -> KvCache<B> {
        let width = self.num_kv_heads * self.head_dim;
        let zeros = || match self.compute_dtype {
            Some(dtype) => Tensor::zeros([capacity, width], (device, dtype.into())),
            None => Tensor::zeros([capacity, width], device),
        };
        let layers = (0..self.layers.len()).map(|_| (zeros(), zeros())).collect();
        KvCache {
            layers,
            len: 0,
            capacity,
        }
    }

    /// Prefill one sample's context (`mask` is `[L, L]`) into a new cache with room for
    /// `capacity >= L` tokens: [`Self::forward_cached`] on an empty cache, kept.
    pub fn prefill(
        &self,
        hidden: Tensor<B, 2>,
        routing: &Routing<B>,
        position_ids: Tensor<B, 1, Int>,
        mask: Tensor<B, 2, Bool>,
        capacity: usize,
    ) -> Result<(Tensor<B, 2>, KvCache<B>), MotError> {
        let mut cache = self.kv_cache(capacity, &hidden.device());
        let out = self.forward_cached(
            hidden,
            routing,
            position_ids,
            mask,
            &mut cache,
            CacheWrite::Keep,
        )?;
        Ok((out, cache))
    }

    /// Forward `n` new tokens of ONE sample that attend to the cached context and to each
    /// other.
    ///
    /// - `hidden` `[n, hidden]`, `routing` over these `n` tokens, `position_ids` `[n]`;
    /// - `mask`: `[n, cache.len() + n]`, `true` = masked; columns are the cached tokens
    ///   then the new ones (the same rows of the full sample's mask).
    ///
    /// The new keys and values are written in place after the context; `write` says whether
    /// they stay ([`CacheWrite::Keep`]) or the cache keeps its length
    /// ([`CacheWrite::Discard`]). Returns the outputs (as [`MotModel::forward`]). Equal to
    /// the full forward when the cached tokens do not attend to later ones.
    pub fn forward_cached(
        &self,
        hidden: Tensor<B, 2>,
        routing: &Routing<B>,
        position_ids: Tensor<B, 1, Int>,
        mask: Tensor<B, 2, Bool>,
        cache: &mut KvCache<B>,
        write: CacheWrite,
    ) -> Result<Tensor<B, 2>, MotError> {
        let n = self.check_inputs(&hidden, routing, &position_ids)?;
        if cache.layers.len() != self.layers.len() {
            return Err(MotError::CacheLayers {
                expected: self.layers.len(),
                got: cache.layers.len(),
            });
        }
        let total = cache.len + n;
        if mask.dims() != [n, total] {
            return Err(MotError::Shape {
                arg: "mask",
                expected: vec![n, total],
                got: mask.dims().to_vec(),
            });
        }
        if total > cache.capacity {
            return Err(MotError::CacheFull {
                capacity: cache.capacity,
                needed: total,
            });
        }
        if n == 0 {
            return Ok(hidden);
        }
        let (hidden, out_dtype) = self.enter(hidden);
        let rope = LayerRope::new(position_ids, self, hidden.dtype().into());
        let (nh, nkv) = (self.num_heads, self.num_kv_heads);
        let start = cache.len;
        let old = std::mem::take(&mut cache.layers);
        let mut h = routing.to_expert_order(hidden);
        for (layer, (k_all, v_all)) in self.layers.iter().zip(old) {
            h = layer.forward(h, routing, &rope, |q, k, v| {
                // The cache holds the only reference to its tensors, so the backend writes
                // the rows in place.
                let width = k.dims()[1];
                let k_all = k_all.slice_assign([start..total, 0..width], k);
                let v_all = v_all.slice_assign([start..total, 0..width], v);
                let out = attend(
                    to_heads(q, nh),
                    to_heads(k_all.clone().narrow(0, 0, total), nkv),
                    to_heads(v_all.clone().narrow(0, 0, total), nkv),
                    mask.clone(),
                );
                cache.layers.push((k_all, v_all));
                from_heads(out)
            });
        }
        if write == CacheWrite::Keep {
            cache.len = total;
        }
        Ok(self.final_norm(h, routing).cast(out_dtype))
    }

    /// Freeze the understanding expert (every layer's `und` and the final `norm`): its
    /// parameters stop requiring gradients (Burn's `no_grad`), so they get no gradient and
    /// no optimizer update. Activations are NOT detached: gradients still flow through the
    /// frozen expert's computations into the generation expert (UNO's whole point). Freeze
    /// anything else with `.no_grad()` on that module.
    pub fn freeze_und(mut self) -> Self {
        self.layers = self
            .layers
            .into_iter()
            .map(|l| MotLayer {
                und: l.und.no_grad(),
                moe_gen: l.moe_gen,
            })
            .collect();
        self.norm = self.norm.no_grad();
        self
    }

    /// BAGEL's `init_moe`: the generation expert (every layer's `moe_gen` and `norm_moe_gen`)
    /// becomes a copy of the understanding expert. The copies get fresh parameter ids and
    /// are trainable, whether or not the understanding expert is frozen.
    pub fn init_gen_from_und(mut self) -> Self {
        self.layers = self
            .layers
            .into_iter()
            .map(|l| MotLayer {
                moe_gen: l.und.clone().map(&mut FreshCopy),
                und: l.und,
            })
            .collect();
        self.norm_moe_gen = self.norm.clone().map(&mut FreshCopy);
        self
    }

    fn final_norm(&self, h: Tensor<B, 2>, routing: &Routing<B>) -> Tensor<B, 2> {
        let h = routing.per_expert(
            h,
            |x| normalize(&self.norm, x),
            |x| normalize(&self.norm_moe_gen, x),
        );
        routing.to_seq_order(h)
    }

    fn check_inputs(
        &self,
        hidden: &Tensor<B, 2>,
        routing: &Routing<B>,
        position_ids: &Tensor<B, 1, Int>,
    ) -> Result<usize, MotError> {
        let [len, width] = hidden.dims();
        if width != self.hidden_size {
            return Err(MotError::Shape {
                arg: "hidden",
                expected: vec![len, self.hidden_size],
                got: vec![len, width],
            });
        }
        if routing.len() != len {
            return Err(MotError::RoutingCount {
                num_und: routing.num_und(),
                num_gen: routing.num_gen(),
                len,
            });
        }
        if position_ids.dims() != [len] {
            return Err(MotError::Shape {
                arg: "position_ids",
                expected: vec![len],
                got: position_ids.dims().to_vec(),
            });
        }
        Ok(len)
    }
}
