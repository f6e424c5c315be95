//! [`run`]: a whole UNO post-training run from a [`RunSpec`], the library entry point
//! behind `examples/train_bagel.rs`, callable from a researcher's own code.
//!
//! It chooses the model and the data, applies the run's settings to the model, writes the
//! run folder (a BAGEL folder: configs first, weights at the end), wires the held-out
//! evaluation into the trainer's hook, trains (or resumes) and writes the final model and
//! EMA weights. It prints nothing itself; the trainer's progress bar and summary follow
//! `metrics.progress`.
//!
//! # Run safety
//!
//! Everything is read and checked before anything is written: the configuration, the
//! model, the tokenizer, the data sets and the held-out set. Then the folder: one that
//! holds a model no run wrote is refused ([`super::check_not_foreign`]); it is locked for
//! the run's life (`uno_trainer::RunLock`, a second run is refused with the holder's PID);
//! a new run refuses a folder with checkpoints, and a resume refuses settings that differ
//! from the folder's record and would break exact resume ([`super::config_changes`])
//! unless [`RunSpec::allow_config_change`]. Only then are the record (`run.toml`,
//! `run_inputs.json`) and the configs written, each atomically.
//!
//! # Data parallel
//!
//! [`run_parallel`] runs the same per device, one peer each (docs/distributed.md): every
//! peer checks the inputs and builds its replica and its shard of the data; only peer 0
//! checks, locks and writes the folder. The peers agree on the outcome of this preparation
//! before their first exchange, so a peer that cannot start stops them all.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend, Device as _, DeviceId};

use super::folder::check_not_foreign;
use super::record::{RunInputs, config_changes, save_record};
use super::{HeldOut, PackedBatches, RunConfig, RunError, UnoTrainee};
use crate::bagel::{Bagel, BagelConfig, save_codec};
use crate::checkpoint::{SaveDtype, UnexpectedKeys};
use crate::data::shapes::{ShapesBench, ShapesBenchConfig};
use crate::data::{
    Dataset, ImageTransforms, ManifestDataset, SyntheticConfig, SyntheticScenes, TextTokenizer,
};
use crate::objectives::ConditionDropoutConfig;
use crate::packing::PackingConfig;
use crate::trainer::checkpoint::latest_checkpoint;
use crate::trainer::{Peer, PeerError, RunLock, TrainSummary, Trainer, run_data_parallel};
use crate::vae::Codec;

/// Micro-batches in the held-out evaluation set.
const EVAL_BATCHES: usize = 2;
/// Mixed into the run's seed for the synthetic held-out scenes.
pub const HELD_OUT_SEED: u64 = 0x5eed_0e7a;
/// The tokenizer a run folder keeps next to its configs (BAGEL releases ship one too).
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Where the model of a run comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A tiny BAGEL-shaped model ([`BagelConfig::tiny`]) over the data's vocabulary,
    /// randomly initialised from the run's seed.
    Tiny,
    /// A BAGEL folder (configs + weights, and `ae.safetensors` for a FLUX codec): a release
    /// or one a run wrote.
    Folder(PathBuf),
}

/// What a run trains on.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainData {
    /// The embedded synthetic shapes set, drawn at `data.vae_image.max` pixels and put
    /// through the run's transforms; evaluation on scenes of another seed, never trained on.
    Synthetic,
    /// ShapesBench's training distribution (`docs/shapesbench.md`), drawn like
    /// [`Self::Synthetic`] and with its length, in the bench's vocabulary
    /// (`SyntheticScenes::bench_vocabulary`); evaluation on the bench's held-out prompts,
    /// laid out from another seed.
    ShapesBench(ShapesBenchData),
    /// A JSONL manifest of real images ([`ManifestDataset`]) with its tokenizer.
    Manifest {
        /// The training manifest.
        manifest: PathBuf,
        /// The Hugging Face `tokenizer.json` of the texts.
        tokenizer: PathBuf,
        /// A held-out manifest for the evaluation hook (none: no evaluation).
        eval: Option<PathBuf>,
    },
}

/// The ShapesBench data of a run ([`TrainData::ShapesBench`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ShapesBenchData {
    /// The benchmark's seed (`ShapesBenchConfig::seed`): which colour-shape pairs are held
    /// out, and the training examples.
    pub bench_seed: u64,
    /// Fraction of the training items that are understanding samples (the scene's
    /// ViT-side image, its re-caption as the answer; `loss.text` trains on them), decided
    /// per item from the bench seed. Stage 1 pretraining mixes them in; stage 2 uses 0.
    pub understanding_fraction: f64,
    /// The UNO caption target is the prompt's own tokens instead of the re-caption (the
    /// paper's Table 7 ablation without semantic augmentation).
    pub caption_is_prompt: bool,
}

/// One run: its configuration, model, data and whether to continue its checkpoints.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The resolved configuration (validated again by [`run`]).
    pub config: RunConfig,
    /// The model to post-train.
    pub model: ModelSource,
    /// The data to train on.
    pub data: TrainData,
    /// Continue from the newest checkpoint in `output_dir` that verifies (a fresh run when
    /// there is none).
    pub resume: bool,
    /// On resume, accept settings that differ from the run's record although they break
    /// exact resume (the differences are then recorded as the run's new settings).
    pub allow_config_change: bool,
    /// Stop request polled between steps (`uno_core::trainer::install_stop_signals` sets
    /// one on SIGTERM / SIGINT): the run finishes its step, checkpoints and returns
    /// `TrainError::Interrupted`.
    pub stop: Option<Arc<AtomicBool>>,
}

/// What a finished run leaves.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The trainer's summary (losses of the first and last windows, steps, skips).
    pub summary: TrainSummary,
    /// The run folder: a BAGEL folder with the final `model.safetensors` and
    /// `ema.safetensors`, its configs, `metrics.jsonl` and checkpoints.
    pub output_dir: PathBuf,
    /// Newer checkpoints a resume passed over because they failed verification (a
    /// flipped byte, a truncated file), with the reason; empty when none was.
    pub rejected_checkpoints: Vec<(PathBuf, String)>,
}

/// Post-train a BAGEL model with UNO as `spec` says, on `device`.
///
/// Every setting and input is checked before anything is written (see the module docs,
/// "Run safety"); a run folder that already holds checkpoints is refused unless
/// `spec.resume`. A disabled objective (weight 0) gets no split in the data, so it costs no
/// tokens.
pub fn run<B: AutodiffBackend>(spec: RunSpec, device: &B::Device) -> Result<RunReport, RunError> {
    run_peer::<B>(spec, device, None)
}

/// [`run`] data parallel on `devices` (uno-trainer's [`run_data_parallel`]: one thread and
/// one model replica per device, each reading its shard of the data, gradients summed over
/// all; the same steps as one device with the global batch). Peer 0 checks and writes the
/// run folder; the report is its. One device is a plain [`run`].
pub fn run_parallel<B: AutodiffBackend>(
    spec: RunSpec,
    devices: &[B::Device],
) -> Result<RunReport, RunError> {
    match devices {
        [device] => run::<B>(spec, device),
        _ => {
            let mut reports = run_data_parallel::<B, _, RunError, _>(devices, |peer| {
                let device = devices[peer.rank()].clone();
                run_peer(spec.clone(), &device, Some(peer))
            })?;
            Ok(reports.swap_remove(0))
        }
    }
}

impl PeerError for RunError {
    fn is_relayed(&self) -> bool {
        matches!(self, RunError::Trainer(e) if e.is_relayed())
    }
}

/// The first `n` devices of `B`'s default kind (`cuda:0..n-1` on CUDA), for
/// [`run_parallel`]. CPU backends have one device: `n` copies of it are `n` peers sharing
/// the CPU.
pub fn devices<B: Backend>(n: usize) -> Vec<B::Device> {
    let kind = B::Device::default().to_id().type_id;
    (0..n)
        .map(|index| {
            B::Device::from_id(DeviceId {
                type_id: kind,
                index_id: index as u16,
            })
        })
        .collect()
}

/// [`run`] as one peer of a data-parallel run, or alone.
fn run_peer<B: AutodiffBackend>(
    spec: RunSpec,
    device: &B::Device,
    peer: Option<Peer<B>>,
) -> Result<RunReport, RunError> {
    let stop = spec.stop.clone();
    let setup = || prepare::<B>(spec, device, peer.as_ref().map(|p| (p.rank(), p.peers())));
    let ready = match &peer {
        Some(peer) => peer.agree_on(0, "preparing the run", setup)?,
        None => setup()?,
    };
    let Ready {
        trainer,
        prepared,
        lock,
        out,
        rejected_checkpoints,
        alignment,
    } = ready;
    let writer = peer.as_ref().is_none_or(Peer::is_writer);
    let mut trainer = match peer {
        Some(peer) => trainer.join(peer)?,
        None => trainer,
    };
    if let Some(lock) = lock {
        trainer.hold_lock(lock);
    }
    if let Some(flag) = stop {
        trainer.set_stop_flag(flag);
    }
    let summary = match prepared {
        Prepared::Manifest(train, eval) => fit(&mut trainer, train, eval.as_ref(), alignment)?,
        Prepared::Synthetic(train, eval) => fit(&mut trainer, train, Some(&eval), alignment)?,
    };
    // The trained model as a folder `ModelSource::Folder` can load (still under the lock).
    let _lock = trainer.take_lock();
    let (model, ema) = trainer.into_parts()?;
    if writer {
        model
            .model
            .save_safetensors(&out.join("model.safetensors"), SaveDtype::F32)?;
        ema.model
            .save_safetensors(&out.join("ema.safetensors"), SaveDtype::F32)?;
    }
    Ok(RunReport {
        summary,
        output_dir: out,
        rejected_checkpoints,
    })
}

/// Held while a run seeds Burn's global RNG and draws its model's initial values:
/// exclusively by the run that keeps its weights (one device, or peer 0), shared by the
/// other peers of a data-parallel run (their initial weights are replaced by peer 0's).
static GLOBAL_RNG: RwLock<()> = RwLock::new(());

/// Draws every lazily initialised parameter of the module it visits.
struct Materialise;

impl<B: Backend> ModuleVisitor<B> for Materialise {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let _ = param.val();
    }
}

/// What [`prepare`] leaves ready to train.
struct Ready<B: AutodiffBackend> {
    trainer: Trainer<B, UnoTrainee<B>>,
    prepared: Prepared<B>,
    /// The run folder's lock (peer 0's only in a data-parallel run).
    lock: Option<RunLock>,
    out: PathBuf,
    rejected_checkpoints: Vec<(PathBuf, String)>,
    /// Whether evaluations log the gradient alignment (`diagnostics.alignment`).
    alignment: bool,
}

/// Everything before the training: checks, model, data (shard `rank` of `peers` when
/// given), trainer, and on peer 0 the run folder.
fn prepare<B: AutodiffBackend>(
    spec: RunSpec,
    device: &B::Device,
    shard: Option<(usize, usize)>,
) -> Result<Ready<B>, RunError> {
    let RunSpec {
        config,
        model,
        data,
        resume,
        allow_config_change,
        stop: _,
    } = spec;
    let writer = shard.is_none_or(|(rank, _)| rank == 0);
    config.validate()?;
    if !config.model.precision.supported::<B>(device) {
        return Err(RunError::InvalidConfig {
            key: "model.precision",
            value: format!("{:?} on {}", config.model.precision, B::name(device)),
            reason: "this backend has no bf16 (ndarray and wgpu do not): use flex or cuda, \
                     or precision = \"f32\"",
        });
    }
    let out = config.trainer.output_dir.clone();
    let inputs = RunInputs::of(&model, &data).with_backend(format!(
        "{} {}",
        B::name(device),
        std::any::type_name::<B::FloatElem>()
    ));
    // Burn's initialisers draw from the backend's global RNG (some weights as a model is
    // built, the others at their first use): seed it so a run is
    // reproducible (the trainer seeds its own host RNG for data, noise and dropout). The
    // peers of a data-parallel run share that RNG and take peer 0's weights: peer 0 seeds
    // and builds alone, the other peers build alongside each other, never alongside it.
    let alone = writer.then(|| GLOBAL_RNG.write().unwrap_or_else(|e| e.into_inner()));
    let alongside = (!writer).then(|| GLOBAL_RNG.read().unwrap_or_else(|e| e.into_inner()));
    B::seed(device, config.trainer.seed);
    let supervision = (config.loss.caption > 0.0, config.loss.visual > 0.0);
    let transforms = ImageTransforms {
        vae: config.data.vae_image,
        vit: config.data.vit_image,
    };
    let tokenizer = match &data {
        TrainData::Synthetic | TrainData::ShapesBench(_) => None,
        TrainData::Manifest { tokenizer, .. } => {
            Some((TextTokenizer::from_file(tokenizer)?, tokenizer.clone()))
        }
    };
    // The embedded data and its held-out scenes, which never meet in training: the same
    // generator under another seed, or the bench's evaluation prompts.
    let (synthetic, unseen) = synthetic_sets(&data, &config)?;
    let synthetic = synthetic
        .with_supervision(supervision.0, supervision.1)
        .with_transforms(transforms);
    let text = tokenizer.as_ref().map_or(synthetic.tokenizer(), |(t, _)| t);

    let (mut model_config, model, codec) = match &model {
        ModelSource::Folder(dir) => {
            let (config, model, _) = Bagel::load_folder(dir, device, UnexpectedKeys::Warn)?;
            let codec = config.load_codec(dir, device)?;
            (config, model, codec)
        }
        ModelSource::Tiny => {
            let specials = match &tokenizer {
                Some((t, path)) => t.special_tokens().map_err(|e| RunError::Tokenizer {
                    path: path.clone(),
                    reason: e.to_string(),
                })?,
                None => synthetic.special_tokens(),
            };
            let c = BagelConfig::tiny(text.vocab_size(), specials);
            let m = c.init::<B>(device)?;
            (c, m, Codec::pixel())
        }
    };
    // Burn lazily draws a parameter's initial values at its first use: draw them all
    // while the RNG is ours.
    model.visit(&mut Materialise);
    drop((alone, alongside));
    // A loaded release must never be fed the synthetic set's word ids: the synthetic
    // vocabulary is checked like a given tokenizer.
    let text_path = tokenizer.as_ref().map_or_else(
        || PathBuf::from("<synthetic vocabulary>"),
        |(_, p)| p.clone(),
    );
    check_tokenizer(text, &text_path, &model_config)?;
    config.apply_to(&mut model_config)?;
    model_config.validate()?;
    let packing = config.packing(&model_config)?;
    let objective = model_config.objective()?;

    let synthetic_vocabulary = synthetic.tokenizer().clone();
    // The data and the held-out set, opened (and the held-out items read) before the
    // folder is touched: a bad manifest must not leave a half-made run folder behind.
    let prepared = match (&data, &tokenizer) {
        (TrainData::Manifest { manifest, eval, .. }, Some((text, _))) => {
            let open = |path: &Path| -> Result<ManifestDataset, RunError> {
                Ok(ManifestDataset::open(path, text.clone(), transforms)?
                    .with_supervision(supervision.0, supervision.1))
            };
            let eval = match eval {
                Some(path) => Some(held_out(open(path)?, &config, &packing, device)?),
                None => None,
            };
            let train = batches(open(manifest)?, &config, &packing, device, shard);
            Prepared::Manifest(train, eval)
        }
        _ => {
            // The alignment diagnostics measure the caption and visual terms whatever the
            // run trains: their held-out batches carry both splits.
            let (caption, visual) = match config.diagnostics.alignment {
                true => (true, true),
                false => supervision,
            };
            let unseen = unseen
                .with_supervision(caption, visual)
                .with_transforms(transforms);
            let eval = held_out(unseen, &config, &packing, device)?;
            Prepared::Synthetic(batches(synthetic, &config, &packing, device, shard), eval)
        }
    };

    // The folder (peer 0's task): never another model's; then locked, then checked under
    // the lock.
    let lock = match writer {
        true => {
            check_not_foreign(&out)?;
            let lock = RunLock::acquire(&out)?;
            let has_checkpoints = latest_checkpoint(&out)?.is_some();
            if !resume && has_checkpoints {
                return Err(RunError::ExistingRun { dir: out });
            }
            if resume && has_checkpoints && !allow_config_change {
                let changes = config_changes(&out, &config, &inputs)?;
                if !changes.is_empty() {
                    return Err(RunError::ConfigChanged { dir: out, changes });
                }
            }
            Some(lock)
        }
        false => None,
    };

    // The trainer, from the newest checkpoint that verifies: it only reads, so a folder
    // whose checkpoints are all unusable is refused before the record is rewritten.
    let trainee = UnoTrainee::new(model, objective)
        .with_codec(codec)
        .with_latent_cache(config.data.latent_cache_mib.saturating_mul(1 << 20))
        .with_trainable(config.model.trainable)
        .with_layer_checkpointing(
            config
                .model
                .checkpoint_layers
                .then_some(config.model.checkpoint_above_tokens),
        )
        .with_precision(config.model.precision);
    let trainer = if resume {
        Trainer::resume_or_new(config.trainer.clone(), trainee, device.clone())?
    } else {
        Trainer::new(config.trainer.clone(), trainee, device.clone())?
    };
    let rejected_checkpoints = trainer.rejected_checkpoints().to_vec();
    let alignment = config.diagnostics.alignment;
    if !writer {
        return Ok(Ready {
            trainer,
            prepared,
            lock,
            out,
            rejected_checkpoints,
            alignment,
        });
    }

    // Writes: the record, then the folder's configs (weights at the end).
    save_record(&out, &config, &inputs)?;
    model_config.save_folder(&out)?;
    save_codec(&trainer.model().codec, &out)?;
    // The vocabulary the run trains with, for `generate` (a release folder has its own).
    let tokenizer_copy = out.join(TOKENIZER_FILE);
    match &tokenizer {
        Some((_, path)) => {
            if std::fs::canonicalize(path).ok() != std::fs::canonicalize(&tokenizer_copy).ok() {
                std::fs::copy(path, &tokenizer_copy).map_err(|source| RunError::Io {
                    action: "copy the tokenizer to",
                    path: tokenizer_copy.clone(),
                    source,
                })?;
            }
        }
        None => synthetic_vocabulary.save(&tokenizer_copy)?,
    }
    Ok(Ready {
        trainer,
        prepared,
        lock,
        out,
        rejected_checkpoints,
        alignment,
    })
}

/// The embedded training set of `data` (any non-manifest data; the synthetic scenes
/// otherwise, unused) and its held-out set, drawn at `data.vae_image.max` pixels.
fn synthetic_sets(
    data: &TrainData,
    config: &RunConfig,
) -> Result<(SyntheticScenes, SyntheticScenes), RunError> {
    let grid = SyntheticConfig {
        image_size: config.data.vae_image.max,
        seed: config.trainer.seed,
        ..SyntheticConfig::default()
    };
    let held_out_seed = config.trainer.seed ^ HELD_OUT_SEED;
    Ok(match data {
        TrainData::ShapesBench(bench) => {
            let make = || {
                ShapesBench::new(ShapesBenchConfig {
                    seed: bench.bench_seed,
                })
            };
            let fraction = bench.understanding_fraction;
            if !(0.0..=1.0).contains(&fraction) {
                return Err(RunError::InvalidConfig {
                    key: "ShapesBenchData.understanding_fraction",
                    value: fraction.to_string(),
                    reason: "must be in [0, 1]",
                });
            }
            let finish = |set: SyntheticScenes| -> Result<SyntheticScenes, RunError> {
                Ok(set
                    .with_understanding(fraction)?
                    .with_prompt_captions(bench.caption_is_prompt))
            };
            (
                finish(SyntheticScenes::shapes_bench(
                    make(),
                    grid.len,
                    grid.image_size,
                )?)?,
                finish(SyntheticScenes::shapes_bench_held_out(
                    make(),
                    held_out_seed,
                    grid.len,
                    grid.image_size,
                )?)?,
            )
        }
        _ => (
            SyntheticScenes::new(grid.clone())?,
            SyntheticScenes::new(SyntheticConfig {
                seed: held_out_seed,
                ..grid
            })?,
        ),
    })
}

/// The training batches and held-out set of a run, ready before anything is written.
enum Prepared<B: AutodiffBackend> {
    /// A manifest, and an optional held-out manifest.
    Manifest(PackedBatches<ManifestDataset, B>, Option<HeldOut<B>>),
    /// The synthetic scenes and unseen scenes.
    Synthetic(PackedBatches<SyntheticScenes, B>, HeldOut<B>),
}

/// A tokenizer must frame texts with the model's special tokens and produce ids the
/// model's embedding has rows for.
fn check_tokenizer(
    tokenizer: &TextTokenizer,
    path: &Path,
    model: &BagelConfig,
) -> Result<(), RunError> {
    let refuse = |reason: String| {
        Err(RunError::Tokenizer {
            path: path.to_path_buf(),
            reason,
        })
    };
    if tokenizer.vocab_size() > model.llm.vocab_size {
        return refuse(format!(
            "{} tokens, but the model embeds only {}",
            tokenizer.vocab_size(),
            model.llm.vocab_size
        ));
    }
    match tokenizer.special_tokens() {
        Ok(t) if t == model.special_tokens => Ok(()),
        Ok(t) => refuse(format!(
            "special tokens {t:?}, but the model was trained with {:?}",
            model.special_tokens
        )),
        Err(e) => refuse(e.to_string()),
    }
}

/// Micro-batches of `dataset` with BAGEL's condition dropout, in the run's order (shard
/// `rank` of `peers` of it when given).
fn batches<B: AutodiffBackend, D: Dataset>(
    dataset: D,
    config: &RunConfig,
    packing: &PackingConfig,
    device: &B::Device,
    shard: Option<(usize, usize)>,
) -> PackedBatches<D, B> {
    let batches = PackedBatches::new(
        dataset,
        config.data.batch,
        packing.clone(),
        ConditionDropoutConfig::new(),
        device.clone(),
    );
    let batches = if config.data.shuffle {
        batches.shuffled(config.trainer.seed)
    } else {
        batches
    };
    match shard {
        Some((rank, peers)) => batches.sharded(rank, peers),
        None => batches,
    }
}

/// The fixed evaluation batches of `dataset`, under noise seeded by the run's seed.
fn held_out<B: AutodiffBackend, D: Dataset>(
    dataset: D,
    config: &RunConfig,
    packing: &PackingConfig,
    device: &B::Device,
) -> Result<HeldOut<B>, RunError> {
    HeldOut::new(
        dataset,
        EVAL_BATCHES,
        config.data.batch,
        packing.clone(),
        device.clone(),
        config.trainer.seed,
    )
    .map_err(RunError::Eval)
}

/// Train; every `metrics.eval_every` steps evaluate the model and its EMA on `held_out`
/// (`eval_*` and `ema_eval_*` lines in metrics.jsonl), and with `alignment` the model's
/// gradient alignment (`align_*`).
fn fit<B: AutodiffBackend, D: Dataset>(
    trainer: &mut Trainer<B, UnoTrainee<B>>,
    mut data: PackedBatches<D, B>,
    held_out: Option<&HeldOut<B>>,
    alignment: bool,
) -> Result<TrainSummary, RunError> {
    let Some(held_out) = held_out else {
        return Ok(trainer.fit(&mut data, None)?);
    };
    let mut hook = |_step: u64, model: &UnoTrainee<B>, ema: &UnoTrainee<B>| {
        let mut values = held_out.evaluate(model, "eval_")?;
        values.extend(held_out.evaluate(ema, "ema_eval_")?);
        if alignment {
            values.extend(held_out.alignment(model, "align_")?);
        }
        Ok(values)
    };
    Ok(trainer.fit(&mut data, Some(&mut hook))?)
}
