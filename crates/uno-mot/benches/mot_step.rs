//! Forward + backward of a small MoT (hidden 256, 4 layers, 4 heads / 2 KV heads,
//! intermediate 1024) on one 1024-token sample, half und / half gen, on the CPU backends
//! under `Autodiff`.
//!
//! Throughput is reported as FLOP/s (criterion's "elem/s"), counting matmul FLOPs only:
//! per layer and token `2 * (h*h [q] + 2*h*kv_dim [k, v] + h*h [o] + 3*h*I [mlp])`, plus per
//! layer `2 * 2 * L^2 * h` for `q k^T` and `p v` (full square, masked entries included, as
//! the dense kernel computes them; the default blockwise attention skips the masked upper
//! tiles of the text half); backward = 2 x forward, so a step = 3 x forward.
//!
//! `flex_dense` runs the same step with the dense attention instead of the default
//! blockwise one.
//!
//! Run: `cargo bench --workspace --features ndarray --bench mot_step -- --sample-size 10`;
//! the same step in PyTorch eager: `python3 tools/mot_step_bench.py` (docs/performance.md
//! has both, measured in one sitting).

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use uno_mot::{AttentionImpl, MotConfig, MotModel, Routing, SampleAttention};

#[path = "common/text_image.rs"]
mod text_image;
use text_image::text_image;

const TOKENS: usize = 1024;

/// Matmul FLOPs of one forward + backward step (see the module docs).
fn step_flops(c: &MotConfig, l: usize) -> u64 {
    let (h, i) = (c.hidden_size as u64, c.intermediate_size as u64);
    let kv = (c.num_key_value_heads * c.head_dim()) as u64;
    let l = l as u64;
    let per_token = 2 * (h * h + 2 * h * kv + h * h + 3 * h * i);
    let attn = 4 * l * l * h;
    3 * c.num_hidden_layers as u64 * (per_token * l + attn)
}

struct Setup<B: Backend> {
    model: MotModel<B>,
    hidden: Tensor<B, 2>,
    routing: Routing<B>,
    position_ids: Tensor<B, 1, Int>,
    samples: Vec<SampleAttention>,
    weights: Tensor<B, 2>,
}

/// The model and a [`text_image`] sample of [`TOKENS`] tokens.
fn setup<B: Backend>(config: &MotConfig) -> Setup<B> {
    let device = B::Device::default();
    B::seed(&device, 0);
    let model = config.init::<B>(&device).expect("valid config");
    let (routing, position_ids, samples) = text_image::<B>(TOKENS, &device);
    let normal = Distribution::Normal(0.0, 1.0);
    Setup {
        model,
        hidden: Tensor::random([TOKENS, config.hidden_size], normal, &device),
        routing,
        position_ids,
        samples,
        weights: Tensor::random([TOKENS, config.hidden_size], normal, &device),
    }
}

fn bench_backend<B: Backend>(c: &mut Criterion, name: &str) {
    bench_attention::<B>(c, name, AttentionImpl::default());
}

fn bench_attention<B: Backend>(c: &mut Criterion, name: &str, attention: AttentionImpl) {
    let config = MotConfig {
        attention,
        ..MotConfig::small()
    };
    let s = setup::<Autodiff<B>>(&config);
    let mut group = c.benchmark_group("mot_fwd_bwd_h256_l4_1k");
    group.throughput(Throughput::Elements(step_flops(&config, TOKENS)));
    group.bench_function(name, |b| {
        b.iter(|| {
            let out = s
                .model
                .forward(
                    s.hidden.clone(),
                    &s.routing,
                    s.position_ids.clone(),
                    &s.samples,
                )
                .unwrap();
            let loss = (out * s.weights.clone()).sum();
            let grads = loss.backward();
            // Async backends (wgpu, cuda) must finish the step inside the timing.
            Autodiff::<B>::sync(&B::Device::default()).unwrap();
            std::hint::black_box(grads)
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let config = MotConfig::small();
    eprintln!(
        "step FLOPs (matmul only, fwd + bwd): {:.3} GFLOP",
        step_flops(&config, TOKENS) as f64 / 1e9
    );
    bench_backend::<burn::backend::Flex>(c, "flex");
    // The dense attention (scores kept for the backward; affordable at 1k tokens), to
    // compare with the default blockwise one side by side.
    bench_attention::<burn::backend::Flex>(c, "flex_dense", AttentionImpl::Dense);
    #[cfg(feature = "ndarray")]
    bench_backend::<burn::backend::NdArray>(c, "ndarray");
    #[cfg(feature = "wgpu")]
    bench_backend::<burn::backend::Wgpu>(c, "wgpu");
    #[cfg(feature = "cuda")]
    bench_backend::<burn::backend::Cuda>(c, "cuda");
}

criterion_group!(mot, benches);
criterion_main!(mot);
