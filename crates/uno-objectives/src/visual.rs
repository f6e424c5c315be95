//! Metaquery visual-understanding loss (paper eq. 2): `1 - cos(h_mq, target)` per metaquery,
//! mean over metaqueries, with the target gradient-stopped; and the pooling of the target
//! feature grid to `sqrt(N) x sqrt(N)`.

use burn::tensor::{Tensor, backend::Backend, module::adaptive_avg_pool2d};

use crate::error::{ObjectiveError, Result};
use crate::term::{LossTerm, check_same_shape, ensure_finite};

/// Norm floor of the cosine similarity (PyTorch's `F.cosine_similarity` default).
pub const COSINE_EPS: f64 = 1e-8;

/// Row-wise cosine similarity `<a, b> / (max(|a|, eps) max(|b|, eps))` of two `[M, D]`
/// tensors, `[M]`.
///
/// The norms are floored as `sqrt(max(|x|^2, eps^2))`, clamping BEFORE the square root, so a
/// zero row gives similarity 0 with a finite (zero) gradient instead of `0 * inf = NaN`.
pub fn cosine_similarity_rows<B: Backend>(a: Tensor<B, 2>, b: Tensor<B, 2>) -> Tensor<B, 1> {
    let eps2 = COSINE_EPS * COSINE_EPS;
    let dot = (a.clone() * b.clone()).sum_dim(1);
    let na = (a.clone() * a).sum_dim(1).clamp_min(eps2).sqrt();
    let nb = (b.clone() * b).sum_dim(1).clamp_min(eps2).sqrt();
    (dot / (na * nb)).squeeze_dim::<1>(1)
}

/// `mean_m (1 - cos(pred_m, target_m))` over `[M, D]` metaquery outputs and targets.
///
/// The target is `.detach()`ed here: no gradient reaches whatever produced it (the frozen
/// ViT + connector). `M == 0` gives a zero loss with `count == 0`. One scalar read-back checks
/// finiteness (a NaN or inf in either input makes the cosine NaN).
pub fn metaquery_cosine_loss<B: Backend>(
    pred: Tensor<B, 2>,
    target: Tensor<B, 2>,
) -> Result<LossTerm<B>> {
    visual_term(pred, target, true)
}

pub(crate) fn visual_term<B: Backend>(
    pred: Tensor<B, 2>,
    target: Tensor<B, 2>,
    check: bool,
) -> Result<LossTerm<B>> {
    check_same_shape("visual.pred", pred.dims(), "visual.target", target.dims())?;
    let [m, d] = pred.dims();
    if m == 0 {
        return Ok(LossTerm::zero(&pred.device()));
    }
    if d == 0 {
        return Err(ObjectiveError::Shape {
            tensor: "visual.pred",
            expected: "[M, D] with D >= 1".into(),
            found: vec![m, d],
        });
    }
    let target = target.detach();
    let cos = cosine_similarity_rows(pred.clone(), target.clone());
    let sum = cos.neg().add_scalar(1.0).sum();
    if check {
        ensure_finite(
            sum.clone().detach(),
            "visual",
            &[("visual.pred", pred), ("visual.target", target)],
        )?;
    }
    Ok(LossTerm::from_sum(sum, m))
}

/// Side of the square metaquery grid: `sqrt(num_queries)`, or an error if not a square.
pub fn metaquery_grid_side(num_queries: usize) -> Result<usize> {
    if num_queries == 0 {
        return Err(ObjectiveError::InvalidValue {
            name: "num_queries",
            value: "0".into(),
            expected: "at least 1 metaquery",
        });
    }
    let side = num_queries.isqrt();
    if side * side != num_queries {
        return Err(ObjectiveError::NotSquare { num_queries });
    }
    Ok(side)
}

/// Pool a target feature grid `[h, w, D]` to `[N, D]` for `N = side^2` metaqueries.
///
/// Adaptive average pooling (Burn's `adaptive_avg_pool2d`, the bins of PyTorch's
/// `adaptive_avg_pool2d`): output cell `i` of an axis of input length `L` averages input
/// `floor(i L / side) .. ceil((i + 1) L / side)`. When `side` divides `L` the bins tile the
/// axis (plain area pooling); otherwise neighbouring bins overlap by one row/column (a 5-wide
/// axis pooled to 2 averages columns 0..3 and 2..5). The result is in raster order: row
/// `y * side + x` is output cell `(y, x)`, matching metaquery `y * side + x`.
///
/// A non-square grid (BAGEL keeps each image's aspect ratio, so a 1024x768 target's ViT copy
/// is 28 x 37 patches) is pooled per axis: its rows into `side` row bins and its columns
/// into `side` column bins, so each metaquery covers a `h/side x w/side` patch block and the
/// aspect ratio is squeezed into the square grid (the metaquery at `(y, x)` always covers
/// the same relative region of any image). An axis shorter than `side` (a panorama's ViT
/// copy can have 9 rows for 16 metaquery rows) uses the same bin formula, whose bins then
/// hold one cell each and repeat cells: pooling up is nearest-neighbour replication.
///
/// The features are detached: targets never carry gradient. Errors: `N` not a perfect
/// square or 0, or an empty feature dimension.
pub fn pool_target_grid<B: Backend>(
    features: Tensor<B, 3>,
    num_queries: usize,
) -> Result<Tensor<B, 2>> {
    let side = metaquery_grid_side(num_queries)?;
    let [h, w, d] = features.dims();
    if h == 0 || w == 0 || d == 0 {
        return Err(ObjectiveError::Shape {
            tensor: "visual.target_features",
            expected: "[h, w, D] with h, w, D >= 1".into(),
            found: vec![h, w, d],
        });
    }
    let x = features.detach().permute([2, 0, 1]).unsqueeze_dim::<4>(0); // [1, D, h, w]
    let pooled = adaptive_avg_pool2d(x, [side, side]); // [1, D, side, side]
    Ok(pooled.reshape([d, num_queries]).transpose())
}

/// [`pool_target_grid`] for features given as raster-ordered tokens `[h * w, D]` with
/// `grid = [h, w]` (a ViT's patch tokens).
pub fn pool_target_tokens<B: Backend>(
    features: Tensor<B, 2>,
    grid: [usize; 2],
    num_queries: usize,
) -> Result<Tensor<B, 2>> {
    let [tokens, d] = features.dims();
    let [h, w] = grid;
    if tokens != h * w {
        return Err(ObjectiveError::Shape {
            tensor: "visual.target_features",
            expected: format!("[h * w, D] = [{}, D] for grid {grid:?}", h * w),
            found: vec![tokens, d],
        });
    }
    pool_target_grid(features.reshape([h, w, d]), num_queries)
}
