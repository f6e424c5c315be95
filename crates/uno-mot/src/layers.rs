//! One expert's share of a decoder layer: projections, q/k norms, SwiGLU MLP, layer norms.
//!
//! The understanding and the generation expert are the same type; the MoT layer holds one
//! of each ([`crate::MotLayer`]). Attention itself is shared ([`crate::attention`]).

use burn::module::Module;
use burn::nn::{Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use crate::MotConfig;

/// Attention projections of one expert (BAGEL `self_attn.{q,k,v,o}_proj`, `{q,k}_norm`).
///
/// Linear weights are stored Burn-style `[in, out]` (PyTorch checkpoints store `[out, in]`).
#[derive(Module, Debug)]
pub struct SelfAttnProj<B: Backend> {
    /// `[hidden, heads * head_dim]`, with bias.
    pub q_proj: Linear<B>,
    /// `[hidden, kv_heads * head_dim]`, with bias.
    pub k_proj: Linear<B>,
    /// `[hidden, kv_heads * head_dim]`, with bias.
    pub v_proj: Linear<B>,
    /// `[heads * head_dim, hidden]`, no bias.
    pub o_proj: Linear<B>,
    /// RMSNorm over head_dim applied to every query head (None when `qk_norm` is off).
    pub q_norm: Option<RmsNorm<B>>,
    /// RMSNorm over head_dim applied to every key head (None when `qk_norm` is off).
    pub k_norm: Option<RmsNorm<B>>,
    /// Number of query heads.
    pub num_heads: usize,
    /// Number of key/value heads.
    pub num_kv_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
}

/// SwiGLU MLP: `down(silu(gate(x)) * up(x))`, no biases (BAGEL `mlp.{gate,up,down}_proj`).
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `[hidden, intermediate]`.
    pub gate_proj: Linear<B>,
    /// `[hidden, intermediate]`.
    pub up_proj: Linear<B>,
    /// `[intermediate, hidden]`.
    pub down_proj: Linear<B>,
}

/// One expert's parameters in one decoder layer.
///
/// Checkpoint names: the understanding expert's `self_attn.q_proj` is BAGEL's
/// `layers.{i}.self_attn.q_proj`; the generation expert's is `layers.{i}.self_attn.q_proj_moe_gen`
/// (likewise `mlp` -> `mlp_moe_gen`, `input_layernorm` -> `input_layernorm_moe_gen`, ...).
#[derive(Module, Debug)]
pub struct ExpertLayer<B: Backend> {
    /// Attention projections and q/k norms.
    pub self_attn: SelfAttnProj<B>,
    /// SwiGLU MLP.
    pub mlp: Mlp<B>,
    /// RMSNorm before attention.
    pub input_layernorm: RmsNorm<B>,
    /// RMSNorm before the MLP.
    pub post_attention_layernorm: RmsNorm<B>,
}

fn linear<B: Backend>(d_in: usize, d_out: usize, bias: bool, device: &B::Device) -> Linear<B> {
    LinearConfig::new(d_in, d_out).with_bias(bias).init(device)
}

pub(crate) fn rms_norm<B: Backend>(d: usize, eps: f64, device: &B::Device) -> RmsNorm<B> {
    RmsNormConfig::new(d).with_epsilon(eps).init(device)
}

impl<B: Backend> ExpertLayer<B> {
    /// Random init (Burn's default Linear init, norm weights 1). `config` must be valid.
    pub fn new(config: &MotConfig, device: &B::Device) -> Self {
        let h = config.hidden_size;
        let hd = config.head_dim();
        let nh = config.num_attention_heads;
        let nkv = config.num_key_value_heads;
        let eps = config.rms_norm_eps;
        let qk_norm = config.qk_norm;
        Self {
            self_attn: SelfAttnProj {
                q_proj: linear(h, nh * hd, true, device),
                k_proj: linear(h, nkv * hd, true, device),
                v_proj: linear(h, nkv * hd, true, device),
                o_proj: linear(nh * hd, h, false, device),
                q_norm: qk_norm.then(|| rms_norm(hd, eps, device)),
                k_norm: qk_norm.then(|| rms_norm(hd, eps, device)),
                num_heads: nh,
                num_kv_heads: nkv,
                head_dim: hd,
            },
            mlp: Mlp {
                gate_proj: linear(h, config.intermediate_size, false, device),
                up_proj: linear(h, config.intermediate_size, false, device),
                down_proj: linear(config.intermediate_size, h, false, device),
            },
            input_layernorm: rms_norm(h, eps, device),
            post_attention_layernorm: rms_norm(h, eps, device),
        }
    }

    /// `input_layernorm`, then q/k/v projections, then the q/k RMSNorms over head_dim.
    ///
    /// # Shapes
    /// - `x`: `[n, hidden]` (residual stream rows of this expert's tokens)
    /// - output: `[n, (heads + 2 * kv_heads) * head_dim]`, q then k then v (no RoPE yet)
    pub fn qkv(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let a = &self.self_attn;
        let [n, _] = x.dims();
        let x = normalize(&self.input_layernorm, x);
        let q = project(&a.q_proj, x.clone());
        let k = project(&a.k_proj, x.clone());
        let v = project(&a.v_proj, x);
        let q = head_norm(a.q_norm.as_ref(), q, n, a.num_heads, a.head_dim);
        let k = head_norm(a.k_norm.as_ref(), k, n, a.num_kv_heads, a.head_dim);
        Tensor::cat(vec![q, k, v], 1)
    }

    /// Residual update after attention: `x + o_proj(attn)`, then `+ mlp(post_norm(.))`.
    ///
    /// # Shapes
    /// - `x`: `[n, hidden]` residual rows, `attn`: `[n, heads * head_dim]`
    /// - output: `[n, hidden]`
    pub fn finish(&self, x: Tensor<B, 2>, attn: Tensor<B, 2>) -> Tensor<B, 2> {
        let x = x + project(&self.self_attn.o_proj, attn);
        let y = self
            .mlp
            .forward(normalize(&self.post_attention_layernorm, x.clone()));
        x + y
    }
}

impl<B: Backend> Mlp<B> {
    /// `down(silu(gate(x)) * up(x))`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let g = silu(project(&self.gate_proj, x.clone()));
        project(&self.down_proj, g * project(&self.up_proj, x))
    }
}

fn head_norm<B: Backend>(
    norm: Option<&RmsNorm<B>>,
    x: Tensor<B, 2>,
    n: usize,
    heads: usize,
    head_dim: usize,
) -> Tensor<B, 2> {
    match norm {
        Some(norm) => {
            normalize(norm, x.reshape([n, heads, head_dim])).reshape([n, heads * head_dim])
        }
        None => x,
    }
}

/// `linear.forward(x)` computed in `x`'s float type.
///
/// Why: under mixed precision ([`crate::MotModel::with_compute_dtype`]) the activations are
/// bf16 while a trainable expert keeps f32 master weights; the weights are cast at use, so
/// the matmul runs in bf16 and the cast's backward hands the weight an f32 gradient. When the
/// types already agree (f32 training, a frozen expert stored in bf16) this is
/// `Linear::forward` itself, bit for bit.
pub(crate) fn project<B: Backend, const D: usize>(
    linear: &Linear<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    let dtype = x.dtype();
    if linear.weight.val().dtype() == dtype {
        return linear.forward(x);
    }
    burn::tensor::module::linear(
        x,
        linear.weight.val().cast(dtype),
        linear.bias.as_ref().map(|b| b.val().cast(dtype)),
    )
}

/// `norm.forward(x)` computed in `x`'s float type, with the gain cast at use (see
/// [`project`]); the statistics are f32 either way, as in `RmsNorm::forward`.
pub(crate) fn normalize<B: Backend, const D: usize>(
    norm: &RmsNorm<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    let dtype = x.dtype();
    if norm.gamma.val().dtype() == dtype {
        return norm.forward(x);
    }
    let rms = (x.clone().cast(DType::F32).square().mean_dim(D - 1) + norm.epsilon).sqrt();
    (x / rms.cast(dtype)) * norm.gamma.val().cast(dtype).unsqueeze()
}
