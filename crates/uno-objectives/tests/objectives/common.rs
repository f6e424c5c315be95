//! Helpers shared by the integration tests.
#![allow(dead_code)]

use burn::tensor::{Tensor, TensorData, backend::Backend};

/// A `[rows, cols]` tensor from row-major host values.
pub fn t2<B: Backend>(values: &[f32], rows: usize, cols: usize) -> Tensor<B, 2> {
    assert_eq!(values.len(), rows * cols);
    Tensor::from_data(
        TensorData::new(values.to_vec(), [rows, cols]),
        &Default::default(),
    )
}

/// Read a `[1]` loss back as f64.
pub fn scalar<B: Backend>(x: Tensor<B, 1>) -> f64 {
    let v = uno_testing::to_vec(x);
    assert_eq!(v.len(), 1, "expected a one-element loss");
    v[0] as f64
}

/// Central finite differences `(f(x + h e_i) - f(x - h e_i)) / 2h` of a scalar function.
pub fn central_fd(f: impl Fn(&[f32]) -> f64, x: &[f32], h: f32) -> Vec<f32> {
    (0..x.len())
        .map(|i| {
            let mut plus = x.to_vec();
            let mut minus = x.to_vec();
            plus[i] += h;
            minus[i] -= h;
            ((f(&plus) - f(&minus)) / (2.0 * h as f64)) as f32
        })
        .collect()
}

/// Deterministic pseudo-random values in [-1, 1) (a tiny LCG: tests need no extra RNG).
pub fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}
