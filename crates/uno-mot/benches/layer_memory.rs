//! Activation memory of a training step with and without per-layer checkpointing
//! ([`MotModel::forward_taped`] + [`uno_mot::DecoderTape::backward`] against the plain
//! forward + `backward()`), blockwise attention, on flex.
//!
//! The decoder has BAGEL-7B's proportions at an eighth of its width, so that a CPU runs it
//! in seconds: 28 query / 4 KV heads of 16 (hidden 448), intermediate 2368 (BAGEL: 3584,
//! head 128, 18944), both experts; the sample is half causal text (understanding), half an
//! image that sees the text (generation). Every parameter trains, so both experts'
//! gradients are in the figures, as in a pretraining step; under UNO the frozen expert has
//! none.
//!
//! Before timing, each case runs once under a counting global allocator and prints the
//! peak heap of the step above what was live before it (weights and inputs excluded):
//! the activations kept for the backward, the gradients and the largest temporaries.
//! Criterion then times the 4-layer, 2048-token step both ways (the recompute's cost).
//!
//! Run: `cargo bench -p uno-mot --bench layer_memory -- --sample-size 10`

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use uno_mot::{MotConfig, MotModel, Routing, SampleAttention};
use uno_testing::{PeakAlloc, peak_heap_of};

#[path = "common/text_image.rs"]
mod text_image;
use text_image::text_image;

#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc;

type B = Autodiff<Flex>;

/// One step's inputs: the decoder input, routing, positions, attention and loss weights.
struct Step {
    hidden: Tensor<B, 2>,
    routing: Routing<B>,
    position_ids: Tensor<B, 1, Int>,
    samples: Vec<SampleAttention>,
    weights: Tensor<B, 2>,
}

/// BAGEL-7B's decoder at an eighth of its width, with `layers` layers.
fn config(layers: usize) -> MotConfig {
    MotConfig {
        hidden_size: 3584 / 8,
        intermediate_size: 18944 / 8,
        ..MotConfig::bagel_7b()
    }
    .with_layers(layers)
}

/// A [`text_image`] sample of `len` tokens, its input rows and loss weights.
fn step_inputs(len: usize, hidden: usize) -> Step {
    let device = Default::default();
    let (routing, position_ids, samples) = text_image::<B>(len, &device);
    let normal = Distribution::Normal(0.0, 1.0);
    Step {
        hidden: Tensor::random([len, hidden], normal, &device),
        routing,
        position_ids,
        samples,
        weights: Tensor::random([len, hidden], normal, &device),
    }
}

/// One forward + backward, plain or taped, down to the parameters' gradients.
fn train_step(model: &MotModel<B>, s: &Step, taped: bool) -> GradientsParams {
    let input = s.hidden.clone().require_grad();
    let (position_ids, samples) = (s.position_ids.clone(), &s.samples);
    let grads = match taped {
        true => {
            let (out, tape) = model
                .forward_taped(input, &s.routing, position_ids, samples)
                .unwrap();
            tape.gradients(model, model, &s.routing, (out * s.weights.clone()).sum())
                .unwrap()
        }
        false => {
            let out = model
                .forward(input, &s.routing, position_ids, samples)
                .unwrap();
            GradientsParams::from_grads((out * s.weights.clone()).sum().backward(), model)
        }
    };
    B::sync(&Default::default()).unwrap();
    grads
}

fn benches(c: &mut Criterion) {
    let device = Default::default();
    let mib = |bytes: usize| bytes as f64 / (1 << 20) as f64;
    for (layers, len) in [(2, 2048), (4, 2048), (4, 1024)] {
        B::seed(&device, 0);
        let model = config(layers).init::<B>(&device).unwrap();
        let step = step_inputs(len, model.hidden_size);
        let weights = model.num_params() * 4;
        for taped in [false, true] {
            let (grads, peak) = peak_heap_of(|| train_step(&model, &step, taped));
            drop(grads);
            eprintln!(
                "{} layers={layers} L={len}: peak heap of one step {:.1} MiB (weights {:.1} MiB)",
                if taped { "taped" } else { "plain" },
                mib(peak),
                mib(weights),
            );
        }
        if (layers, len) == (4, 2048) {
            let mut group = c.benchmark_group("layer_memory_h448_l4_2k");
            group.sample_size(10);
            for taped in [false, true] {
                let name = if taped { "taped" } else { "plain" };
                group.bench_function(name, |b| b.iter(|| train_step(&model, &step, taped)));
            }
            group.finish();
        }
    }
}

criterion_group!(layer_memory, benches);
criterion_main!(layer_memory);
