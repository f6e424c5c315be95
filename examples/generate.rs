//! Generate images from a BAGEL folder: prompts in, a PNG grid out (one row per prompt,
//! one column per seed), with BAGEL's sampler and classifier-free guidance.
//!
//! `cargo run --release --example generate` samples the model the default training run
//! leaves (`runs/train_bagel`, its EMA weights) on four prompts of held-out synthetic
//! scenes, writes `runs/train_bagel/samples.png` and prints each row's prompt (and, with
//! `--caption`, what the understanding path says about each image).
//!
//! Options: `--model-dir DIR` (any BAGEL folder; a release needs `--tokenizer`),
//! `--prompt TEXT` (repeatable), `--seeds 0,1,2`, `--steps 50`, `--cfg-text 4.0`,
//! `--cfg-img 1.5` (editing only), `--shift 3.0`, `--size 32`, `--out FILE.png`,
//! `--backend flex|ndarray|wgpu|cuda`.

use std::path::{Path, PathBuf};

use clap::Parser;
use uno_core::bagel::Bagel;
use uno_core::burn::tensor::backend::Backend;
use uno_core::checkpoint::UnexpectedKeys;
use uno_core::data::{SyntheticConfig, SyntheticScenes, TextTokenizer};
use uno_core::generate::{
    CaptionConfig, Generator, Guidance, ImageRequest, SamplerConfig, grid, save_png,
};
use uno_core::packing::ImageSize;

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
    let device = B::Device::default();
    let dir = &args.model_dir;
    if !dir.is_dir() {
        return Err(format!(
            "{} is not a folder: train one with `cargo run --release --example train_bagel`, or pass --model-dir",
            dir.display()
        )
        .into());
    }
    let (config, model, _) = Bagel::<B>::load_folder(dir, &device, UnexpectedKeys::Warn)?;
    let codec = config.load_codec::<B>(dir, &device)?;
    let (tokenizer, prompts) = tokenizer_and_prompts(&args, config.llm.vocab_size)?;

    let generator = Generator {
        model: &model,
        codec: &codec,
        packing: config.packing(),
    };
    let sampler = SamplerConfig {
        steps: args.steps,
        timestep_shift: args.shift,
        guidance: Guidance {
            text_scale: args.cfg_text,
            image_scale: args.cfg_img,
            ..Guidance::default()
        },
        kv_cache: true,
    };
    let mut requests = Vec::new();
    for prompt in &prompts {
        let tokens = tokenizer.encode(prompt)?;
        for &seed in &args.seeds {
            requests.push(ImageRequest {
                prompt: tokens.clone(),
                size: ImageSize::new(args.size, args.size),
                source: None,
                seed,
            });
        }
    }
    let images = generator.generate(&requests, &sampler)?;
    for (row, prompt) in prompts.iter().enumerate() {
        println!("row {row}: {prompt}");
        if args.caption {
            for (col, seed) in args.seeds.iter().enumerate() {
                let image = images[row * args.seeds.len() + col].clone();
                let caption = CaptionConfig {
                    max_tokens: 16,
                    ..CaptionConfig::default()
                };
                let tokens = generator.caption(image, None, &caption)?;
                println!("  seed {seed} caption: {}", tokenizer.decode(&tokens)?);
            }
        }
    }
    let canvas = grid(images, args.seeds.len().max(1))?;
    let out = args.out.clone().unwrap_or_else(|| dir.join("samples.png"));
    save_png(&canvas, &out)?;
    println!(
        "wrote {} ({} prompts x {} seeds, {} steps, text CFG {})",
        out.display(),
        prompts.len(),
        args.seeds.len(),
        args.steps,
        args.cfg_text
    );
    Ok(())
}

/// The tokenizer (the given file, else the synthetic vocabulary, which must match the
/// model's) and the prompts (given, else held-out synthetic scenes).
fn tokenizer_and_prompts(
    args: &Args,
    vocab_size: usize,
) -> Result<(TextTokenizer, Vec<String>), BoxError> {
    let synthetic = SyntheticScenes::new(SyntheticConfig {
        image_size: args.size,
        seed: 0x5eed_0e7a,
        ..SyntheticConfig::default()
    })?;
    let tokenizer = match &args.tokenizer {
        Some(path) => TextTokenizer::from_file(Path::new(path))?,
        None if synthetic.tokenizer().vocab_size() == vocab_size => synthetic.tokenizer().clone(),
        None => {
            return Err(format!(
                "the model's vocabulary has {vocab_size} tokens, not the synthetic set's {}: pass --tokenizer tokenizer.json",
                synthetic.tokenizer().vocab_size()
            )
            .into());
        }
    };
    let prompts = if args.prompts.is_empty() {
        (0..4).map(|i| synthetic.scene(i).prompt()).collect()
    } else {
        args.prompts.clone()
    };
    Ok((tokenizer, prompts))
}
