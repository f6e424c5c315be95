//! The shared (joint) attention: one attention over all tokens of a sample, whatever expert
//! computed their Q/K/V.
//!
//! The decoder's training forward goes through [`JointAttention`], prepared once per forward
//! from the pack's [`SampleAttention`]s; the KV-cache path calls [`attend`] with a dense
//! mask. Masks are segment descriptions ([`AttnSegment`]), never a dense `L x L` tensor
//! unless the dense implementation asks for one.
//!
//! # Implementations ([`AttentionImpl`])
//! * `Dense`: per sample, Burn's `attention` over the materialised `[len, len]` mask. Under
//!   `Autodiff`, Burn 0.21 always runs `attention_fallback` (no fused attention backward),
//!   which keeps the full score and softmax matrices for backward: `heads x len^2` floats
//!   each, per sample and per layer (28 heads at 4k tokens: 1.9 GB per matrix per layer).
//! * `Blockwise` (default): the flash-attention algorithm over the whole pack in tiles of
//!   `block_q` query rows and `block_k` keys, written in Burn tensor ops (every backend).
//!   Tiles nobody may see (other samples, causal upper triangle, hidden splits) are
//!   skipped, so the cost follows the visible pairs. Under `Autodiff<X>` for the backends
//!   this crate is built with it is ONE graph node whose backward recomputes the tiles
//!   (see `dispatch.rs` for how generic code reaches it): the graph keeps `q`, `k`, `v`, the
//!   output and one log-sum-exp per row and head, `O(L)` instead of `O(L^2)`.
//!   [`has_blockwise_backward`] says whether a backend gets that node.
//!
//! GQA: query head `h` uses KV head `h / (heads / kv_heads)` (each KV head repeated
//! consecutively, like `repeat_interleave`; tiling would be wrong). The blockwise path never
//! materialises the repeated K/V; the dense path repeats them for Burn's `attention`.

mod autodiff;
mod blockwise;
mod plan;
mod segments;

use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Tensor};
use serde::{Deserialize, Serialize};

pub use autodiff::has_blockwise_backward;
pub use segments::{AttnSegment, SampleAttention};

use crate::MotError;
use blockwise::Heads;
use plan::TilePlan;

/// How the training forward computes the joint attention (inference with a KV cache always
/// uses [`attend`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionImpl {
    /// Burn's attention per sample over a dense mask: the reference, `O(len^2)` memory per
    /// layer under autodiff.
    Dense,
    /// Flash-attention style tiles with a recomputing backward.
    Blockwise {
        /// Query rows per tile (> 0).
        block_q: usize,
        /// Keys per tile (> 0).
        block_k: usize,
    },
}

impl Default for AttentionImpl {
    /// Blockwise with 256 x 256 tiles: a BAGEL-7B tile of scores (28 heads) is 7 MB, and a
    /// 4k-token sample needs ~136 tiles per layer instead of thousands of small ops.
    fn default() -> Self {
        Self::Blockwise {
            block_q: 256,
            block_k: 256,
        }
    }
}

impl AttentionImpl {
    pub(crate) fn validate(&self) -> Result<(), MotError> {
        if let Self::Blockwise { block_q, block_k } = *self {
            for (field, value) in [
                ("attention.block_q", block_q),
                ("attention.block_k", block_k),
            ] {
                if value == 0 {
                    return Err(MotError::ZeroField { field });
                }
            }
        }
        Ok(())
    }
}

/// Masked grouped-query attention of one sample over a dense mask:
/// `softmax(q k^T / sqrt(head_dim) + mask) v`.
///
/// It calls `burn::tensor::module::attention`, which takes a bool mask with `true` = masked
/// and does no GQA itself, so K/V are repeated here. Used by the KV-cache path and by
/// [`AttentionImpl::Dense`].
///
/// # Shapes
/// - `q`: `[1, heads, lq, head_dim]`; `k`, `v`: `[1, kv_heads, lk, head_dim]`
/// - `mask`: `[lq, lk]`, `true` = masked
/// - output: `[1, heads, lq, head_dim]`
pub fn attend<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: Tensor<B, 2, Bool>,
) -> Tensor<B, 4> {
    let [b, heads, lq, _] = q.dims();
    let [_, kv_heads, _, _] = k.dims();
    let [mq, mk] = mask.dims();
    let k = repeat_kv(k, heads / kv_heads);
    let v = repeat_kv(v, heads / kv_heads);
    debug_assert_eq!(mq, lq);
    let mask = mask.reshape([1, 1, mq, mk]).expand([b, heads, mq, mk]);
    attention(q, k, v, Some(mask), None, AttentionModuleOptions::default())
}

/// `[b, kv, l, d]` -> `[b, kv * groups, l, d]`, each KV head repeated `groups` times in a row.
fn repeat_kv<B: Backend>(x: Tensor<B, 4>, groups: usize) -> Tensor<B, 4> {
    if groups == 1 {
        return x;
    }
    let [b, kv, l, d] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .repeat_dim(2, groups)
        .reshape([b, kv * groups, l, d])
}

/// `[n, heads * head_dim]` rows -> `[1, heads, n, head_dim]`.
pub(crate) fn to_heads<B: Backend>(x: Tensor<B, 2>, heads: usize) -> Tensor<B, 4> {
    let [n, width] = x.dims();
    x.reshape([1, n, heads, width / heads]).swap_dims(1, 2)
}

/// `[1, heads, n, head_dim]` -> `[n, heads * head_dim]` rows.
pub(crate) fn from_heads<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 2> {
    let [_, heads, n, d] = x.dims();
    x.swap_dims(1, 2).reshape([n, heads * d])
}

/// A pack's joint attention, prepared once per forward (masks uploaded or tiles planned)
/// and applied at every layer. Block-diagonal over the samples: samples never see each
/// other.
#[derive(Debug, Clone)]
pub struct JointAttention<B: Backend> {
    prepared: Prepared<B>,
    heads: Heads,
}

#[derive(Debug, Clone)]
enum Prepared<B: Backend> {
    /// Per sample: first row, length, dense `[len, len]` mask.
    Dense(Vec<(usize, usize, Tensor<B, 2, Bool>)>),
    Blockwise(Arc<TilePlan>),
}

impl<B: Backend> JointAttention<B> {
    /// Validate `samples` against a pack of `len` tokens (they must tile `0..len` in order,
    /// none empty) and prepare `implementation` for `heads` query heads over `kv_heads`
    /// KV heads (`heads` a multiple of `kv_heads`, as [`crate::MotConfig::validate`]
    /// checks).
    pub fn new(
        samples: &[SampleAttention],
        len: usize,
        heads: usize,
        kv_heads: usize,
        implementation: AttentionImpl,
        device: &B::Device,
    ) -> Result<Self, MotError> {
        check_samples(samples, len)?;
        implementation.validate()?;
        let prepared = match implementation {
            AttentionImpl::Dense => Prepared::Dense(
                samples
                    .iter()
                    .map(|s| (s.start(), s.len(), s.dense_tensor(device)))
                    .collect(),
            ),
            AttentionImpl::Blockwise { block_q, block_k } => {
                Prepared::Blockwise(Arc::new(TilePlan::new(samples, len, block_q, block_k)))
            }
        };
        Ok(Self {
            prepared,
            heads: Heads { heads, kv_heads },
        })
    }

    /// The attention of every query row over the keys its mask lets it see.
    ///
    /// # Shapes
    /// - `q`: `[L, heads * head_dim]`, `k`, `v`: `[L, kv_heads * head_dim]`, rows in
    ///   sequence order with RoPE applied to q and k
    /// - output: `[L, heads * head_dim]`
    pub fn forward(&self, q: Tensor<B, 2>, k: Tensor<B, 2>, v: Tensor<B, 2>) -> Tensor<B, 2> {
        let Heads { heads, kv_heads } = self.heads;
        match &self.prepared {
            Prepared::Blockwise(plan) => autodiff::attention(q, k, v, plan, self.heads),
            Prepared::Dense(samples) => {
                let one = samples.len() == 1;
                let outs = samples
                    .iter()
                    .map(|(start, len, mask)| {
                        let rows = |x: &Tensor<B, 2>| {
                            if one {
                                x.clone()
                            } else {
                                x.clone().narrow(0, *start, *len)
                            }
                        };
                        from_heads(attend(
                            to_heads(rows(&q), heads),
                            to_heads(rows(&k), kv_heads),
                            to_heads(rows(&v), kv_heads),
                            mask.clone(),
                        ))
                    })
                    .collect();
                Tensor::cat(outs, 0)
            }
        }
    }
}

/// Samples must tile `0..len` in order, none empty.
fn check_samples(samples: &[SampleAttention], len: usize) -> Result<(), MotError> {
    let mut end = 0;
    for (i, s) in samples.iter().enumerate() {
        if s.is_empty() {
            return Err(MotError::EmptySample { sample: i });
        }
        if s.start() != end {
            return Err(MotError::SampleGap {
                sample: i,
                start: s.start(),
                expected_start: end,
                len,
            });
        }
        end += s.len();
    }
    if end != len {
        return Err(MotError::SampleCoverage { covered: end, len });
    }
    Ok(())
}
