//! One UNO step at BAGEL-7B-MoT's true dimensions (hidden 3584, 28 query / 4 KV heads,
//! intermediate 18944, vocabulary 152064, SigLIP hidden 1152 with 14-px patches, the FLUX
//! autoencoder) but 1 decoder layer and 1 ViT layer, randomly initialised, on the paper's
//! data path: a 1024x768 target through BAGEL's VAE-side (1024x768, 3072 latent tokens)
//! and ViT-side (518x392, 37 x 28 patches) transforms, a 171-token prompt, an 80-token
//! caption and 256 metaqueries (Table 12's average sample). Prints the token composition,
//! the step time (one warm-up step, then `--iters` timed ones) and the process's peak host
//! memory; measure device memory outside (see `benches/gpu/run.sh`).
//!
//! Not run in CI. `cargo run --release --example paper_shapes --features cuda -- --backend
//! cuda` (add `--bf16` for bf16 weights and activations).

use clap::Parser;
use uno_core::bagel::{BagelConfig, LossNormalization, UnoBatch};
use uno_core::burn::backend::Autodiff;
use uno_core::burn::module::Module;
use uno_core::burn::tensor::backend::Backend;
use uno_core::burn::tensor::{FloatDType, IntDType, Tensor, TensorData, set_default_dtypes};
use uno_core::data::{ImageTransforms, RgbImage};
use uno_core::packing::{ImageSize, PackedSequence, Sample};

#[path = "shared/backend.rs"]
mod backend;
use backend::BackendChoice;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser, Debug)]
#[command(about = "One UNO step at BAGEL-7B's dimensions (1 layer) on a 1024x768 target")]
struct Args {
    #[arg(long, value_enum, default_value_t = BackendChoice::Flex)]
    backend: BackendChoice,
    /// Run every tensor in bf16 (weights, activations, gradients).
    #[arg(long)]
    bf16: bool,
    /// Timed steps after one warm-up step.
    #[arg(long, default_value_t = 2)]
    iters: usize,
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

/// A `width x height` image of smooth colour ramps.
fn ramp(width: usize, height: usize) -> RgbImage {
    let mut image = RgbImage::filled(height, width, [0.0; 3]);
    for row in 0..height {
        for col in 0..width {
            let (y, x) = (row as f32 / height as f32, col as f32 / width as f32);
            image.set_pixel(row, col, [x, y, 0.5 * (x + y)]);
        }
    }
    image
}

/// Peak resident memory of this process (Linux `VmHWM`), in MiB.
fn peak_host_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn run<B: Backend>(args: &Args) -> Result<(), BoxError> {
    type A<B> = Autodiff<B>;
    let device = B::Device::default();
    if args.bf16 {
        set_default_dtypes::<B>(&device, FloatDType::BF16, IntDType::I32)?;
    }
    let mut config = BagelConfig::bagel_7b();
    config.llm.num_hidden_layers = 1;
    config.vit.num_hidden_layers = 1;
    config.vit.layers_used = Some(1);
    let started = std::time::Instant::now();
    let model = config.init::<A<B>>(&device)?.freeze_for_uno();
    let codec = uno_core::vae::Codec::flux(
        uno_core::vae::FluxAeConfig::flux()
            .init::<A<B>>(&device)?
            .no_grad(),
    );
    println!("model built in {:.1} s", started.elapsed().as_secs_f64());

    let pair = ImageTransforms::bagel().apply(&ramp(1024, 768))?;
    let ids = |n: usize, from: u32| (from..from + n as u32).collect::<Vec<_>>();
    let sample = Sample::text_to_image(
        ids(171, 1000),
        ImageSize::new(pair.vae.height, pair.vae.width),
        ids(80, 5000),
    );
    let pack = PackedSequence::pack(&[sample], &config.packing())?;
    let c = pack.composition();
    println!(
        "target {}x{} (VAE copy {}x{}, ViT copy {}x{}); tokens: prompt {} / image {} / caption {} / metaquery {} = {}",
        1024,
        768,
        pair.vae.width,
        pair.vae.height,
        pair.vit.width,
        pair.vit.height,
        c.text,
        c.image,
        c.caption,
        c.metaqueries,
        c.total()
    );
    let upload = |image: &RgbImage| {
        Tensor::<A<B>, 3>::from_data(
            TensorData::new(image.data.clone(), [3, image.height, image.width]),
            &device,
        )
    };
    let (images, vit_targets) = ([upload(&pair.vae)], [upload(&pair.vit)]);
    let objective = config.objective()?;
    let step = |seed: u64| -> Result<f64, BoxError> {
        let batch = UnoBatch {
            pack: &pack,
            images: &images,
            vit_targets: &vit_targets,
            noise_seed: seed,
            normalization: LossNormalization::PerPack,
        };
        let out = model.uno_forward(batch, &codec, &objective)?;
        let total = out.loss.total.clone().into_scalar();
        let grads = out.loss.total.backward();
        B::sync(&device)?;
        drop(grads);
        Ok(uno_core::burn::tensor::ElementConversion::elem::<f64>(
            total,
        ))
    };
    let started = std::time::Instant::now();
    let loss = step(0)?;
    println!(
        "warm-up step: {:.2} s, loss {loss:.4}",
        started.elapsed().as_secs_f64()
    );
    let started = std::time::Instant::now();
    for i in 0..args.iters {
        step(1 + i as u64)?;
    }
    let seconds = started.elapsed().as_secs_f64() / args.iters.max(1) as f64;
    println!(
        "{} {}: {:.2} s/step, {:.0} tokens/s; peak host memory {} MiB",
        format!("{:?}", args.backend).to_lowercase(),
        if args.bf16 { "bf16" } else { "f32" },
        seconds,
        pack.len as f64 / seconds,
        peak_host_mib().map_or("?".into(), |m| format!("{m:.0}"))
    );
    Ok(())
}
