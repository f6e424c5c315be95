//! ShapesBench (issue #16, docs/shapesbench.md): the paper's Table 7 at laptop scale, end
//! to end: flags in, [`uno_shapesbench::run_benchmark`] does the rest.
//!
//! `cargo run --release --example shapesbench -- --preset smoke` pretrains a small
//! BAGEL-shaped model from scratch (stage 1), reports its caption accuracy, post-trains it
//! in the six arms (SFT, + language, + visual, joint, joint with caption = prompt, joint
//! with the mask off) under each seed, judges every held-out prompt's images by pixels and
//! prints the table (also `results.md` / `results.json`, plots and per-arm folders in
//! `--out`, default `runs/shapesbench-<preset>`). `--preset full` is the real comparison
//! (4 seeds, longer; `--backend cuda` on a GPU). `--seeds N`, `--stage1-steps N` and
//! `--stage2-steps N` override the preset's seed count and training lengths. `--resume`
//! continues a benchmark that stopped (same `--out` and preset; the seed count may
//! change), keeping every finished run and judged arm.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use uno_core::burn::tensor::backend::AutodiffBackend;
use uno_shapesbench::{BenchPreset, BenchProgress, resume_benchmark, run_benchmark};

#[path = "shared/backend.rs"]
mod backend;
use backend::BackendChoice;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser, Debug)]
#[command(about = "ShapesBench: stage 1 pretraining, the Table 7 arms, pixel-judged report")]
struct Args {
    #[arg(long, value_enum, default_value_t = PresetChoice::Smoke)]
    preset: PresetChoice,
    /// Output folder (must not exist or be empty, unless `--resume`); default
    /// `runs/shapesbench-<preset>`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Stage 2 seeds (0..N), instead of the preset's.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    seeds: Option<u64>,
    /// Stage 1 steps, instead of the preset's.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    stage1_steps: Option<u64>,
    /// Steps of each stage 2 arm, instead of the preset's.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    stage2_steps: Option<u64>,
    #[arg(long, value_enum, default_value_t = BackendChoice::Flex)]
    backend: BackendChoice,
    /// Continue the benchmark in `--out` that stopped, with the same preset: finished runs
    /// and judged arms are kept, an unfinished run continues from its last checkpoint.
    #[arg(long)]
    resume: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PresetChoice {
    /// Under 15 minutes on a 2-core CPU: proves the pipeline, not UNO.
    Smoke,
    /// The real comparison: 4 seeds, longer training.
    Full,
}

fn main() {
    let args = Args::parse();
    let result = match args.backend {
        BackendChoice::Flex => bench::<uno_core::backend::Autodiff<uno_core::backend::Flex>>(args),
        #[cfg(feature = "ndarray")]
        BackendChoice::Ndarray => {
            bench::<uno_core::backend::Autodiff<uno_core::backend::NdArray>>(args)
        }
        #[cfg(feature = "wgpu")]
        BackendChoice::Wgpu => bench::<uno_core::backend::Autodiff<uno_core::backend::Wgpu>>(args),
        #[cfg(feature = "cuda")]
        BackendChoice::Cuda => bench::<uno_core::backend::Autodiff<uno_core::backend::Cuda>>(args),
        #[allow(unreachable_patterns)]
        other => Err(other.not_compiled()),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn bench<B: AutodiffBackend>(args: Args) -> Result<(), BoxError> {
    let started = Instant::now();
    let mut preset = match args.preset {
        PresetChoice::Smoke => BenchPreset::smoke(),
        PresetChoice::Full => BenchPreset::full(),
    };
    if let Some(n) = args.seeds {
        preset.seeds = (0..n).collect();
    }
    if let Some(n) = args.stage1_steps {
        preset.stage1.iterations = n;
    }
    if let Some(n) = args.stage2_steps {
        preset.stage2.iterations = n;
    }
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("runs/shapesbench-{}", preset.name)));
    println!(
        "ShapesBench preset {}: stage 1 {} steps, {} arms x {} seed(s) of {} steps, output {}",
        preset.name,
        preset.stage1.iterations,
        preset.arms.len(),
        preset.seeds.len(),
        preset.stage2.iterations,
        out.display()
    );
    let bar = ProgressBar::new(0);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise}] {msg}")
    {
        bar.set_style(style);
    }
    let mut progress = |p: BenchProgress| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
        bar.set_message(p.stage.clone());
        bar.println(format!("[{}/{}] {}", p.done + 1, p.total, p.stage));
    };
    let device = Default::default();
    let report = match args.resume {
        true => resume_benchmark::<B>(&preset, &out, &device, &mut progress)?,
        false => run_benchmark::<B>(&preset, &out, &device, &mut progress)?,
    };
    bar.finish_and_clear();
    println!("\n{}", report.to_markdown());
    println!(
        "wrote {0}/results.md, results.json, loss_curves.svg, scores.svg, alignment.svg and the \
         arms' folders in {0}/arms",
        out.display()
    );
    println!("wall time {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
