//! One forward + backward of a BAGEL-7B-shaped MoT decoder (hidden 3584, 28 query / 4 KV
//! heads, head 128, intermediate 18944) on one UNO-shaped sample, timed: the GPU half of
//! `benches/gpu/README.md`. On CPU the same binary measures memory: on Linux every line
//! also gives the process's peak resident memory so far (`VmHWM`), so one process per
//! configuration gives its peak (the attention alone is the criterion bench
//! `crates/uno-mot/benches/attention.rs`).
//!
//! The sample is the paper's average layout scaled to `--tokens` (Table 12: 171 prompt +
//! 3362 image + 80 caption + 256 metaquery tokens at 3869): causal prompt, a noised image
//! (generation expert) that sees the prompt, then the caption and the metaqueries, which see
//! only the image. Prints one line per token count: milliseconds per step, tokens/s and the
//! model FLOP utilisation against `--peak-tflops` (matmul FLOPs, attention over the visible
//! tiles only).
//!
//! Precisions (`--precision`): `f32`; `bf16` (every tensor bf16, the default float type);
//! `bf16-mixed` (UNO's training setup under `model.precision = "bf16_mixed"`: the
//! understanding expert frozen and stored in bf16, the generation expert's f32 master
//! weights cast at use, bf16 activations). `--freeze-und` freezes the understanding expert
//! in the other two (`bf16-mixed` always does), as UNO trains. `--checkpoint` runs the step
//! with per-layer activation checkpointing (`MotModel::forward_taped`), as training does
//! above `model.checkpoint_above_tokens`; the FLOPs and MFU then leave the recompute out.
//!
//! `cargo run --release --example step_bench --features cuda -- --backend cuda --layers 2
//! --tokens 1024,2048,4096 --attention blockwise --precision bf16`

use clap::{Parser, ValueEnum};
use uno_core::burn::backend::Autodiff;
use uno_core::burn::optim::GradientsParams;
use uno_core::burn::tensor::backend::Backend;
use uno_core::burn::tensor::{
    Distribution, FloatDType, Int, IntDType, Tensor, TensorData, set_default_dtypes,
};
use uno_core::mot::{AttentionImpl, AttnSegment, MotConfig, MotModel, Routing, SampleAttention};

#[path = "shared/backend.rs"]
mod backend;
use backend::BackendChoice;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser, Debug)]
#[command(about = "Time a BAGEL-7B-shaped MoT forward + backward")]
struct Args {
    #[arg(long, value_enum, default_value_t = BackendChoice::Flex)]
    backend: BackendChoice,
    /// Decoder layers (BAGEL-7B has 28).
    #[arg(long, default_value_t = 1)]
    layers: usize,
    /// Sample lengths, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1024")]
    tokens: Vec<usize>,
    #[arg(long, value_enum, default_value_t = Attention::Blockwise)]
    attention: Attention,
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    precision: Precision,
    /// Freeze the understanding expert (no gradients for it), as UNO trains.
    #[arg(long)]
    freeze_und: bool,
    /// Per-layer activation checkpointing (`model.checkpoint_layers`): keep only each
    /// layer's input and recompute the layer in the backward.
    #[arg(long)]
    checkpoint: bool,
    /// Timed steps after one warm-up step.
    #[arg(long, default_value_t = 3)]
    iters: usize,
    /// Dense peak of the device in TFLOP/s for the utilisation figure (H200 bf16: 989).
    #[arg(long, default_value_t = 989.0)]
    peak_tflops: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Precision {
    F32,
    Bf16,
    Bf16Mixed,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Attention {
    Dense,
    Blockwise,
}

fn main() {
    let args = Args::parse();
    let result = match args.backend {
        BackendChoice::Flex => run::<uno_core::backend::Flex>(&args),
        #[cfg(feature = "ndarray")]
        BackendChoice::Ndarray => run::<uno_core::backend::NdArray>(&args),
        #[cfg(feature = "wgpu")]
        BackendChoice::Wgpu => run::<uno_core::backend::Wgpu>(&args),
        #[cfg(feature = "cuda")]
        BackendChoice::Cuda => run::<uno_core::backend::Cuda>(&args),
        #[allow(unreachable_patterns)]
        other => Err(other.not_compiled()),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// The paper's average sample (171 / 3362 / 80 / 256 of 3869) scaled to `len` tokens:
/// `(prompt, image, caption, metaqueries)`.
fn layout(len: usize) -> [usize; 4] {
    let scale = |n: usize| (n * len / 3869).max(1);
    let (prompt, caption, metaqueries) = (scale(171), scale(80), scale(256));
    [
        prompt,
        len - prompt - caption - metaqueries,
        caption,
        metaqueries,
    ]
}

/// Matmul FLOPs of one forward + backward: projections and MLP per token, and `q k^T`, `p v`
/// over the query/key pairs the mask lets through (backward = 2 x forward).
fn step_flops(c: &MotConfig, sample: &SampleAttention) -> f64 {
    let (h, i) = (c.hidden_size as f64, c.intermediate_size as f64);
    let kv = (c.num_key_value_heads * c.head_dim()) as f64;
    let per_token = 2.0 * (h * h + 2.0 * h * kv + h * h + 3.0 * h * i);
    let visible = sample.dense().iter().filter(|masked| !**masked).count() as f64;
    let attn = 4.0 * visible * h;
    3.0 * c.num_hidden_layers as f64 * (per_token * sample.len() as f64 + attn)
}

fn run<B: Backend>(args: &Args) -> Result<(), BoxError> {
    let device = B::Device::default();
    if args.precision == Precision::Bf16 {
        set_default_dtypes::<B>(&device, FloatDType::BF16, IntDType::I32)?;
    }
    let mut config = MotConfig::bagel_7b();
    config.num_hidden_layers = args.layers;
    config.attention = match args.attention {
        Attention::Dense => AttentionImpl::Dense,
        Attention::Blockwise => AttentionImpl::default(),
    };
    let mut model: MotModel<Autodiff<B>> = config.init(&device)?;
    if args.freeze_und || args.precision == Precision::Bf16Mixed {
        model = model.freeze_und();
    }
    if args.precision == Precision::Bf16Mixed {
        model = model
            .store_und_as(FloatDType::BF16)
            .with_compute_dtype(FloatDType::BF16);
    }
    for &len in &args.tokens {
        let [prompt, image, caption, metaqueries] = layout(len);
        let seg = |start, len, causal_inside, sees: Vec<usize>| AttnSegment {
            start,
            len,
            causal_inside,
            sees,
        };
        let sample = SampleAttention::new(
            0,
            vec![
                seg(0, prompt, true, vec![]),
                seg(prompt, image, false, vec![0]),
                seg(prompt + image, caption, true, vec![1]),
                seg(prompt + image + caption, metaqueries, true, vec![1]),
            ],
        )?;
        let gen_rows: Vec<usize> = (prompt..prompt + image).collect();
        let und_rows: Vec<usize> = (0..len).filter(|r| !gen_rows.contains(r)).collect();
        let routing = Routing::from_indices(&und_rows, &gen_rows, len, &device)?;
        let positions: Vec<i64> = (0..len as i64)
            .map(|r| match r as usize {
                r if r < prompt => r as i64,
                r if r < prompt + image => prompt as i64,
                r => (r - image + 1) as i64,
            })
            .collect();
        let positions =
            Tensor::<Autodiff<B>, 1, Int>::from_data(TensorData::new(positions, [len]), &device);
        let normal = Distribution::Normal(0.0, 1.0);
        let hidden = Tensor::<Autodiff<B>, 2>::random([len, config.hidden_size], normal, &device);
        let weights = Tensor::<Autodiff<B>, 2>::random([len, config.hidden_size], normal, &device);
        let samples = [sample];
        // Down to the parameters' gradients, as a training step hands them to its optimiser.
        let step = || -> Result<(), BoxError> {
            let grads = if args.checkpoint {
                let (out, tape) =
                    model.forward_taped(hidden.clone(), &routing, positions.clone(), &samples)?;
                tape.gradients(&model, &model, &routing, (out * weights.clone()).sum())?
            } else {
                let out = model.forward(hidden.clone(), &routing, positions.clone(), &samples)?;
                GradientsParams::from_grads((out * weights.clone()).sum().backward(), &model)
            };
            B::sync(&device)?;
            drop(grads);
            Ok(())
        };
        step()?; // warm-up: kernel compilation and the memory pool
        let start = std::time::Instant::now();
        for _ in 0..args.iters {
            step()?;
        }
        let seconds = start.elapsed().as_secs_f64() / args.iters as f64;
        let flops = step_flops(&config, &samples[0]);
        println!(
            "tokens {len} layers {} attention {:?} {:?}{}{}: {:.1} ms/step, {:.0} tokens/s, {:.1} TFLOP/s, MFU {:.1}%{}",
            args.layers,
            args.attention,
            args.precision,
            if args.freeze_und { " (und frozen)" } else { "" },
            if args.checkpoint { " checkpointed" } else { "" },
            seconds * 1e3,
            len as f64 / seconds,
            flops / seconds / 1e12,
            100.0 * flops / seconds / 1e12 / args.peak_tflops,
            peak_rss().map_or(String::new(), |kib| format!(
                ", peak host memory {:.0} MiB",
                kib as f64 / 1024.0
            ))
        );
    }
    Ok(())
}

/// The process's peak resident set (`VmHWM`, KiB) on Linux; `None` elsewhere.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
