//! [`run_benchmark`]: the whole benchmark from a [`BenchPreset`]: a fresh model saved as a
//! BAGEL folder, stage 1 (pretraining from scratch with [`train::run`]), its caption
//! accuracy, then every stage 2 arm under every seed from the stage 1 folder, each
//! evaluated by the pixel judge, and the report and plots. It prints nothing; progress is
//! reported through a callback.
//!
//! Output folder layout:
//!
//! ```text
//! out/preset.json                  the preset the folder was started with
//! out/init/                        the freshly initialised model (a BAGEL folder)
//! out/stage1/                      stage 1's run folder (metrics.jsonl, ema.safetensors)
//! out/stage1/captions.json         its captions of held-out scenes
//! out/arms/<arm>/seed-<s>/         each arm's run folder, plus samples.png (one row per
//!                                  held-out prompt), alignment.jsonl and arm.json (its
//!                                  scores, once judged)
//! out/ground_truth.png             the judged ground truth, as the grids
//! out/results.md, results.json     the report
//! out/loss_curves.svg, scores.svg, alignment.svg, alignment.jsonl,
//!     alignment_training.svg (each arm's mean cosine over the layers at its evaluations)
//! ```

use std::path::Path;
use std::time::Instant;

use uno_core::bagel::{Bagel, BagelConfig};
use uno_core::burn::tensor::backend::{AutodiffBackend, Backend};
use uno_core::checkpoint::{SaveDtype, UnexpectedKeys};
use uno_core::data::shapes::{Category, PixelJudge, PromptSpec, ShapesBench, ShapesBenchConfig};
use uno_core::data::{SyntheticScenes, TextTokenizer};
use uno_core::generate::{Generator, grid, save_png};
use uno_core::packing::SupervisionVisibility;
use uno_core::train::{
    ModelSource, RunConfig, RunSpec, ShapesBenchData, TOKENIZER_FILE, TrainData, run,
};
use uno_core::vae::Codec;

use crate::alignment::{
    AlignmentRecord, Phase, alignment_series, held_out_alignment, training_alignment,
    write_alignment,
};
use crate::plots::{
    Series, metric_series, plot_alignment, plot_alignment_training, plot_loss_curves, plot_scores,
};
use crate::resume;
use crate::{
    Arm, ArmScores, BenchError, BenchPreset, BenchReport, GroundTruth, Judged, ModelImages,
    PromptImages, caption_held_out, judge_prompts, to_tensor,
};

/// What [`run_benchmark`] is doing, for a progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchProgress {
    /// Units finished (stage 1 is one, each arm and seed one, the report one).
    pub done: usize,
    /// Units in all.
    pub total: usize,
    /// What starts now.
    pub stage: String,
}

/// Run `preset` into `out` (which must not exist or be empty) on `device`: training on
/// `B`, sampling and captioning on its inner backend (no autodiff graph). Calls `progress` as each unit
/// starts.
pub fn run_benchmark<B: AutodiffBackend>(
    preset: &BenchPreset,
    out: &Path,
    device: &B::Device,
    progress: &mut dyn FnMut(BenchProgress),
) -> Result<BenchReport, BenchError> {
    check_preset(preset)?;
    prepare_out(out)?;
    resume::record_preset(out, preset)?;
    benchmark::<B>(preset, out, device, progress, false)
}

/// Continue the benchmark that [`run_benchmark`] started in `out` and that stopped (an
/// error, a crash, an interruption), with the same preset (its seeds may differ: new
/// seeds' arms are run, dropped seeds' are left out of the report). Finished training runs
/// and judged arms are kept; an unfinished run continues from its newest checkpoint; the
/// report is the one an uninterrupted run writes (docs/shapesbench.md, "Resuming").
pub fn resume_benchmark<B: AutodiffBackend>(
    preset: &BenchPreset,
    out: &Path,
    device: &B::Device,
    progress: &mut dyn FnMut(BenchProgress),
) -> Result<BenchReport, BenchError> {
    check_preset(preset)?;
    resume::check_recorded_preset(out, preset)?;
    benchmark::<B>(preset, out, device, progress, true)
}

fn benchmark<B: AutodiffBackend>(
    preset: &BenchPreset,
    out: &Path,
    device: &B::Device,
    progress: &mut dyn FnMut(BenchProgress),
    resuming: bool,
) -> Result<BenchReport, BenchError> {
    let start = Instant::now();
    let total = 2 + preset.arms.len() * preset.seeds.len();
    let mut done = 0;
    let mut step = |stage: String, done: &mut usize| {
        progress(BenchProgress {
            done: *done,
            total,
            stage,
        });
        *done += 1;
    };
    let bench = ShapesBench::new(ShapesBenchConfig {
        seed: preset.bench_seed,
    });
    let prompts = eval_prompts(&bench, preset.prompts_per_category);

    step(
        format!("stage 1: {} steps", preset.stage1.iterations),
        &mut done,
    );
    let init = out.join("init");
    let stage1 = out.join("stage1");
    if !resume::finished_run(&stage1) {
        // Deterministic: a resume writes the same initial weights again.
        save_initial_model::<B>(preset, &init, device)?;
        let config = stage_config(RunConfig::shapes_pretrain(), preset, &stage1, 0, true)?;
        train::<B>(
            config,
            ModelSource::Folder(init),
            shapes_data(preset, false, true),
            device,
            "stage 1",
            resuming,
        )?;
    }
    let caption = {
        let loaded = Loaded::<B::InnerBackend>::open(&stage1, device)?;
        let (accuracy, samples) = caption_held_out(
            &loaded.generator(),
            &loaded.tokenizer,
            &bench,
            preset.caption_scenes,
            preset.image_size,
            preset.eval.seed,
        )?;
        write_json(&stage1.join("captions.json"), &samples, "the captions")?;
        accuracy
    };
    let ground_truth = judge_into_grid::<B::InnerBackend>(
        &mut GroundTruth { bench: &bench },
        &prompts,
        preset,
        &out.join("ground_truth.png"),
        device,
    )?;

    let mut alignment = Vec::new();
    if let Some(batch) = &preset.alignment {
        let start = held_out_alignment::<B>(&stage1, &bench, batch, device)?;
        alignment.extend(start.into_iter().map(|layer| AlignmentRecord {
            arm: None,
            seed: None,
            phase: Phase::Start,
            layer,
        }));
    }
    let start_records = alignment.clone();

    let mut runs = Vec::new();
    let mut curves = Vec::new();
    let mut during = Vec::new();
    for &seed in &preset.seeds {
        for &arm in &preset.arms {
            step(format!("{} (seed {seed})", arm.label()), &mut done);
            let dir = out
                .join("arms")
                .join(arm.name())
                .join(format!("seed-{seed}"));
            let mut config = stage_config(RunConfig::shapes_pretrain(), preset, &dir, seed, false)?;
            arm.ablation().apply(&mut config.loss);
            if arm == Arm::MaskOff {
                config.model.supervision_visibility = SupervisionVisibility::Everything;
            }
            let data = shapes_data(preset, arm == Arm::CaptionIsPrompt, false);
            if !resume::finished_run(&dir) {
                train::<B>(
                    config,
                    ModelSource::Folder(stage1.clone()),
                    data,
                    device,
                    &format!("{} seed {seed}", arm.name()),
                    resuming,
                )?;
            }
            curves.push(Series {
                label: format!("{} (seed {seed})", arm.label()),
                points: metric_series(&dir.join("metrics.jsonl"), "flow")?,
            });
            if seed == preset.seeds[0] {
                let label = arm.label().to_string();
                during.extend(training_alignment(&dir.join("metrics.jsonl"), &label)?);
            }

            let scores = match resume::finished_arm(&dir)? {
                Some(scores) => scores,
                None => {
                    let loaded = Loaded::<B::InnerBackend>::open(&dir, device)?;
                    let judged = judge_into_grid::<B::InnerBackend>(
                        &mut ModelImages {
                            generator: loaded.generator(),
                            tokenizer: &loaded.tokenizer,
                            sampler: preset.sampler,
                        },
                        &prompts,
                        preset,
                        &dir.join("samples.png"),
                        device,
                    )?;
                    let scores = ArmScores {
                        arm,
                        seed,
                        scores: judged.scores,
                        non_finite: judged.non_finite,
                    };
                    resume::record_arm(&dir, &scores)?;
                    scores
                }
            };
            runs.push(scores);

            if let Some(batch) = &preset.alignment {
                let end: Vec<AlignmentRecord> =
                    held_out_alignment::<B>(&dir, &bench, batch, device)?
                        .into_iter()
                        .map(|layer| AlignmentRecord {
                            arm: Some(arm),
                            seed: Some(seed),
                            phase: Phase::End,
                            layer,
                        })
                        .collect();
                let mut of_arm = start_records.clone();
                of_arm.extend(end.iter().cloned());
                write_alignment(&dir.join("alignment.jsonl"), &of_arm)?;
                alignment.extend(end);
            }
        }
    }

    step("report and plots".into(), &mut done);
    let mut report = BenchReport::new(&preset.name, ground_truth.scores, Some(caption), runs);
    curves.insert(
        0,
        Series {
            label: "stage 1 (total)".into(),
            points: metric_series(&stage1.join("metrics.jsonl"), "loss")?,
        },
    );
    plot_loss_curves(
        &curves,
        "flow-matching loss per arm (stage 1: its total loss)",
        &out.join("loss_curves.svg"),
    )?;
    plot_scores(&report, &out.join("scores.svg"))?;
    if !alignment.is_empty() {
        write_alignment(&out.join("alignment.jsonl"), &alignment)?;
        plot_alignment(&alignment_series(&alignment), &out.join("alignment.svg"))?;
    }
    if !during.is_empty() {
        plot_alignment_training(&during, &out.join("alignment_training.svg"))?;
    }
    report.wall_time_s = Some(start.elapsed().as_secs_f64());
    report.write(out)?;
    Ok(report)
}

/// Refuse presets that cannot run before anything is trained.
fn check_preset(preset: &BenchPreset) -> Result<(), BenchError> {
    if preset.seeds.is_empty() {
        return Err(BenchError::setting("seeds", "[]", "at least one seed"));
    }
    if preset.arms.is_empty() {
        return Err(BenchError::setting("arms", "[]", "at least one arm"));
    }
    if preset.eval.image_size != preset.image_size {
        return Err(BenchError::setting(
            "eval.image_size",
            preset.eval.image_size,
            "must be the training image size",
        ));
    }
    Ok(())
}

/// Create `out`, refusing one that holds anything (a benchmark never mixes two runs).
fn prepare_out(out: &Path) -> Result<(), BenchError> {
    if out.exists() {
        let mut entries = std::fs::read_dir(out).map_err(|e| BenchError::io("list", out, e))?;
        if entries.next().is_some() {
            return Err(BenchError::setting(
                "out",
                out.display(),
                "is not empty: choose another output folder or delete it",
            ));
        }
    }
    std::fs::create_dir_all(out).map_err(|e| BenchError::io("create", out, e))
}

/// The held-out prompts, the first `limit` of each category when limited.
fn eval_prompts(bench: &ShapesBench, limit: Option<usize>) -> Vec<PromptSpec> {
    let all = bench.held_out_prompts();
    match limit {
        None => all.to_vec(),
        Some(k) => Category::ALL
            .into_iter()
            .flat_map(|c| all.iter().filter(move |p| p.category == c).take(k))
            .cloned()
            .collect(),
    }
}

/// The benchmark's model, randomly initialised from seed 0 over the bench vocabulary, as
/// a BAGEL folder (configs, weights, tokenizer) that stage 1 loads.
fn save_initial_model<B: Backend>(
    preset: &BenchPreset,
    dir: &Path,
    device: &B::Device,
) -> Result<(), BenchError> {
    let data = SyntheticScenes::shapes_bench(
        ShapesBench::new(ShapesBenchConfig {
            seed: preset.bench_seed,
        }),
        1,
        preset.image_size,
    )?;
    let config: BagelConfig = preset
        .model
        .config(data.tokenizer().vocab_size(), data.special_tokens());
    B::seed(device, 0);
    let model = config.init::<B>(device)?;
    std::fs::create_dir_all(dir).map_err(|e| BenchError::io("create", dir, e))?;
    config.save_folder(dir)?;
    model.save_safetensors(&dir.join("ema.safetensors"), SaveDtype::F32)?;
    data.tokenizer().save(&dir.join(TOKENIZER_FILE))?;
    Ok(())
}

/// A stage's run settings: `base` with the preset's length, rate, batch, seed and folder;
/// stage 2 (`!stage1`) trains the generation side only, without the understanding loss.
fn stage_config(
    base: RunConfig,
    preset: &BenchPreset,
    dir: &Path,
    seed: u64,
    stage1: bool,
) -> Result<RunConfig, BenchError> {
    let stage = if stage1 {
        &preset.stage1
    } else {
        &preset.stage2
    };
    let mut overrides = vec![
        format!("iterations={}", stage.iterations),
        format!("seed={seed}"),
        format!("output_dir={:?}", dir.display().to_string()),
        format!("optimizer.lr={}", stage.lr),
        format!("data.batch.samples={}", stage.batch),
        format!("schedule.warmup_steps={}", (stage.iterations / 10).max(1)),
        // A checkpoint every tenth of the run: an interrupted benchmark resumes there.
        format!("checkpoint.every={}", (stage.iterations / 10).max(1)),
        format!("metrics.eval_every={}", (stage.iterations / 4).max(1)),
        format!("metrics.summary_window={}", (stage.iterations / 5).max(1)),
    ];
    if !stage1 {
        overrides.extend([
            "loss.text=0".into(),
            "model.trainable=\"generation\"".into(),
            // Figure 8 during training: the gradient alignment at every evaluation.
            "diagnostics.alignment=true".into(),
        ]);
    }
    let config = base
        .with_overrides(&overrides)
        .map_err(|e| run_error("settings", e))?;
    config.validate().map_err(|e| run_error("settings", e))?;
    Ok(config)
}

/// The benchmark's training data: its training distribution, with understanding samples
/// in stage 1 only.
fn shapes_data(preset: &BenchPreset, caption_is_prompt: bool, stage1: bool) -> TrainData {
    TrainData::ShapesBench(ShapesBenchData {
        bench_seed: preset.bench_seed,
        understanding_fraction: if stage1 {
            preset.understanding_fraction
        } else {
            0.0
        },
        caption_is_prompt,
    })
}

fn run_error(stage: &str, e: uno_core::train::RunError) -> BenchError {
    BenchError::Run {
        stage: stage.to_string(),
        source: Box::new(e),
    }
}

/// One training run into `config.output_dir`: fresh, or, when `resuming`, continued from
/// its newest checkpoint if it has one (`resume::continue_run`).
fn train<B: AutodiffBackend>(
    config: RunConfig,
    model: ModelSource,
    data: TrainData,
    device: &B::Device,
    stage: &str,
    resuming: bool,
) -> Result<(), BenchError> {
    let resume = resume::continue_run(&config.trainer.output_dir, resuming)?;
    let spec = RunSpec {
        config,
        model,
        data,
        resume,
        allow_config_change: false,
        stop: None,
    };
    run::<B>(spec, device).map_err(|e| run_error(stage, e))?;
    Ok(())
}

/// A trained folder loaded for inference: model (EMA weights), codec and vocabulary.
struct Loaded<B: Backend> {
    config: BagelConfig,
    model: Bagel<B>,
    codec: Codec<B>,
    tokenizer: TextTokenizer,
}

impl<B: Backend> Loaded<B> {
    fn open(dir: &Path, device: &B::Device) -> Result<Self, BenchError> {
        let (config, model, _) = Bagel::<B>::load_folder(dir, device, UnexpectedKeys::Warn)?;
        let codec = config.load_codec::<B>(dir, device)?;
        let tokenizer = TextTokenizer::from_file(&dir.join(TOKENIZER_FILE))?;
        Ok(Self {
            config,
            model,
            codec,
            tokenizer,
        })
    }

    fn generator(&self) -> Generator<'_, B, Codec<B>> {
        Generator {
            model: &self.model,
            codec: &self.codec,
            packing: self.config.packing(),
        }
    }
}

/// Judge `prompts`' images from `source` with the fixed [`PixelJudge`] under the preset's
/// evaluation settings, and save them at `path` as a PNG grid (one row per prompt, its
/// images in seed order).
fn judge_into_grid<B: Backend>(
    source: &mut impl PromptImages,
    prompts: &[PromptSpec],
    preset: &BenchPreset,
    path: &Path,
    device: &B::Device,
) -> Result<Judged, BenchError> {
    let judged = judge_prompts(source, prompts, &PixelJudge::default(), &preset.eval)?;
    let tensors = judged
        .images
        .iter()
        .map(|i| to_tensor::<B>(i, device))
        .collect();
    save_png(&grid(tensors, preset.eval.images_per_prompt)?, path)?;
    Ok(judged)
}

fn write_json<T: serde::Serialize>(
    path: &Path,
    value: &T,
    name: &'static str,
) -> Result<(), BenchError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|source| BenchError::Serialize { name, source })?;
    std::fs::write(path, text).map_err(|e| BenchError::io("write", path, e))
}
