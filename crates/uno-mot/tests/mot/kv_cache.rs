//! Incremental inference with a KV cache equals the full forward: prefill and a query,
//! chunked prefill, token-by-token decoding, and a discarded query that leaves the cache as
//! it was; all written in place into one preallocated cache.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use uno_mot::{CacheWrite, KvCache, MotError, Routing};
use uno_testing::{assert_close, to_vec};

use crate::common::{Kind, bools, ints, randn, sample_attention, split_mask, tiny};

/// Rows `r0..r1`, columns `0..c1` of a row-major `n x n` mask.
fn block(m: &[bool], n: usize, r0: usize, r1: usize, c1: usize) -> Vec<bool> {
    (r0..r1)
        .flat_map(|r| m[r * n..r * n + c1].to_vec())
        .collect()
}

fn kv_cache_matches_full_forward<B: Backend>() {
    let device = B::Device::default();
    let h = 32;
    // One sample: prompt text (und, causal 5), clean image (gen, full 3), text (und, causal
    // 2), then the noised image (gen, noise 4) that the sampler queries at every step.
    let splits = [
        (Kind::Causal, 5),
        (Kind::Full, 3),
        (Kind::Causal, 2),
        (Kind::Noise, 4),
    ];
    let (mask, n) = split_mask(&splits);
    let is_gen: Vec<bool> = (0..n).map(|i| (5..8).contains(&i) || i >= 10).collect();
    let pos: Vec<i64> = vec![0, 1, 2, 3, 4, 5, 5, 5, 6, 7, 8, 8, 8, 8];
    let model = tiny::<B>(2, 61, &device);
    let hidden = randn::<B, 2>([n, h], 62, &device);

    let routing_of = |r0: usize, r1: usize| {
        let und: Vec<usize> = (r0..r1).filter(|&i| !is_gen[i]).map(|i| i - r0).collect();
        let gen_idx: Vec<usize> = (r0..r1).filter(|&i| is_gen[i]).map(|i| i - r0).collect();
        Routing::<B>::from_indices(&und, &gen_idx, r1 - r0, &device).unwrap()
    };
    let full_forward = |hidden: Tensor<B, 2>| {
        let samples = [sample_attention(0, &splits)];
        to_vec(
            model
                .forward(hidden, &routing_of(0, n), ints(&pos, &device), &samples)
                .unwrap(),
        )
    };
    let step =
        |hidden: &Tensor<B, 2>, r0: usize, r1: usize, cache: &mut KvCache<B>, write: CacheWrite| {
            model
                .forward_cached(
                    hidden.clone().narrow(0, r0, r1 - r0),
                    &routing_of(r0, r1),
                    ints(&pos[r0..r1], &device),
                    bools(block(&mask, n, r0, r1, r1), r1 - r0, r1, &device),
                    cache,
                    write,
                )
                .unwrap()
        };
    let full = full_forward(hidden.clone());

    // Prefill the context (10 tokens) once with room for the query, then query the 4
    // noised-image tokens without keeping them.
    let (ctx_out, mut cache) = model
        .prefill(
            hidden.clone().narrow(0, 0, 10),
            &routing_of(0, 10),
            ints(&pos[..10], &device),
            bools(block(&mask, n, 0, 10, 10), 10, 10, &device),
            14,
        )
        .unwrap();
    assert_eq!((cache.len(), cache.capacity()), (10, 14));
    assert_close(&to_vec(ctx_out), &full[..10 * h], 1e-5, 1e-5);
    let prefilled = to_vec(cache.layer(1).unwrap().0);
    let q_out = step(&hidden, 10, 14, &mut cache, CacheWrite::Discard);
    assert_eq!(cache.len(), 10);
    assert_close(&to_vec(q_out), &full[10 * h..], 1e-5, 1e-5);
    assert_eq!(to_vec(cache.layer(1).unwrap().0), prefilled);

    // Causal text one token at a time (decoding), bidirectional splits whole: the same
    // outputs, written into one preallocated cache.
    let mut chunked = model.kv_cache(14, &device);
    let mut outs = Vec::new();
    let chunks = [
        (0, 1),
        (1, 2),
        (2, 3),
        (3, 4),
        (4, 5),
        (5, 8),
        (8, 9),
        (9, 10),
        (10, 14),
    ];
    for (r0, r1) in chunks {
        outs.extend(to_vec(step(
            &hidden,
            r0,
            r1,
            &mut chunked,
            CacheWrite::Keep,
        )));
    }
    assert_eq!(chunked.len(), 14);
    assert_close(&outs, &full, 1e-5, 1e-5);

    // Reuse: a new noised image (next sampler step) against the SAME cache equals a full
    // forward with those tokens.
    let noise2 = randn::<B, 2>([4, h], 63, &device);
    let hidden2 = Tensor::cat(vec![hidden.clone().narrow(0, 0, 10), noise2], 0);
    let full2 = full_forward(hidden2.clone());
    let q2 = step(&hidden2, 10, 14, &mut cache, CacheWrite::Discard);
    assert_close(&to_vec(q2), &full2[10 * h..], 1e-5, 1e-5);
    let d: f32 = full2[10 * h..]
        .iter()
        .zip(&full[10 * h..])
        .map(|(a, b)| (a - b).abs())
        .sum();
    assert!(d > 1e-2, "a different query must give a different output");

    // A query that does not fit the room left is an error, not a reallocation.
    let e = model
        .forward_cached(
            hidden.clone().narrow(0, 10, 4),
            &routing_of(10, 14),
            ints(&pos[10..], &device),
            Tensor::from_data(TensorData::new(vec![false; 4 * 18], [4, 18]), &device),
            &mut chunked,
            CacheWrite::Discard,
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            MotError::CacheFull {
                capacity: 14,
                needed: 18
            }
        ),
        "{e}"
    );

    // A cache from a model with another depth is rejected.
    let other = tiny::<B>(1, 64, &device);
    let e = other
        .forward_cached(
            hidden.clone().narrow(0, 10, 4),
            &routing_of(10, 14),
            ints(&pos[10..], &device),
            Tensor::from_data(TensorData::new(vec![false; 4 * 14], [4, 14]), &device),
            &mut cache,
            CacheWrite::Discard,
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            MotError::CacheLayers {
                expected: 1,
                got: 2
            }
        ),
        "{e}"
    );
}

uno_testing::backend_tests!(kv_cache_matches_full_forward);
