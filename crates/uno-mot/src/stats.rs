//! Sums, means and variances over large extents that stay accurate on every backend.
//!
//! # Why not `sum_dim` / `mean_dim`
//! Burn leaves the summation order to the backend. flex without its `simd` feature and
//! ndarray add a row into few f32 accumulators; once a running sum is large, every addend
//! loses its low bits, and on a mostly flat input the losses all go the same way. A
//! GroupNorm group of a 1024^2 FLUX activation has 4M elements; on such a row of
//! `0.3 +- 0.01`, `mean_dim` is 4e-4 relative off on ndarray and 2e-6 on flex with `simd`
//! (ARCHITECTURE.md reports 1e-1 for flex without `simd`), while PyTorch's pairwise sums
//! stay below 5e-7. A norm divides the deviations from that mean by their (small) spread, so
//! the output inherits the error amplified (`uno-mot/tests/mot/stats.rs` and uno-core's
//! GroupNorm test print the figures).
//!
//! Here the sum is *blocked*: the reduced extent is cut into blocks of [`BLOCK`] elements,
//! each block is summed, and the block sums are summed the same way until one value is
//! left (a block takes every `n / BLOCK`-th element, for speed; see `blocked_sum`). Every
//! addition then involves partial sums of similar size, so the error grows with
//! `BLOCK * log_BLOCK(n)` rather than `n`, whichever kernel the backend runs per block. The
//! extra passes read `n / BLOCK` values or fewer, so the cost stays one pass over the input.
//!
//! Statistics are computed in f32 whatever the input's float type (bf16 holds 8 significant
//! bits), and the variance takes two passes (the mean, then the mean squared deviation),
//! never `E[x^2] - E[x]^2`, which cancels catastrophically on flat inputs.
//!
//! All functions are plain tensor ops, so they run on any backend and are differentiable.

use burn::tensor::{DType, Tensor, backend::Backend};

/// Elements summed together before their sum joins the next level. Small enough that a
/// block's own rounding error (at most `BLOCK` ulps of its sum, sequentially summed) stays
/// near 1e-6 relative; large enough that the levels after the first read little data.
pub const BLOCK: usize = 32;

/// Sum of `x` along `dim`, in blocks of [`BLOCK`] (see the module docs), in `x`'s float
/// type.
///
/// # Shapes
/// - `x`: `[d_0, ..., d_dim, ..., d_{D-1}]`
/// - output: `[d_0, ..., 1, ..., d_{D-1}]` (the summed dimension kept, as `sum_dim` does)
pub fn sum_dim<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    let dims = x.dims();
    let outer: usize = dims[..dim].iter().product();
    let inner: usize = dims[dim + 1..].iter().product();
    let mut out_shape = dims;
    out_shape[dim] = 1;
    blocked_sum(x.reshape([outer, dims[dim], inner])).reshape(out_shape)
}

/// Sum over the middle dimension of `[outer, n, inner]`, one level of blocks at a time.
///
/// A level views the extent as `[BLOCK, n / BLOCK]` and sums over the `BLOCK` rows: each
/// partial sum adds `BLOCK` elements `n / BLOCK` apart, and the reduction runs down
/// contiguous rows, which backends vectorise across the row (flex's strided-row sum is 15x
/// faster than its per-row sum of 32-element rows). The sums are partial sums of the same
/// kind as contiguous blocks would give, just of interleaved elements.
fn blocked_sum<B: Backend>(mut x: Tensor<B, 3>) -> Tensor<B, 3> {
    loop {
        let [outer, n, inner] = x.dims();
        if n <= BLOCK {
            return x.sum_dim(1);
        }
        let rest = n / BLOCK;
        let whole = rest * BLOCK;
        let level = |t: Tensor<B, 3>| {
            t.reshape([outer, BLOCK, rest * inner])
                .sum_dim(1)
                .reshape([outer, rest, inner])
        };
        x = if whole == n {
            level(x)
        } else {
            // The tail is shorter than a block: summed directly, it becomes one more
            // partial sum of the next level.
            let tail = x.clone().narrow(1, whole, n - whole).sum_dim(1);
            Tensor::cat(vec![level(x.narrow(1, 0, whole)), tail], 1)
        };
    }
}

/// Mean of `x` along `dim` from a blocked [`sum_dim`], in f32 whatever `x`'s float type.
///
/// # Shapes
/// - `x`: `[d_0, ..., d_dim, ..., d_{D-1}]`, `d_dim > 0`
/// - output: `[d_0, ..., 1, ..., d_{D-1}]`, f32
pub fn mean_dim<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    let n = x.dims()[dim];
    sum_dim(x.cast(DType::F32), dim) / n as f64
}

/// The two-pass moments of [`moments_dim`], all f32.
#[derive(Debug, Clone)]
pub struct Moments<B: Backend, const D: usize> {
    /// Mean along the dimension, `[.., 1, ..]`.
    pub mean: Tensor<B, D>,
    /// Biased variance (divided by `n`, as normalisation layers use it), `[.., 1, ..]`.
    pub var: Tensor<B, D>,
    /// `x - mean`, the input's shape: a norm scales it next, so it is not recomputed.
    pub centered: Tensor<B, D>,
}

/// Mean and biased variance of `x` along `dim`, in f32 and in two passes: the mean, then the
/// mean of `(x - mean)^2`.
///
/// # Shapes
/// - `x`: `[d_0, ..., d_dim, ..., d_{D-1}]`, `d_dim > 0`
/// - output: `mean`, `var` `[d_0, ..., 1, ..., d_{D-1}]`; `centered` the shape of `x`
pub fn moments_dim<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Moments<B, D> {
    let x = x.cast(DType::F32);
    let mean = mean_dim(x.clone(), dim);
    let centered = x - mean.clone();
    let var = mean_dim(centered.clone().square(), dim);
    Moments {
        mean,
        var,
        centered,
    }
}
