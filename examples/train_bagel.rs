//! UNO post-training of a BAGEL-shaped model.
//!
//! `cargo run --release --example train_bagel` trains a tiny model on the embedded
//! synthetic shapes data on the CPU in a few minutes, showing progress and leaving
//! `metrics.jsonl`, checkpoints (`step-*/model.safetensors` with BAGEL key names, EMA,
//! optimizer state) and a summary in `runs/train_bagel/`.
//!
//! Options: `--config FILE.toml` (see configs/), `--set key=value` (repeatable, dotted
//! keys, e.g. `--set optimizer.lr=1e-4`), `--data manifest.jsonl` (+ `--tokenizer
//! tokenizer.json`), `--model-dir DIR` (a BAGEL folder, e.g. one written by this example), `--backend
//! flex|ndarray|wgpu|cuda`, `--ablation sft|language|visual|joint` (paper Table 7),
//! `--resume` to continue the latest checkpoint in the output folder.

use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};
use uno_core::bagel::{Bagel, BagelConfig, save_codec};
use uno_core::burn::tensor::backend::AutodiffBackend;
use uno_core::checkpoint::UnexpectedKeys;
use uno_core::data::{Dataset, ManifestDataset, SyntheticConfig, SyntheticScenes, TextTokenizer};
use uno_core::objectives::ConditionDropoutConfig;
use uno_core::packing::PackingConfig;
use uno_core::train::{Ablation, HeldOut, PackedBatches, UnoTrainee};
use uno_core::trainer::{TrainConfig, TrainSummary, Trainer};
use uno_core::vae::Codec;

#[path = "shared/backend.rs"]
mod backend;
use backend::BackendChoice;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser, Debug)]
#[command(about = "UNO post-training of a BAGEL-shaped model")]
struct Args {
    /// TOML training config (default: the embedded configs/tiny.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Config override `key=value` (dotted keys), repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// A BAGEL folder (configs + ema.safetensors), e.g. one written by this example.
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// A JSONL manifest of real data (needs --tokenizer).
    #[arg(long)]
    data: Option<PathBuf>,
    /// A Hugging Face tokenizer.json for --data.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// A JSONL manifest of held-out data for the evaluation hook with --data (the
    /// synthetic default evaluates on scenes it never trains on).
    #[arg(long)]
    eval_data: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = BackendChoice::Flex)]
    backend: BackendChoice,
    #[arg(long, value_enum, default_value_t = AblationChoice::Joint)]
    ablation: AblationChoice,
    /// Samples packed into one micro-batch.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Continue from the latest checkpoint in the output folder.
    #[arg(long)]
    resume: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AblationChoice {
    Sft,
    Language,
    Visual,
    Joint,
}

impl From<AblationChoice> for Ablation {
    fn from(a: AblationChoice) -> Self {
        match a {
            AblationChoice::Sft => Ablation::Sft,
            AblationChoice::Language => Ablation::Language,
            AblationChoice::Visual => Ablation::Visual,
            AblationChoice::Joint => Ablation::Joint,
        }
    }
}

const TINY: &str = include_str!("../configs/tiny.toml");
/// Micro-batches in the held-out evaluation set.
const EVAL_BATCHES: usize = 2;
/// Mixed into the run's seed for the synthetic held-out scenes.
const HELD_OUT_SEED: u64 = 0x5eed_0e7a;

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), BoxError> {
    match args.backend {
        BackendChoice::Flex => train::<uno_core::backend::Autodiff<uno_core::backend::Flex>>(args),
        #[cfg(feature = "ndarray")]
        BackendChoice::Ndarray => {
            train::<uno_core::backend::Autodiff<uno_core::backend::NdArray>>(args)
        }
        #[cfg(feature = "wgpu")]
        BackendChoice::Wgpu => train::<uno_core::backend::Autodiff<uno_core::backend::Wgpu>>(args),
        #[cfg(feature = "cuda")]
        BackendChoice::Cuda => train::<uno_core::backend::Autodiff<uno_core::backend::Cuda>>(args),
        #[allow(unreachable_patterns)]
        other => Err(other.not_compiled()),
    }
}

fn train<B: AutodiffBackend>(args: Args) -> Result<(), BoxError> {
    let ablation = Ablation::from(args.ablation);
    let (caption_w, visual_w) = ablation.weights();
    let mut overrides = vec![
        format!("loss.caption={caption_w}"),
        format!("loss.visual={visual_w}"),
    ];
    overrides.extend(args.overrides.iter().cloned());
    let config = match &args.config {
        Some(path) => TrainConfig::load(Some(path), &overrides)?,
        None => TrainConfig::from_toml_str(TINY, "configs/tiny.toml (embedded)")?
            .with_overrides(&overrides)?,
    };
    let device = B::Device::default();
    // Burn's initialisers draw from the backend's global RNG: seed it so a run is
    // reproducible (the trainer seeds its own host RNG for data, noise and dropout).
    B::seed(&device, config.seed);

    // Data first: the synthetic set brings its own vocabulary.
    let (with_caption, with_metaqueries) = ablation.splits();
    let synthetic = SyntheticScenes::new(SyntheticConfig {
        image_size: config.model.resolution.max as usize,
        seed: config.seed,
        ..SyntheticConfig::default()
    })?
    .with_supervision(with_caption, with_metaqueries);

    let (mut model_config, model, codec) = match &args.model_dir {
        Some(dir) => load_model::<B>(dir, &device)?,
        None => {
            let c = BagelConfig::tiny(
                synthetic.tokenizer().vocab_size(),
                synthetic.special_tokens(),
            );
            let m = c.init::<B>(&device)?;
            (c, m, Codec::pixel())
        }
    };
    model_config.loss.caption = config.loss.caption;
    model_config.loss.visual = config.loss.visual;
    model_config.timestep_shift = config.model.timestep_shift;
    if model_config.num_metaqueries != config.model.metaqueries as usize {
        return Err(format!(
            "config model.metaqueries = {} but the model has {} metaqueries",
            config.model.metaqueries, model_config.num_metaqueries
        )
        .into());
    }

    if !args.resume && has_checkpoints(&config.output_dir) {
        return Err(format!(
            "{} already holds checkpoints: pass --resume to continue them, or --set output_dir=... for a new run",
            config.output_dir.display()
        )
        .into());
    }
    std::fs::create_dir_all(&config.output_dir)?;
    // The output folder is a BAGEL folder: configs now, weights at the end.
    model_config.save_folder(&config.output_dir)?;
    save_codec(&codec, &config.output_dir)?;

    let trainee = UnoTrainee::new(model, model_config.objective()?).with_codec(codec);
    let mut trainer = if args.resume {
        Trainer::resume_or_new(config.clone(), trainee, device.clone())?
    } else {
        Trainer::new(config.clone(), trainee, device.clone())?
    };
    let packing = model_config.packing();
    println!(
        "UNO post-training: ablation {ablation:?} (caption {caption_w}, visual {visual_w}), {} steps, output {}",
        config.iterations,
        config.output_dir.display()
    );
    let batch_size = args.batch_size;
    let side = config.model.resolution.max as usize;
    let summary = match (&args.data, &args.tokenizer) {
        (Some(manifest), Some(tokenizer)) => {
            let tokenizer = TextTokenizer::from_file(tokenizer)?;
            let open = |path: &Path| -> Result<ManifestDataset, BoxError> {
                Ok(
                    ManifestDataset::open(path, tokenizer.clone(), vec![(side, side)])?
                        .with_metaqueries(with_metaqueries),
                )
            };
            let held_out = match &args.eval_data {
                Some(path) => Some(HeldOut::new(
                    open(path)?,
                    EVAL_BATCHES,
                    batch_size,
                    packing.clone(),
                    device.clone(),
                    config.seed,
                )?),
                None => None,
            };
            let data = batches(open(manifest)?, batch_size, &packing, &device);
            fit(&mut trainer, data, held_out.as_ref())?
        }
        (Some(_), None) => return Err("--data needs --tokenizer (a tokenizer.json)".into()),
        _ => {
            // Scenes the run never trains on: the same generator under another seed.
            let unseen = SyntheticScenes::new(SyntheticConfig {
                image_size: side,
                seed: config.seed ^ HELD_OUT_SEED,
                ..SyntheticConfig::default()
            })?
            .with_supervision(with_caption, with_metaqueries);
            let held_out = HeldOut::new(
                unseen,
                EVAL_BATCHES,
                batch_size,
                packing.clone(),
                device.clone(),
                config.seed,
            )?;
            let data = batches(synthetic, batch_size, &packing, &device);
            fit(&mut trainer, data, Some(&held_out))?
        }
    };
    drop(summary); // the trainer printed it
    // The trained model as a folder `--model-dir` can load.
    let (model, ema) = trainer.into_parts()?;
    model.model.save_safetensors(
        &config.output_dir.join("model.safetensors"),
        uno_core::checkpoint::SaveDtype::F32,
    )?;
    ema.model.save_safetensors(
        &config.output_dir.join("ema.safetensors"),
        uno_core::checkpoint::SaveDtype::F32,
    )?;
    println!(
        "wrote {}/{{ema,model}}.safetensors (BAGEL key names) and its configs",
        config.output_dir.display()
    );
    Ok(())
}

/// Micro-batches of `dataset` with BAGEL's condition dropout.
fn batches<B: AutodiffBackend, D: Dataset>(
    dataset: D,
    batch_size: usize,
    packing: &PackingConfig,
    device: &B::Device,
) -> PackedBatches<D, B> {
    PackedBatches {
        dataset,
        batch_size,
        packing: packing.clone(),
        dropout: ConditionDropoutConfig::new(),
        device: device.clone(),
    }
}

/// Train; every `metrics.eval_every` steps evaluate the model and its EMA on `held_out`
/// (`eval_*` and `ema_eval_*` lines in metrics.jsonl).
fn fit<B: AutodiffBackend, D: Dataset>(
    trainer: &mut Trainer<B, UnoTrainee<B>>,
    mut data: PackedBatches<D, B>,
    held_out: Option<&HeldOut<B>>,
) -> Result<TrainSummary, BoxError> {
    let Some(held_out) = held_out else {
        return Ok(trainer.fit(&mut data, None)?);
    };
    let mut hook = |_step: u64, model: &UnoTrainee<B>, ema: &UnoTrainee<B>| {
        let mut values = held_out.evaluate(model, "eval_")?;
        values.extend(held_out.evaluate(ema, "ema_eval_")?);
        Ok(values)
    };
    Ok(trainer.fit(&mut data, Some(&mut hook))?)
}

/// A BAGEL folder's configuration, weights and codec (FLUX `ae.safetensors` for a release).
fn load_model<B: AutodiffBackend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(BagelConfig, Bagel<B>, Codec<B>), BoxError> {
    let (config, model, _) = Bagel::load_folder(dir, device, UnexpectedKeys::Warn)?;
    let codec = config.load_codec(dir, device)?;
    Ok((config, model, codec))
}

fn has_checkpoints(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().starts_with("step-"))
    })
}
