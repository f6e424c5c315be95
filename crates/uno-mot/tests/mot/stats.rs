//! `uno_mot::stats` against float64 statistics computed here on the host, at the extents
//! where plain f32 sums go wrong: 4M elements, one GroupNorm(32) group of a 128-channel
//! 1024^2 FLUX activation.
//!
//! Inputs are seeded host draws: a *flat* row (0.3 plus uniform noise of +-0.01, a mostly
//! flat image) and a *random* row (normal, mean 0.5, std 2). The reference mean, biased
//! variance and mean square (RMSNorm's statistic) are two-pass sums in f64 of the very f32
//! values the backend sees. Burn's own `mean_dim` path (what `burn::nn::GroupNorm` and
//! `RmsNorm` use) is measured on the same rows and printed (`--nocapture`), not asserted:
//! its error depends on the backend and its features.

use burn::backend::Autodiff;
use burn::tensor::{DType, Tensor, TensorData, backend::Backend};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::{Normal, Uniform};
use uno_mot::stats::{mean_dim, moments_dim, sum_dim};
use uno_testing::to_vec;

/// Elements per row: 4 channels x 1024^2.
const N: usize = 4 << 20;
/// Relative tolerance of every statistic against float64.
const REL: f64 = 1e-5;

fn flat_row(n: usize, seed: u64) -> Vec<f32> {
    let noise = Uniform::new(-0.01f32, 0.01).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| 0.3 + rng.sample(noise)).collect()
}

fn random_row(n: usize, seed: u64) -> Vec<f32> {
    let normal = Normal::new(0.5f32, 2.0).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.sample(normal)).collect()
}

/// Two-pass float64 mean, biased variance and mean square.
fn f64_stats(xs: &[f32]) -> [f64; 3] {
    let n = xs.len() as f64;
    let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    let mean_sq = xs.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / n;
    [mean, var, mean_sq]
}

fn rel_err(got: f32, want: f64) -> f64 {
    (got as f64 - want).abs() / want.abs()
}

/// Mean, variance, mean square and `x - mean` of a flat and a random 4M-element row within
/// 1e-5 of float64; Burn's plain `mean_dim` statistics on the same rows are printed next to
/// them.
fn statistics_match_f64_on_large_extents<B: Backend>() {
    let device = Default::default();
    let rows = [("flat", flat_row(N, 1)), ("random", random_row(N, 2))];
    for (name, xs) in rows {
        let want = f64_stats(&xs);
        let xs64: Vec<f64> = xs.iter().map(|&x| x as f64).collect();
        let x = Tensor::<B, 2>::from_data(TensorData::new(xs, [1, N]), &device);

        let moments = moments_dim(x.clone(), 1);
        let mean_sq = mean_dim(x.clone().square(), 1);
        let got = [moments.mean, moments.var, mean_sq].map(|t| to_vec(t)[0]);
        // `x - mean`, relative to the row's scale (its mean and spread).
        let scale = want[0].abs() + want[1].sqrt();
        let centered_err = xs64
            .iter()
            .zip(to_vec(moments.centered))
            .map(|(&x, c)| (c as f64 - (x - want[0])).abs() / scale)
            .fold(0.0, f64::max);
        assert!(
            centered_err <= REL,
            "{name} x - mean: rel err {centered_err:.2e}"
        );

        // Burn's path: GroupNorm's `sum_dim / n` and centred square, RmsNorm's
        // `square().mean_dim`.
        let burn_mean = x.clone().mean_dim(1);
        let burn_var = (x.clone() - burn_mean.clone()).square().mean_dim(1);
        let burn_mean_sq = x.square().mean_dim(1);
        let old = [burn_mean, burn_var, burn_mean_sq].map(|t| to_vec(t)[0]);

        for (k, stat) in ["mean", "var", "mean square"].iter().enumerate() {
            let err = rel_err(got[k], want[k]);
            eprintln!(
                "{name} {stat}: blocked rel err {err:.2e}, burn mean_dim rel err {:.2e}",
                rel_err(old[k], want[k])
            );
            assert!(
                err <= REL,
                "{name} {stat}: {} vs f64 {} (rel err {err:.2e} > {REL:e})",
                got[k],
                want[k]
            );
        }
    }
}

/// Integer-valued inputs have exact sums in any order, so the blocked sum must equal the
/// host's exactly, over the first, middle and last dimension, for extents below, at and
/// above a block with and without a remainder.
fn sum_dim_is_exact_on_integers<B: Backend>() {
    let device = Default::default();
    for n in [1, 31, 32, 33, 1000, 32 * 32 * 3 + 5] {
        let shape = [3, n, 5];
        let values: Vec<f32> = (0..3 * n * 5)
            .map(|i| ((i * 7) % 13) as f32 - 6.0)
            .collect();
        let at = |a: usize, b: usize, c: usize| values[(a * n + b) * 5 + c];
        let x = Tensor::<B, 3>::from_data(TensorData::new(values.clone(), shape), &device);
        for dim in 0..3 {
            let got = sum_dim(x.clone(), dim);
            let mut out_shape = shape;
            out_shape[dim] = 1;
            assert_eq!(got.dims(), out_shape, "n {n}, dim {dim}");
            let got = to_vec(got);
            let mut want = vec![0.0f32; got.len()];
            for a in 0..3 {
                for b in 0..n {
                    for c in 0..5 {
                        let idx = [a, b, c];
                        let out = (0..3).fold(0, |acc, d| {
                            acc * out_shape[d] + if d == dim { 0 } else { idx[d] }
                        });
                        want[out] += at(a, b, c);
                    }
                }
            }
            assert_eq!(got, want, "n {n}, dim {dim}");
        }
    }
}

/// The blocked sum is differentiable: its gradient is all ones, also with a remainder.
fn sum_dim_gradient_is_ones<B: Backend>() {
    type A<B> = Autodiff<B>;
    let device = Default::default();
    let x = Tensor::<A<B>, 2>::ones([2, 1000], &device).require_grad();
    let grads = sum_dim(x.clone(), 1).sum().backward();
    let grad = x.grad(&grads).unwrap();
    assert_eq!(grad.dims(), [2, 1000]);
    assert!(to_vec(grad).iter().all(|&g| g == 1.0));
}

uno_testing::backend_tests!(
    statistics_match_f64_on_large_extents,
    sum_dim_is_exact_on_integers,
    sum_dim_gradient_is_ones
);

/// bf16 inputs get f32 statistics (flex: the CPU backend with bf16).
#[test]
fn bf16_input_gives_f32_statistics() {
    type B = burn::backend::Flex;
    let device = Default::default();
    let xs = flat_row(1 << 20, 4);
    let x = Tensor::<B, 2>::from_data(TensorData::new(xs, [1, 1 << 20]), &device).cast(DType::BF16);
    let rounded = to_vec(x.clone());
    let [want_mean, want_var, _] = f64_stats(&rounded);
    let m = moments_dim(x, 1);
    let dtypes = [m.mean.dtype(), m.var.dtype(), m.centered.dtype()];
    assert_eq!(dtypes, [DType::F32; 3]);
    assert!(rel_err(to_vec(m.mean)[0], want_mean) <= REL);
    assert!(rel_err(to_vec(m.var)[0], want_var) <= REL);
}
