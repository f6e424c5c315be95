//! UNO post-training of a BAGEL-shaped model: flags in, [`uno_core::train::run`] does the
//! rest.
//!
//! `cargo run --release --example train_bagel` trains a tiny model on the embedded
//! synthetic shapes data on the CPU in a few minutes, showing progress and leaving
//! `metrics.jsonl`, checkpoints (`step-*/model.safetensors` with BAGEL key names, EMA,
//! optimizer state) and the final weights in `runs/train_bagel/`.
//!
//! Options: `--config FILE.toml` (see configs/; default: the embedded tiny run),
//! `--set key=value` (repeatable, dotted keys, e.g. `--set optimizer.lr=1e-4`), `--data
//! manifest.jsonl --tokenizer tokenizer.json` (real images), `--model-dir DIR` (a BAGEL
//! folder, e.g. one written by this example), `--backend flex|ndarray|wgpu|cuda`,
//! `--ablation sft|language|visual|joint` (paper Table 7: sets the `[loss]` weights after
//! `--config` and before `--set`), `--resume` to continue the latest checkpoint
//! (`--allow-config-change` to resume with settings that break exact resume), `--devices N`
//! (data parallel on N peers: `cuda:0..N-1` with `--backend cuda`, N threads sharing the
//! CPU on a CPU backend; docs/distributed.md).
//!
//! SIGTERM / SIGINT finish the current step, write a checkpoint and exit with status 75
//! (EX_TEMPFAIL: resume to continue); a second signal exits at once with status 130.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use uno_core::burn::tensor::backend::AutodiffBackend;
use uno_core::train::{
    Ablation, BatchFill, ModelSource, RunConfig, RunError, RunSpec, TrainData, devices,
    run_parallel,
};
use uno_core::trainer::{TrainError, install_stop_signals};

#[path = "shared/backend.rs"]
mod backend;
use backend::BackendChoice;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser, Debug)]
#[command(about = "UNO post-training of a BAGEL-shaped model")]
struct Args {
    /// TOML run config (default: the embedded tiny run, uno-core's configs/tiny.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Config override `key=value` (dotted keys), repeatable; applied last.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// A BAGEL folder (configs + ema.safetensors), e.g. one written by this example.
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// A JSONL manifest of real data (needs --tokenizer).
    #[arg(long, requires = "tokenizer")]
    data: Option<PathBuf>,
    /// A Hugging Face tokenizer.json for --data.
    #[arg(long, requires = "data")]
    tokenizer: Option<PathBuf>,
    /// A JSONL manifest of held-out data for the evaluation hook with --data (the
    /// synthetic default evaluates on scenes it never trains on).
    #[arg(long, requires = "data")]
    eval_data: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = BackendChoice::Flex)]
    backend: BackendChoice,
    /// Loss ablation (paper Table 7); default: the config's `[loss]` weights.
    #[arg(long, value_enum)]
    ablation: Option<AblationChoice>,
    /// Samples packed into one micro-batch, instead of the config's fill (a token budget
    /// included); applied before `--set`.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Continue from the latest checkpoint in the output folder.
    #[arg(long)]
    resume: bool,
    /// With --resume: accept changed settings even where they break exact resume.
    #[arg(long, requires = "resume")]
    allow_config_change: bool,
    /// Data-parallel peers, one per device (`cuda:0..N-1`; on a CPU backend N threads
    /// sharing the CPU). Each reads `grad_accumulation` micro-batches per step, so the
    /// global batch grows with N.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    devices: u16,
}

/// Exit status after a stop on SIGTERM / SIGINT with a checkpoint written (EX_TEMPFAIL
/// of sysexits.h: a temporary failure, retry by resuming).
const EXIT_INTERRUPTED: i32 = 75;

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

fn main() {
    let args = Args::parse();
    if let Err(e) = dispatch(args) {
        eprintln!("error: {e}");
        let interrupted = matches!(
            e.downcast_ref::<RunError>(),
            Some(RunError::Trainer(TrainError::Interrupted { .. }))
        );
        std::process::exit(if interrupted { EXIT_INTERRUPTED } else { 1 });
    }
}

fn dispatch(args: Args) -> Result<(), BoxError> {
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
    let mut config = RunConfig::load(args.config.as_deref(), &[])?;
    if let Some(ablation) = args.ablation {
        Ablation::from(ablation).apply(&mut config.loss);
    }
    // `--batch-size` replaces the whole fill (a token budget too), before `--set`.
    if let Some(n) = args.batch_size {
        config.data.batch = BatchFill::Samples(n);
    }
    let config = config.with_overrides(&args.overrides)?;
    config.validate()?;
    println!(
        "UNO post-training: loss weights caption {} visual {}, {} steps on {} device(s), output {}",
        config.loss.caption,
        config.loss.visual,
        config.trainer.iterations,
        args.devices,
        config.trainer.output_dir.display()
    );
    let spec = RunSpec {
        config,
        model: match args.model_dir {
            Some(dir) => ModelSource::Folder(dir),
            None => ModelSource::Tiny,
        },
        data: match (args.data, args.tokenizer) {
            (Some(manifest), Some(tokenizer)) => TrainData::Manifest {
                manifest,
                tokenizer,
                eval: args.eval_data,
            },
            _ => TrainData::Synthetic,
        },
        resume: args.resume,
        allow_config_change: args.allow_config_change,
        stop: Some(install_stop_signals()?),
    };
    let report = run_parallel::<B>(spec, &devices::<B>(usize::from(args.devices)))?;
    println!(
        "wrote {}/{{ema,model}}.safetensors (BAGEL key names) and its configs",
        report.output_dir.display()
    );
    Ok(())
}
