//! BAGEL's mixture-of-transformers (MoT) decoder on Burn, generic over `B: Backend`.
//!
//! A Qwen2-style decoder in which every layer holds two experts of the same shape, the
//! *understanding* expert (text and ViT tokens) and the *generation* expert (VAE latent
//! tokens). Each expert computes Q/K/V, `o_proj` and the SwiGLU MLP for its own tokens
//! (fixed routing by index lists, no router); the attention is ONE joint attention over all
//! tokens of a sample. Per layer:
//!
//! ```text
//! x_e  = input_layernorm_e(h_e)                          (e = expert of the token)
//! q,k,v = q/k/v_proj_e(x_e); q,k = q/k_norm_e over head_dim; RoPE (rotate-half, position ids)
//! a    = joint masked GQA attention per sample (block-diagonal over the pack)
//! h_e += o_proj_e(a_e);  h_e += mlp_e(post_attention_layernorm_e(h_e))
//! ```
//!
//! and the output is `norm(h)` for und tokens, `norm_moe_gen(h)` for gen tokens.
//!
//! * [`MotConfig`]: BAGEL `llm_config.json` fields, presets, validation, `init`.
//! * [`MotModel::forward`]: packed training forward; [`Routing`], [`SampleAttention`]
//!   (segments, [`AttnSegment`]) inputs.
//! * [`MotModel::freeze_und`], [`MotModel::init_gen_from_und`]: UNO's setup.
//! * [`MotModel::prefill`], [`MotModel::forward_cached`], [`KvCache`]: inference.
//! * [`attention`]: the joint attention, dense or blockwise ([`AttentionImpl`]) with a
//!   recomputing backward under `Autodiff`.
//! * [`stats`]: blocked sums and two-pass mean / variance that stay accurate over large
//!   extents on every backend (norm statistics; also used by uno-core's GroupNorm).
//!
//! This crate does not depend on `uno-packing`: it takes plain index lists and segment
//! descriptions of the masks.
//!
//! # Training memory
//! The blockwise attention keeps `O(L)` per layer for the backward instead of
//! `heads x L^2` ([`attention`]). The other activations of a layer (projections, MLP) are
//! kept too, unless the layers are checkpointed: [`MotModel::forward_taped`] keeps only each
//! layer's input and [`DecoderTape::backward`] recomputes the layers one at a time in the
//! backward. That backward is driven from outside the graph (one `backward()` per layer,
//! in reverse order, each layer's input gradient feeding the previous one), because Burn
//! 0.21's autodiff cannot run a backward pass inside a backward step: a custom op whose
//! backward rebuilds the layer and calls `backward()` on it deadlocks, since burn-autodiff
//! holds its global graph lock (`runtime/graph.rs`, `GraphCleaner`) for the whole outer
//! backward while the inner one needs it to register its first node (observed, not only
//! read). Burn's per-op `Autodiff<B, BalancedCheckpointing>` (recomputes memory-bound ops,
//! keeps matmul outputs; the blockwise node supports it) is the other, weaker option.

#![warn(missing_docs)]

pub mod attention;
mod config;
mod dispatch;
mod error;
pub mod layers;
mod model;
pub mod rope;
mod routing;
pub mod stats;

pub use attention::{AttentionImpl, AttnSegment, JointAttention, SampleAttention};
pub use config::MotConfig;
pub use error::MotError;
pub use layers::{ExpertLayer, Mlp, SelfAttnProj};
pub use model::{CacheWrite, DecoderTape, KvCache, MotLayer, MotModel};
pub use routing::Routing;
