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
//! still kept: per-layer activation checkpointing (keep each layer's input, recompute the
//! layer in the backward) is NOT implemented, because Burn 0.21's autodiff cannot run a
//! backward pass inside a backward step. The recompute would be a custom op whose backward
//! rebuilds the layer on fresh leaves and calls `backward()` on it; that nested call ends in
//! `GraphCleaner::cleanup_orphaned_entries` (burn-autodiff `runtime/graph.rs`), which locks
//! the mutex of every live graph, including the outer one that
//! `AutodiffServer::execute_steps` holds while it runs our step: a self-deadlock (observed,
//! not only read). Writing the layer's backward by hand instead would duplicate autodiff for
//! RMSNorm, RoPE, routing and SwiGLU. What works today: Burn's per-op
//! `Autodiff<B, BalancedCheckpointing>` (recomputes memory-bound ops, keeps matmul outputs;
//! the blockwise node supports it), or a layer-by-layer backward driven from outside the
//! graph (forward without autodiff keeping layer inputs, then one `backward()` per layer in
//! reverse order, feeding each layer's input gradient to the previous one).

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
pub use model::{CacheWrite, KvCache, MotLayer, MotModel};
pub use routing::Routing;
