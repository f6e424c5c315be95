//! Generate images from a BAGEL folder: flags in, [`uno_core::generate::sample_grid`] does
//! the rest (one row per prompt, one column per seed, BAGEL's sampler and classifier-free
//! guidance).
//!
//! `cargo run --release --example generate` samples the model the default training run
//! leaves (`runs/train_bagel`, its EMA weights) on four prompts of held-out synthetic
//! scenes, writes `runs/train_bagel/samples.png` and prints each row's prompt (and, with
//! `--caption`, what the understanding path says about each image).
//!
//! Options: `--model-dir DIR` (any BAGEL folder; a release needs `--tokenizer`),
//! `--prompt TEXT` (repeatable), `--seeds 0,1,2`, `--steps 50`, `--cfg-text 4.0`,
//! `--source IMAGE` (edit it: each prompt is an instruction), `--cfg-img 1.5` (editing
//! only), `--shift 3.0`, `--size 32`, `--out FILE.png`,
//! `--backend flex|ndarray|wgpu|cuda`.

use std::path::PathBuf;

use clap::Parser;
use uno_core::burn::tensor::backend::Backend;
use uno_core::generate::{CaptionConfig, GridSpec, Guidance, SamplerConfig, sample_grid};

#[path = "shared/backend.rs"]
mod backend;
use backend::BackendChoice;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser, Debug)]
#[command(about = "Generate a PNG grid from a BAGEL folder")]
struct Args {
    /// A BAGEL folder (default: what `cargo run --release --example train_bagel` leaves).
    #[arg(long, default_value = "runs/train_bagel")]
    model_dir: PathBuf,
    /// A Hugging Face tokenizer.json (default: the synthetic data's word-level tokenizer).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// A prompt, repeatable (default: four held-out synthetic scenes).
    #[arg(long = "prompt")]
    prompts: Vec<String>,
    /// Comma-separated noise seeds: one grid column each.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    seeds: Vec<u64>,
    #[arg(long, default_value_t = 50)]
    steps: usize,
    #[arg(long, default_value_t = 4.0)]
    cfg_text: f64,
    #[arg(long, default_value_t = 1.5)]
    cfg_img: f64,
    #[arg(long, default_value_t = 3.0)]
    shift: f64,
    /// Image side in pixels.
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// Edit this image instead (each prompt an instruction; the output takes the size of
    /// its codec copy, made by the folder's training transforms).
    #[arg(long)]
    source: Option<PathBuf>,
    /// Output PNG (default: samples.png in the model folder).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also caption every generated image (greedy) through the understanding path.
    #[arg(long)]
    caption: bool,
    #[arg(long, value_enum, default_value_t = BackendChoice::Flex)]
    backend: BackendChoice,
}

fn main() {
    let args = Args::parse();
    let result = match args.backend {
        BackendChoice::Flex => run::<uno_core::backend::Flex>(args),
        #[cfg(feature = "ndarray")]
        BackendChoice::Ndarray => run::<uno_core::backend::NdArray>(args),
        #[cfg(feature = "wgpu")]
        BackendChoice::Wgpu => run::<uno_core::backend::Wgpu>(args),
        #[cfg(feature = "cuda")]
        BackendChoice::Cuda => run::<uno_core::backend::Cuda>(args),
        #[allow(unreachable_patterns)]
        other => Err(other.not_compiled()),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run<B: Backend>(args: Args) -> Result<(), BoxError> {
    let spec = GridSpec {
        model_dir: args.model_dir,
        tokenizer: args.tokenizer,
        prompts: args.prompts,
        seeds: args.seeds,
        size: args.size,
        source: args.source,
        sampler: SamplerConfig {
            steps: args.steps,
            timestep_shift: args.shift,
            guidance: Guidance {
                text_scale: args.cfg_text,
                image_scale: args.cfg_img,
                ..Guidance::default()
            },
            kv_cache: true,
        },
        caption: args.caption.then(|| CaptionConfig {
            max_tokens: 16,
            ..CaptionConfig::default()
        }),
        out: args.out,
    };
    let report = sample_grid::<B>(&spec, &Default::default())?;
    for (row, prompt) in report.prompts.iter().enumerate() {
        println!("row {row}: {prompt}");
        for (seed, caption) in spec
            .seeds
            .iter()
            .zip(report.captions.get(row).into_iter().flatten())
        {
            println!("  seed {seed} caption: {caption}");
        }
    }
    println!(
        "wrote {} ({} prompts x {} seeds, {} steps, text CFG {})",
        report.path.display(),
        report.prompts.len(),
        spec.seeds.len(),
        spec.sampler.steps,
        spec.sampler.guidance.text_scale
    );
    Ok(())
}
