//! The shared (joint) attention: one attention over all tokens of a sample, whatever expert
//! computed their Q/K/V.
//!
//! Everything the layers need goes through [`attend`]: replace its body with a fused kernel
//! (flash attention with a bool mask, GQA-aware) and nothing else changes.
//!
//! # Memory cost under autodiff
//! Burn 0.21's `Autodiff` backend always runs `attention_fallback` (there is no fused
//! attention backward), which materialises and keeps for backward the full score and softmax
//! matrices: `heads x len^2` floats each, per sample and per layer. A 4k-token sample with
//! 28 heads keeps `28 * 4096^2 * 4 B` = 1.9 GB per matrix per layer. Packs are attended per
//! sample (block-diagonal), so the cost is `sum_i len_i^2`, not `(sum_i len_i)^2`.

use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Tensor};

/// One sample of a pack: rows `start..start + len`, attending with its own mask.
#[derive(Debug, Clone)]
pub struct SampleMask<B: Backend> {
    /// First row of the sample in the pack.
    pub start: usize,
    /// Number of tokens of the sample.
    pub len: usize,
    /// `[len, len]`, `true` = masked (query row may not see key column), Burn's polarity.
    /// Every row must see at least one key (normally itself).
    pub mask: Tensor<B, 2, Bool>,
}

/// Masked grouped-query attention of one sample: `softmax(q k^T / sqrt(head_dim) + mask) v`.
///
/// Query head `h` uses KV head `h / (heads / kv_heads)` (each KV head repeated consecutively,
/// like `repeat_interleave`; tiling would be wrong). This is the single swap point for a
/// fused kernel. It calls `burn::tensor::module::attention`, which takes a bool mask with
/// `true` = masked (same polarity as [`SampleMask::mask`]) and does no GQA itself.
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

/// Joint attention over a whole pack, block-diagonal over `samples` (already validated to
/// tile `0..L` in order).
///
/// # Shapes
/// - `q`: `[L, heads * head_dim]`, `k`, `v`: `[L, kv_heads * head_dim]`, rows in sequence
///   order with RoPE applied to q and k
/// - output: `[L, heads * head_dim]`
pub fn joint_attention<B: Backend>(
    q: Tensor<B, 2>,
    k: Tensor<B, 2>,
    v: Tensor<B, 2>,
    samples: &[SampleMask<B>],
    heads: usize,
    kv_heads: usize,
) -> Tensor<B, 2> {
    let one = samples.len() == 1;
    let outs: Vec<Tensor<B, 2>> = samples
        .iter()
        .map(|s| {
            let (qs, ks, vs) = if one {
                (q.clone(), k.clone(), v.clone())
            } else {
                (
                    q.clone().narrow(0, s.start, s.len),
                    k.clone().narrow(0, s.start, s.len),
                    v.clone().narrow(0, s.start, s.len),
                )
            };
            from_heads(attend(
                to_heads(qs, heads),
                to_heads(ks, kv_heads),
                to_heads(vs, kv_heads),
                s.mask.clone(),
            ))
        })
        .collect();
    Tensor::cat(outs, 0)
}
