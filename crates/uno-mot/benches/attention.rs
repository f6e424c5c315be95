//! One forward + backward of the joint attention at BAGEL-7B's head shape (28 query heads
//! over 4 KV heads, head_dim 128) on one UNO text-to-image sample of 1k / 2k / 4k tokens,
//! dense (Burn's `attention_fallback` under `Autodiff`) against blockwise (one graph node
//! with a recomputing backward), on flex.
//!
//! The sample has the paper's proportions (Table 12: 171 prompt, 3362 image, 80 caption and
//! 256 metaquery tokens): causal prompt, noised image, caption and causal metaqueries that
//! see only the image. The projections and MLP around the attention are the same in both
//! implementations and `O(L)` in memory, so they are left out.
//!
//! Before timing, each case runs once under a counting global allocator and prints the
//! peak heap bytes of the step above what was live before it (inputs excluded): the memory
//! the graph keeps for the backward plus the largest temporaries. The dense case is
//! skipped above 2k tokens (it would need ~10 GB at 4k; it grows as `L^2`).
//!
//! Run: `cargo bench -p uno-mot --bench attention -- --warm-up-time 1 --measurement-time 5`
//!
//! Measured on a 2-core machine (AMD EPYC, AVX2; flex, f32, default 256 x 256 tiles; other
//! builds running, so times are upper bounds), peak heap of one step and median time:
//!
//! | tokens | dense | blockwise |
//! |---|---|---|
//! | 1024 | 603 MiB, 4.6 s | 77 MiB, 2.9 s |
//! | 2048 | 2325 MiB, 17.3 s | 128 MiB, 10.4 s |
//! | 4096 | (skipped, ~9 GiB) | 256 MiB, 35.1 s |

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use uno_mot::{AttentionImpl, AttnSegment, JointAttention, SampleAttention};
use uno_testing::{PeakAlloc, peak_heap_of};

#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc;

type B = Autodiff<Flex>;

const HEADS: usize = 28;
const KV_HEADS: usize = 4;
const HEAD_DIM: usize = 128;

/// A text-to-image sample of about `len` tokens in the paper's proportions.
fn sample(len: usize) -> SampleAttention {
    let prompt = len * 171 / 3869;
    let caption = len * 80 / 3869;
    let metaqueries = len * 256 / 3869;
    let image = len - prompt - caption - metaqueries;
    let segment = |start, len, causal_inside, sees: Vec<usize>| AttnSegment {
        start,
        len,
        causal_inside,
        sees,
    };
    let segments = vec![
        segment(0, prompt, true, vec![]),
        segment(prompt, image, false, vec![0]),
        segment(prompt + image, caption, true, vec![1]),
        segment(prompt + image + caption, metaqueries, true, vec![1]),
    ];
    SampleAttention::new(0, segments).expect("valid segments")
}

/// One forward + backward of the attention of `len` tokens.
fn step(attention: &JointAttention<B>, q: &Tensor<B, 2>, k: &Tensor<B, 2>, v: &Tensor<B, 2>) {
    let out = attention.forward(q.clone(), k.clone(), v.clone());
    let grads = out.sum().backward();
    std::hint::black_box(q.grad(&grads));
    B::sync(&Default::default()).unwrap();
}

fn inputs(len: usize) -> [Tensor<B, 2>; 3] {
    let device = Default::default();
    let normal = Distribution::Normal(0.0, 1.0);
    [HEADS, KV_HEADS, KV_HEADS]
        .map(|h| Tensor::random([len, h * HEAD_DIM], normal, &device).require_grad())
}

fn benches(c: &mut Criterion) {
    let device = Default::default();
    let mut group = c.benchmark_group("attention_bagel7b_heads_fwd_bwd");
    group.sample_size(10);
    for len in [1024, 2048, 4096] {
        let [q, k, v] = inputs(len);
        let samples = [sample(len)];
        for (name, implementation) in [
            ("dense", AttentionImpl::Dense),
            ("blockwise", AttentionImpl::default()),
        ] {
            if implementation == AttentionImpl::Dense && len > 2048 {
                continue;
            }
            let attention =
                JointAttention::<B>::new(&samples, len, HEADS, KV_HEADS, implementation, &device)
                    .expect("valid attention");
            let ((), peak) = peak_heap_of(|| step(&attention, &q, &k, &v));
            eprintln!(
                "{name} L={len}: peak heap of one step {:.1} MiB",
                peak as f64 / (1 << 20) as f64
            );
            group.bench_function(format!("{name}/{len}"), |b| {
                b.iter(|| step(&attention, &q, &k, &v))
            });
        }
    }
    group.finish();
}

criterion_group!(attention, benches);
criterion_main!(attention);
