//! The blockwise attention (custom backward under `Autodiff`) against the dense path
//! (Burn's `attention_fallback`), forward and gradients, on realistic UNO packs; the
//! segment description against an element-by-element mask; its validation.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use uno_mot::attention::has_blockwise_backward;
use uno_mot::{AttentionImpl, AttnSegment, JointAttention, MotError, SampleAttention};
use uno_testing::{assert_close, to_vec};

use crate::common::{Kind, Rng, randn, sample_attention, split_mask};

/// Text-to-image UNO sample: prompt, noised target, caption, metaqueries.
const T2I: &[(Kind, usize)] = &[
    (Kind::Causal, 5),
    (Kind::Noise, 6),
    (Kind::Caption, 3),
    (Kind::MetaqueryCausal, 4),
];
/// Edit sample in BAGEL's order: source as clean VAE, then as ViT, instruction, noised
/// target, caption, metaqueries (full attention variant).
const EDIT: &[(Kind, usize)] = &[
    (Kind::Full, 3),
    (Kind::Full, 4),
    (Kind::Causal, 4),
    (Kind::Noise, 5),
    (Kind::Caption, 2),
    (Kind::MetaqueryFull, 3),
];
/// Understanding sample: text, ViT image, text.
const UND: &[(Kind, usize)] = &[(Kind::Causal, 3), (Kind::Full, 4), (Kind::Causal, 6)];

/// The splits of one sample.
type Splits = &'static [(Kind, usize)];

/// Samples of a pack, placed one after the other.
fn pack(samples: &[Splits]) -> (Vec<SampleAttention>, usize) {
    let mut start = 0;
    let samples = samples
        .iter()
        .map(|s| {
            let sample = sample_attention(start, s);
            start += sample.len();
            sample
        })
        .collect();
    (samples, start)
}

/// Largest absolute difference, for the report printed by `--nocapture`.
fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Host f64 reference of masked GQA attention and the gradients of `sum(out * w)`:
/// `[out, dq, dk, dv]`, row-major like the tensors.
fn reference(
    samples: &[SampleAttention],
    len: usize,
    (heads, kv_heads, d): (usize, usize, usize),
    [q, k, v, w]: &[Vec<f32>; 4],
) -> [Vec<f32>; 4] {
    let mut visible = vec![false; len * len];
    for s in samples {
        let m = s.dense();
        for i in 0..s.len() {
            for j in 0..s.len() {
                visible[(s.start() + i) * len + s.start() + j] = !m[i * s.len() + j];
            }
        }
    }
    let (hd, kd) = (heads * d, kv_heads * d);
    let scale = 1.0 / (d as f64).sqrt();
    let at = |x: &[f32], width: usize, row: usize, head: usize, c: usize| {
        x[row * width + head * d + c] as f64
    };
    let mut out = vec![0.0f64; len * hd];
    let mut dq = vec![0.0f64; len * hd];
    let mut dk = vec![0.0f64; len * kd];
    let mut dv = vec![0.0f64; len * kd];
    for h in 0..heads {
        let kh = h / (heads / kv_heads);
        for i in 0..len {
            let js: Vec<usize> = (0..len).filter(|&j| visible[i * len + j]).collect();
            let s: Vec<f64> = js
                .iter()
                .map(|&j| {
                    scale
                        * (0..d)
                            .map(|c| at(q, hd, i, h, c) * at(k, kd, j, kh, c))
                            .sum::<f64>()
                })
                .collect();
            let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
            let z: f64 = e.iter().sum();
            let p: Vec<f64> = e.iter().map(|x| x / z).collect();
            let dp: Vec<f64> = js
                .iter()
                .map(|&j| {
                    (0..d)
                        .map(|c| at(w, hd, i, h, c) * at(v, kd, j, kh, c))
                        .sum::<f64>()
                })
                .collect();
            let pdp: f64 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
            for (n, &j) in js.iter().enumerate() {
                let ds = p[n] * (dp[n] - pdp);
                for c in 0..d {
                    out[i * hd + h * d + c] += p[n] * at(v, kd, j, kh, c);
                    dv[j * kd + kh * d + c] += p[n] * at(w, hd, i, h, c);
                    dq[i * hd + h * d + c] += scale * ds * at(k, kd, j, kh, c);
                    dk[j * kd + kh * d + c] += scale * ds * at(q, hd, i, h, c);
                }
            }
        }
    }
    [out, dq, dk, dv].map(|x| x.into_iter().map(|y| y as f32).collect())
}

/// Output and the gradients of `sum(out * w)` with respect to q, k, v (host inputs
/// `[q, k, v, w]`).
fn run<B: AutodiffBackend>(
    attention: &JointAttention<B>,
    len: usize,
    inputs: &[Vec<f32>; 4],
) -> [Vec<f32>; 4] {
    let device = B::Device::default();
    let tensor = |x: &Vec<f32>| {
        Tensor::<B, 2>::from_data(TensorData::new(x.clone(), [len, x.len() / len]), &device)
    };
    let [q, k, v, w] = inputs.each_ref().map(tensor);
    let (q, k, v) = (q.require_grad(), k.require_grad(), v.require_grad());
    let out = attention.forward(q.clone(), k.clone(), v.clone());
    let grads = (out.clone() * w).sum().backward();
    let grad = |t: &Tensor<B, 2>| to_vec(t.grad(&grads).expect("input gets a gradient"));
    [to_vec(out), grad(&q), grad(&k), grad(&v)]
}

const NAMES: [&str; 4] = ["out", "dq", "dk", "dv"];

/// Blockwise equals Burn's dense attention in the output and in the q, k, v gradients, and
/// both equal the f64 reference, within 1e-5 (f32), for each pack and block size; prints the
/// largest differences (`--nocapture`).
///
/// One exception, measured and asserted: on `Autodiff<NdArray>` Burn 0.21's dense
/// gradients themselves miss the f64 reference by up to ~4e-4 (flex: ~5e-7). The error is
/// the gradient flowing through `attention_fallback`'s max shift, which is mathematically
/// zero (the same ops with the max detached match the reference). Where the dense
/// gradient misses the reference by more than 1e-5, the blockwise gradient must match the
/// reference within 1e-5 instead.
fn check_packs<B: AutodiffBackend>(
    packs: &[(&str, Vec<Splits>)],
    (heads, kv_heads, head_dim): (usize, usize, usize),
    blocks: &[(usize, usize)],
) {
    let device = B::Device::default();
    for (p, (name, splits)) in packs.iter().enumerate() {
        let (samples, len) = pack(splits);
        let mut rng = Rng::new(100 + p as u64);
        let inputs =
            [heads, kv_heads, kv_heads, heads].map(|h| rng.normals(len * h * head_dim, 1.0));
        let shape = (heads, kv_heads, head_dim);
        let exact = reference(&samples, len, shape, &inputs);
        let attention = |implementation| {
            JointAttention::<B>::new(&samples, len, heads, kv_heads, implementation, &device)
                .unwrap()
        };
        let dense = run(&attention(AttentionImpl::Dense), len, &inputs);
        let dense_err: Vec<f32> = (0..4).map(|i| max_abs_diff(&dense[i], &exact[i])).collect();
        for &(block_q, block_k) in blocks {
            let blockwise = AttentionImpl::Blockwise { block_q, block_k };
            let got = run(&attention(blockwise), len, &inputs);
            let mut report = String::new();
            for (i, what) in NAMES.iter().enumerate() {
                let vs_dense = max_abs_diff(&got[i], &dense[i]);
                let vs_exact = max_abs_diff(&got[i], &exact[i]);
                let at =
                    format!("{name} L={len} heads {shape:?} blocks {block_q}x{block_k}: {what}");
                assert!(
                    vs_exact <= 1e-5,
                    "{at} misses the f64 reference by {vs_exact}"
                );
                assert!(
                    vs_dense <= 1e-5 || (i > 0 && dense_err[i] > 1e-5),
                    "{at} differs from dense by {vs_dense} (dense vs f64: {})",
                    dense_err[i]
                );
                report += &format!(" {what} {vs_dense:.1e}/{vs_exact:.1e}/{:.1e}", dense_err[i]);
            }
            eprintln!(
                "{name} L={len} heads {shape:?} blocks {block_q}x{block_k} (blockwise-dense/blockwise-f64/dense-f64):{report}"
            );
        }
    }
}

/// Realistic multi-segment UNO packs with BAGEL-7B's 7:1 GQA (28 query heads over 4 KV
/// heads, small head_dim): causal, full, noise, caption and metaquery segments, several
/// samples per pack. Block sizes that do and do not divide L; small blocks give skipped
/// tiles (other samples, the causal upper triangle, hidden noise and supervision splits)
/// and tiles in which some rows see nothing yet (caption rows before their noised target).
fn blockwise_matches_dense_on_uno_packs<B: Backend>() {
    let packs = [
        ("t2i", vec![T2I]),
        ("edit+t2i+und", vec![EDIT, T2I, UND]),
        ("und+edit", vec![UND, EDIT]),
    ];
    // L = 18, 57, 34: 3 divides 18 and 57, 7 none, 64 covers each pack with one tile.
    let blocks = [(3, 3), (7, 5), (4, 16), (64, 64), (1, 1)];
    check_packs::<Autodiff<B>>(&packs, (28, 4, 4), &blocks);
}

/// Single-kind samples (plain causal, full, a noised image alone), GQA without groups (4
/// query heads over 4 KV heads), and under Burn's `BalancedCheckpointing` strategy.
fn blockwise_matches_dense_simple_masks<B: Backend>() {
    let packs = [
        ("causal", vec![&[(Kind::Causal, 13)][..]]),
        ("full", vec![&[(Kind::Full, 11)][..]]),
        (
            "causal+full+noise",
            vec![
                &[(Kind::Causal, 9)][..],
                &[(Kind::Full, 6)][..],
                &[(Kind::Causal, 2), (Kind::Noise, 5)][..],
            ],
        ),
    ];
    check_packs::<Autodiff<B>>(&packs, (4, 4, 8), &[(4, 4), (5, 3), (32, 32)]);
    check_packs::<Autodiff<B>>(&packs, (28, 4, 4), &[(6, 4)]);
    // Burn's own (per-op) checkpointing strategy gets the same node.
    assert!(has_blockwise_backward::<Autodiff<B, BalancedCheckpointing>>());
    check_packs::<Autodiff<B, BalancedCheckpointing>>(&packs[2..], (28, 4, 4), &[(6, 4)]);
}

/// Without autodiff (inference) the blockwise forward runs through plain tensor ops and
/// equals the dense forward; only autodiff backends get the custom backward node.
fn blockwise_forward_without_autodiff<B: Backend>() {
    let device = B::Device::default();
    let (samples, len) = pack(&[EDIT, T2I]);
    let q = randn::<B, 2>([len, 28 * 4], 7, &device);
    let k = randn::<B, 2>([len, 4 * 4], 8, &device);
    let v = randn::<B, 2>([len, 4 * 4], 9, &device);
    let forward = |implementation| {
        let attention = JointAttention::<B>::new(&samples, len, 28, 4, implementation, &device);
        to_vec(attention.unwrap().forward(q.clone(), k.clone(), v.clone()))
    };
    let blockwise = AttentionImpl::Blockwise {
        block_q: 8,
        block_k: 6,
    };
    assert_close(
        &forward(blockwise),
        &forward(AttentionImpl::Dense),
        1e-5,
        1e-5,
    );
    assert!(!has_blockwise_backward::<B>());
    assert!(has_blockwise_backward::<Autodiff<B>>());
}

/// The segments give the same mask as the element-by-element rules (uno-packing's), and
/// every row sees at least itself.
fn segments_match_elementwise_mask<B: Backend>() {
    for splits in [T2I, EDIT, UND] {
        let sample = sample_attention(0, splits);
        let (want, n) = split_mask(splits);
        assert_eq!(sample.dense(), want, "{splits:?}");
        for i in 0..n {
            assert!(!want[i * n + i], "row {i} must see itself");
        }
    }
    // Spot checks of the rules: the caption (rows 11..14 of T2I) sees the noised target
    // (5..11) and itself causally, not the prompt; nobody after sees the caption.
    let m = sample_attention(0, T2I).dense();
    let n = 18;
    assert!(m[11 * n] && !m[11 * n + 5] && !m[11 * n + 11] && m[11 * n + 12]);
    assert!(m[14 * n + 11] && !m[14 * n + 10] && m[14 * n + 4]);
    let device = B::Device::default();
    let t = sample_attention(0, T2I).dense_tensor::<B>(&device);
    let back: Vec<bool> = to_vec(t.float()).into_iter().map(|x| x == 1.0).collect();
    assert_eq!(back, m);
}

/// A row can never see nothing: segments that would allow it (empty, seeing later or
/// itself, out of order, not tiling the sample) are rejected with the culprit named.
fn bad_segments_are_rejected<B: Backend>() {
    let seg = |start, len, sees: Vec<usize>| AttnSegment {
        start,
        len,
        causal_inside: true,
        sees,
    };
    let e = SampleAttention::new(0, vec![seg(0, 2, vec![]), seg(2, 0, vec![0])]).unwrap_err();
    assert_eq!(e, MotError::EmptySegment { segment: 1 });
    let e = SampleAttention::new(0, vec![seg(0, 2, vec![]), seg(3, 1, vec![])]).unwrap_err();
    assert_eq!(
        e,
        MotError::SegmentGap {
            segment: 1,
            start: 3,
            expected_start: 2
        }
    );
    for sees in [vec![1], vec![2], vec![0, 0]] {
        let segments = vec![seg(0, 2, vec![]), seg(2, 1, sees.clone())];
        let e = SampleAttention::new(0, segments).unwrap_err();
        assert_eq!(e, MotError::SegmentSees { segment: 1, sees });
        assert!(e.to_string().contains("segment 1"), "{e}");
    }
    let e = SampleAttention::new(0, vec![seg(0, 1, vec![]), seg(1, 1, vec![0])]).unwrap();
    assert_eq!(e.dense(), [false, true, false, false]);
    // Zero-sized blocks are a config error.
    let device = B::Device::default();
    let zero = AttentionImpl::Blockwise {
        block_q: 0,
        block_k: 4,
    };
    let e = JointAttention::<B>::new(&[SampleAttention::causal(0, 4)], 4, 2, 1, zero, &device)
        .unwrap_err();
    assert_eq!(
        e,
        MotError::ZeroField {
            field: "attention.block_q"
        }
    );
}

uno_testing::backend_tests!(
    blockwise_matches_dense_on_uno_packs,
    blockwise_matches_dense_simple_masks,
    blockwise_forward_without_autodiff,
    segments_match_elementwise_mask,
    bad_segments_are_rejected,
);
