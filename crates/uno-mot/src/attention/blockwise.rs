//! Blockwise masked GQA attention (the flash-attention algorithm) in plain Burn tensor ops,
//! so it runs on every backend.
//!
//! The forward walks the computed tiles of each query block with an online softmax and
//! returns the output plus each row's log-sum-exp; the backward recomputes every tile's
//! probabilities from that log-sum-exp (FlashAttention-2, Dao 2023, algorithm 2). Neither
//! keeps more than one `[kv_heads, groups * block_q, block_k]` tile of scores alive.
//!
//! GQA without repeating K/V: the `groups = heads / kv_heads` query heads of one KV head are
//! stacked along the rows of one matmul (`[kv_heads, groups * block_q, head_dim]` against
//! `[kv_heads, head_dim, block_k]`), so the batched matmul over KV heads serves all of them,
//! and the K/V gradients sum over the group inside the same matmul.
//!
//! Masked pairs get a large finite negative score, not `-inf`: a row whose first visited
//! tile is entirely masked then has a finite running max, and the rescale factor
//! `exp(m_old - m_new)` zeroes its bogus partial sums as soon as a visible key arrives
//! (`-inf - -inf` would be NaN). Every row sees at least itself, so one always arrives.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::plan::{Tile, TilePlan};

/// Score of a masked pair: far below any real score, and `exp` of it underflows to 0.
const MASKED: f32 = -1e30;

/// Head layout of a pack: `heads` query heads over `kv_heads` KV heads of `head_dim`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heads {
    pub(crate) heads: usize,
    pub(crate) kv_heads: usize,
}

impl Heads {
    fn groups(self) -> usize {
        self.heads / self.kv_heads
    }
}

/// Query-side rows of one block: `[rows, heads * width]` -> `[kv_heads, groups * rows,
/// width]` (row `g * rows + i` is query head `kv * groups + g` at token `i`).
fn q_side<B: Backend>(x: &Tensor<B, 2>, rows: std::ops::Range<usize>, h: Heads) -> Tensor<B, 3> {
    let n = rows.len();
    let width = x.dims()[1] / h.heads;
    x.clone()
        .narrow(0, rows.start, n)
        .reshape([n, h.kv_heads, h.groups(), width])
        .permute([1, 2, 0, 3])
        .reshape([h.kv_heads, h.groups() * n, width])
}

/// Inverse of [`q_side`]: `[kv_heads, groups * rows, width]` -> `[rows, heads * width]`.
fn q_rows<B: Backend>(x: Tensor<B, 3>, h: Heads) -> Tensor<B, 2> {
    let [_, gn, width] = x.dims();
    let n = gn / h.groups();
    x.reshape([h.kv_heads, h.groups(), n, width])
        .permute([2, 0, 1, 3])
        .reshape([n, h.heads * width])
}

/// Key-side rows of one block: `[cols, kv_heads * head_dim]` -> `[kv_heads, cols, head_dim]`.
fn kv_side<B: Backend>(x: &Tensor<B, 2>, cols: std::ops::Range<usize>, h: Heads) -> Tensor<B, 3> {
    let n = cols.len();
    let width = x.dims()[1] / h.kv_heads;
    x.clone()
        .narrow(0, cols.start, n)
        .reshape([n, h.kv_heads, width])
        .swap_dims(0, 1)
}

/// Inverse of [`kv_side`].
fn kv_rows<B: Backend>(x: Tensor<B, 3>) -> Tensor<B, 2> {
    let [kv, n, width] = x.dims();
    x.swap_dims(0, 1).reshape([n, kv * width])
}

/// Scores of one tile, masked pairs at [`MASKED`].
///
/// # Shapes
/// - `q`: `[kv_heads, groups * rows, head_dim]`, already scaled; `k_t`: `[kv_heads,
///   head_dim, cols]`
/// - output: `[kv_heads, groups * rows, cols]`
fn scores<B: Backend>(q: &Tensor<B, 3>, k_t: &Tensor<B, 3>, tile: &Tile) -> Tensor<B, 3> {
    let s = q.clone().matmul(k_t.clone());
    match &tile.mask {
        None => s,
        Some(mask) => {
            let [kv, gn, cols] = s.dims();
            let rows = mask.len() / cols;
            let bias: Vec<f32> = mask.iter().map(|&m| if m { MASKED } else { 0.0 }).collect();
            // One row of `rows * cols` shared by every head: the CPU backends add such a
            // broadcast row with SIMD, while `[1, rows, cols]` against `[heads, rows, cols]`
            // walks a strided index per element.
            let bias = Tensor::<B, 2>::from_data(
                TensorData::new(bias, [1, rows * cols]),
                (&s.device(), s.dtype()),
            );
            (s.reshape([kv * (gn / rows), rows * cols]) + bias).reshape([kv, gn, cols])
        }
    }
}

/// K (transposed) and V of every key block, in the tile layout.
fn key_blocks<B: Backend>(
    k: &Tensor<B, 2>,
    v: &Tensor<B, 2>,
    plan: &TilePlan,
    h: Heads,
) -> (Vec<Tensor<B, 3>>, Vec<Tensor<B, 3>>) {
    (0..plan.num_k_blocks())
        .map(|kb| {
            let cols = plan.k_cols(kb);
            (
                kv_side(k, cols.clone(), h).swap_dims(1, 2),
                kv_side(v, cols, h),
            )
        })
        .unzip()
}

/// Blockwise attention forward.
///
/// Returns the output and, per query block, each row's log-sum-exp of its (scaled, masked)
/// scores, which is all the backward needs besides the inputs.
///
/// # Shapes
/// - `q`: `[L, heads * head_dim]`; `k`, `v`: `[L, kv_heads * head_dim]` (sequence order)
/// - output: `[L, heads * head_dim]`; log-sum-exp per query block: `[kv_heads, groups *
///   rows, 1]`
pub(crate) fn forward<B: Backend>(
    q: &Tensor<B, 2>,
    k: &Tensor<B, 2>,
    v: &Tensor<B, 2>,
    plan: &TilePlan,
    h: Heads,
) -> (Tensor<B, 2>, Vec<Tensor<B, 3>>) {
    let scale = scale(q, h);
    let (k_t, v_b) = key_blocks(k, v, plan, h);
    let mut outs = Vec::with_capacity(plan.num_q_blocks());
    let mut lses = Vec::with_capacity(plan.num_q_blocks());
    for qb in 0..plan.num_q_blocks() {
        let q_b = q_side(q, plan.q_rows(qb), h).mul_scalar(scale);
        // Running (max, sum of exp, weighted values) of the online softmax.
        let mut run: Option<(Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 3>)> = None;
        for tile in plan.tiles(qb) {
            let s = scores(&q_b, &k_t[tile.k_block], tile);
            let tile_max = s.clone().max_dim(2);
            run = Some(match run {
                None => {
                    let p = (s - tile_max.clone()).exp();
                    let sum = p.clone().sum_dim(2);
                    (tile_max, sum, p.matmul(v_b[tile.k_block].clone()))
                }
                Some((max, sum, acc)) => {
                    let new_max = max.clone().max_pair(tile_max);
                    let alpha = (max - new_max.clone()).exp();
                    let p = (s - new_max.clone()).exp();
                    let sum = sum * alpha.clone() + p.clone().sum_dim(2);
                    let acc = acc * alpha + p.matmul(v_b[tile.k_block].clone());
                    (new_max, sum, acc)
                }
            });
        }
        let (max, sum, acc) = run.expect("every query row sees itself, so each block has a tile");
        outs.push(q_rows(acc / sum.clone(), h));
        lses.push(max + sum.log());
    }
    (Tensor::cat(outs, 0), lses)
}

/// Gradients of [`forward`] with respect to `q`, `k` and `v`, given the output, its
/// log-sum-exp and the output's gradient; tiles are recomputed one at a time.
///
/// # Shapes
/// - `q`, `out`, `grad`: `[L, heads * head_dim]`; `k`, `v`: `[L, kv_heads * head_dim]`
/// - output: `(dq, dk, dv)`, shaped like `(q, k, v)`
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<B: Backend>(
    q: &Tensor<B, 2>,
    k: &Tensor<B, 2>,
    v: &Tensor<B, 2>,
    out: &Tensor<B, 2>,
    lse: &[Tensor<B, 3>],
    grad: &Tensor<B, 2>,
    plan: &TilePlan,
    h: Heads,
) -> (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 2>) {
    let scale = scale(q, h);
    let (k_t, v_b) = key_blocks(k, v, plan, h);
    // Per row and head: sum_d dO * O (= sum_j P dP, the softmax backward's correction).
    let [len, width] = q.dims();
    let row_dot = (grad.clone() * out.clone())
        .reshape([len, h.heads, width / h.heads])
        .sum_dim(2)
        .reshape([len, h.heads]);
    let mut dk: Vec<Option<Tensor<B, 3>>> = vec![None; plan.num_k_blocks()];
    let mut dv: Vec<Option<Tensor<B, 3>>> = vec![None; plan.num_k_blocks()];
    let mut dq = Vec::with_capacity(plan.num_q_blocks());
    for (qb, lse) in lse.iter().enumerate() {
        let rows = plan.q_rows(qb);
        let q_b = q_side(q, rows.clone(), h).mul_scalar(scale);
        let g_b = q_side(grad, rows.clone(), h);
        let dot_b = q_side(&row_dot, rows, h);
        let mut dq_b: Option<Tensor<B, 3>> = None;
        for tile in plan.tiles(qb) {
            let kb = tile.k_block;
            let p = (scores(&q_b, &k_t[kb], tile) - lse.clone()).exp();
            let dp = g_b.clone().matmul(v_b[kb].clone().swap_dims(1, 2));
            let ds = p.clone() * (dp - dot_b.clone());
            accumulate(&mut dv[kb], p.swap_dims(1, 2).matmul(g_b.clone()));
            accumulate(&mut dk[kb], ds.clone().swap_dims(1, 2).matmul(q_b.clone()));
            accumulate(&mut dq_b, ds.matmul(k_t[kb].clone().swap_dims(1, 2)));
        }
        let dq_b = dq_b.expect("every query row sees itself, so each block has a tile");
        dq.push(q_rows(dq_b.mul_scalar(scale), h));
    }
    let key_grads = |blocks: Vec<Option<Tensor<B, 3>>>| {
        Tensor::cat(
            blocks
                .into_iter()
                .map(|g| kv_rows(g.expect("every key is seen by its own row")))
                .collect(),
            0,
        )
    };
    (Tensor::cat(dq, 0), key_grads(dk), key_grads(dv))
}

fn accumulate<B: Backend>(sum: &mut Option<Tensor<B, 3>>, term: Tensor<B, 3>) {
    *sum = Some(match sum.take() {
        None => term,
        Some(s) => s + term,
    });
}

/// `1 / sqrt(head_dim)`, as Burn's attention.
fn scale<B: Backend>(q: &Tensor<B, 2>, h: Heads) -> f64 {
    let head_dim = q.dims()[1] / h.heads;
    1.0 / (head_dim as f64).sqrt()
}
