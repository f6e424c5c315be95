//! [`Trainer`]: the training loop (forward, backward, accumulation, global clipping, AdamW,
//! EMA, guards, metrics, checkpoints, resume).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::ParamId;
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::{Tensor, backend::AutodiffBackend};
use rand::RngCore;

use crate::checkpoint::{
    CheckpointWriter, OPTIMIZER_FILE, STATE_FORMAT_VERSION, TrainerState, list_checkpoints,
    prune_checkpoints, read_verified_state,
};
use crate::clip::clip_global_norm;
use crate::config::TrainConfig;
use crate::divergence::DivergenceGuard;
use crate::ema::{ema_graft, ema_init, ema_update};
use crate::error::{BoxError, Result, TrainError};
use crate::leftovers::remove_stale_leftovers;
use crate::lock::RunLock;
use crate::metrics::{MetricsWriter, StepMetrics, trim_metrics};
use crate::model::{DataSource, StepContext, TrainStep};
use crate::optim::{
    OptimizerRecord, TrainOptimizer, adamw, optimizer_from_bytes, optimizer_to_bytes,
};
use crate::params::{TrainableParams, param_inventory, reassign_ids};
use crate::progress::Progress;
use crate::rng::TrainRng;
use crate::schedule::LrSchedule;
use crate::summary::TrainSummary;

/// Evaluation hook: `(step, model, ema) -> named values`, run every `metrics.eval_every`
/// steps; the values go to `metrics.jsonl` as an `eval` line.
pub type EvalHook<'a, M> = dyn FnMut(u64, &M, &M) -> Result<Vec<(String, f64)>, BoxError> + 'a;

/// The model and its EMA copy, moved out and back in around the optimizer step.
struct Weights<M> {
    model: M,
    ema: M,
}

/// Trains a [`TrainStep`] model; see the crate docs for the whole picture.
pub struct Trainer<B: AutodiffBackend, M: TrainStep<B>> {
    config: TrainConfig,
    device: B::Device,
    weights: Option<Weights<M>>,
    optim: TrainOptimizer<M, B>,
    schedule: LrSchedule,
    trainable: TrainableParams,
    step: u64,
    data_position: u64,
    /// The data source's state after the last step read ([`DataSource::state`]); on resume,
    /// the checkpoint's, restored into the data source before the first batch.
    data_state: Option<serde_json::Value>,
    /// Whether `data_state` still has to be restored into the data source (resume).
    restore_data: bool,
    rng: TrainRng,
    consecutive_skips: u32,
    skipped_total: u64,
    last_checkpoint: Option<(u64, PathBuf)>,
    divergence: DivergenceGuard,
    stop: Option<Arc<AtomicBool>>,
    lock: Option<RunLock>,
    rejected: Vec<(PathBuf, String)>,
}

impl<B: AutodiffBackend, M: TrainStep<B>> Trainer<B, M> {
    /// A fresh run: validates `config`, freezes nothing itself (the model's `no_grad`
    /// parameters are the frozen ones), copies the model into the EMA.
    pub fn new(config: TrainConfig, model: M, device: B::Device) -> Result<Self> {
        config.validate()?;
        let trainable = TrainableParams::of::<B, M>(&model);
        let ema = ema_init::<B, M>(&model, &trainable);
        let guards = &config.guards;
        Ok(Self {
            divergence: DivergenceGuard::new(guards.divergence_factor, guards.divergence_window),
            stop: None,
            lock: None,
            rejected: Vec::new(),
            optim: adamw::<B, M>(&config.optimizer),
            schedule: LrSchedule::new(&config.schedule, config.optimizer.lr, config.iterations),
            rng: TrainRng::new(config.seed),
            weights: Some(Weights { model, ema }),
            trainable,
            device,
            config,
            step: 0,
            data_position: 0,
            data_state: None,
            restore_data: false,
            consecutive_skips: 0,
            skipped_total: 0,
            last_checkpoint: None,
        })
    }

    /// Resume from the newest complete checkpoint in `config.output_dir` that verifies
    /// (sizes and checksums), or start fresh when there is none. `model` is the freshly
    /// built model (frozen parts loaded, `no_grad` applied); its weights are replaced by
    /// the checkpoint's.
    ///
    /// A newer checkpoint that fails verification (a flipped byte, a truncated file) is
    /// passed over for the next older one; [`rejected_checkpoints`](Self::rejected_checkpoints)
    /// lists what was passed over and why (and, with `metrics.progress`, it is printed to
    /// stderr). When checkpoints exist but none verifies, the error
    /// [`TrainError::NoUsableCheckpoint`] lists them all rather than start from scratch.
    pub fn resume_or_new(config: TrainConfig, model: M, device: B::Device) -> Result<Self> {
        let mut rejected: Vec<(PathBuf, String)> = Vec::new();
        for (_, dir) in list_checkpoints(&config.output_dir)?.into_iter().rev() {
            match read_verified_state(&dir) {
                Ok(state) => {
                    if config.metrics.progress {
                        for (path, reason) in &rejected {
                            eprintln!(
                                "warning: checkpoint {} is unusable ({reason}); resuming from {}",
                                path.display(),
                                dir.display()
                            );
                        }
                    }
                    let mut trainer = Self::from_state(config, model, device, &dir, state)?;
                    trainer.rejected = rejected;
                    return Ok(trainer);
                }
                Err(TrainError::BadCheckpoint { path, reason }) => rejected.push((path, reason)),
                Err(e) => return Err(e),
            }
        }
        if rejected.is_empty() {
            Self::new(config, model, device)
        } else {
            Err(TrainError::NoUsableCheckpoint {
                dir: config.output_dir.clone(),
                reasons: rejected
                    .iter()
                    .map(|(path, reason)| format!("{}: {reason}", path.display()))
                    .collect(),
            })
        }
    }

    /// Resume from checkpoint directory `dir`: model, EMA, optimizer state, step, RNG and
    /// data position, so that training continues exactly as if never interrupted.
    pub fn from_checkpoint(
        config: TrainConfig,
        model: M,
        device: B::Device,
        dir: &Path,
    ) -> Result<Self> {
        let state = read_verified_state(dir)?;
        Self::from_state(config, model, device, dir, state)
    }

    /// [`from_checkpoint`](Self::from_checkpoint) with the state already read and verified.
    fn from_state(
        config: TrainConfig,
        model: M,
        device: B::Device,
        dir: &Path,
        state: TrainerState,
    ) -> Result<Self> {
        let bad = |reason: String| TrainError::BadCheckpoint {
            path: dir.to_path_buf(),
            reason,
        };
        let ext = M::weights_extension();
        let model_path = dir.join(format!("model.{ext}"));
        let ema_path = dir.join(format!("ema.{ext}"));
        let loaded_ema =
            model
                .clone()
                .load_weights(&ema_path)
                .map_err(|source| TrainError::Weights {
                    path: ema_path.clone(),
                    source,
                })?;
        let model = model
            .load_weights(&model_path)
            .map_err(|source| TrainError::Weights {
                path: model_path.clone(),
                source,
            })?;
        let mut trainer = Self::new(config, model, device)?;
        let trained: Vec<&str> = trainer
            .trainable
            .by_path()
            .iter()
            .map(|(p, _)| p.as_str())
            .collect();
        if trained != state.trainable_paths {
            return Err(bad(format!(
                "trainable parameters differ: checkpoint {:?}, model {:?}",
                state.trainable_paths, trained
            )));
        }
        let ids_by_path: HashMap<String, ParamId> = param_inventory::<B, M>(trainer.model())
            .into_iter()
            .map(|p| (p.path, p.id))
            .collect();
        let loaded_ema = reassign_ids::<B, M>(loaded_ema, &ids_by_path);
        let weights = trainer.weights.take().ok_or(TrainError::Poisoned)?;
        let ema = ema_graft::<B, M>(&weights.model, &loaded_ema, &trainer.trainable);
        drop(loaded_ema);
        trainer.weights = Some(Weights {
            model: weights.model,
            ema,
        });

        let optim_path = dir.join(OPTIMIZER_FILE);
        let bytes =
            std::fs::read(&optim_path).map_err(|e| TrainError::io("read", &optim_path, e))?;
        let trainable_ids: HashMap<String, ParamId> =
            trainer.trainable.by_path().iter().cloned().collect();
        trainer.optim = optimizer_from_bytes::<B, M>(
            trainer.optim,
            bytes,
            &state.optimizer_param_paths,
            &trainable_ids,
            &trainer.device,
            &optim_path,
        )?;
        trainer.step = state.step;
        trainer.data_position = state.data_position;
        trainer.restore_data = state.data_state.is_some();
        trainer.data_state = state.data_state;
        trainer.rng = TrainRng::from_state(state.rng_state);
        // A fresh skip budget: a checkpoint written by the skip guard records the streak
        // that aborted the run; resuming it must not abort again on the first bad batch.
        trainer.consecutive_skips = 0;
        trainer.skipped_total = state.skipped_total;
        trainer.last_checkpoint = Some((state.step, dir.to_path_buf()));
        Ok(trainer)
    }

    /// The run's configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Checkpoints that [`resume_or_new`](Self::resume_or_new) passed over because they
    /// failed verification, newest first, with the reason.
    pub fn rejected_checkpoints(&self) -> &[(PathBuf, String)] {
        &self.rejected
    }

    /// Poll `flag` between steps: once it is set, [`fit`](Self::fit) finishes the current
    /// step, writes a checkpoint and returns [`TrainError::Interrupted`]
    /// ([`crate::install_stop_signals`] sets it on SIGTERM / SIGINT).
    pub fn set_stop_flag(&mut self, flag: Arc<AtomicBool>) {
        self.stop = Some(flag);
    }

    /// Keep `lock` (of `config.output_dir`) for the trainer's life, so that a caller that
    /// locked the folder before writing into it (as `uno_core::train::run` does) keeps it
    /// through training. Without one, [`fit`](Self::fit) locks the folder for its duration.
    pub fn hold_lock(&mut self, lock: RunLock) {
        self.lock = Some(lock);
    }

    /// Give back the lock given to [`hold_lock`](Self::hold_lock), e.g. to keep the
    /// folder locked while writing final files after [`into_parts`](Self::into_parts).
    pub fn take_lock(&mut self) -> Option<RunLock> {
        self.lock.take()
    }

    /// The model being trained.
    pub fn model(&self) -> &M {
        // Only `None` while a step is moving the weights; never observable from outside.
        &self
            .weights
            .as_ref()
            .expect("weights present between steps")
            .model
    }

    /// The EMA copy of the model (frozen parameters shared with the model).
    pub fn ema(&self) -> &M {
        &self
            .weights
            .as_ref()
            .expect("weights present between steps")
            .ema
    }

    /// Give back the model and its EMA.
    pub fn into_parts(self) -> Result<(M, M)> {
        let w = self.weights.ok_or(TrainError::Poisoned)?;
        Ok((w.model, w.ema))
    }

    /// Optimizer steps applied so far.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Next data position (micro-batch index) to be read.
    pub fn data_position(&self) -> u64 {
        self.data_position
    }

    /// Current RNG state.
    pub fn rng_state(&self) -> u64 {
        self.rng.state()
    }

    /// The trainable parameters.
    pub fn trainable(&self) -> &TrainableParams {
        &self.trainable
    }

    /// The learning-rate schedule.
    pub fn schedule(&self) -> &LrSchedule {
        &self.schedule
    }

    /// A copy of the optimizer state (to inspect which parameters have Adam moments).
    pub fn optimizer_record(&self) -> OptimizerRecord<M, B> {
        self.optim.to_record()
    }

    /// Last checkpoint written or resumed from.
    pub fn last_checkpoint(&self) -> Option<&Path> {
        self.last_checkpoint.as_ref().map(|(_, p)| p.as_path())
    }

    /// One optimizer step over `grad_accumulation` micro-batches. A non-finite loss or
    /// gradient norm skips the update (the weights, EMA and optimizer state are untouched,
    /// the data position still advances past the bad batches) and returns
    /// `skipped: true`. Does not write metrics or checkpoints; [`fit`](Self::fit) does.
    pub fn train_step<D>(&mut self, data: &mut D) -> Result<StepMetrics>
    where
        D: DataSource<Batch = M::Batch>,
    {
        let started = Instant::now();
        if self.restore_data {
            if let Some(state) = &self.data_state {
                data.restore(state).map_err(|source| TrainError::Data {
                    position: self.data_position,
                    source,
                })?;
            }
            self.restore_data = false;
        }
        let lr = self.schedule.lr_at(self.step);
        let k = self.config.grad_accumulation;
        let first_position = self.data_position;
        let weights = self.weights.as_ref().ok_or(TrainError::Poisoned)?;

        let mut accumulator = GradientsAccumulator::<M>::new();
        let mut single: Option<GradientsParams> = None;
        let mut loss_sum = 0.0;
        let mut components: BTreeMap<String, f64> = BTreeMap::new();
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let (mut tokens, mut samples) = (0u64, 0u64);
        let mut finite = true;
        let mut skip_reason = None;
        let mut read_end = first_position;
        // All micro-batches first: a token-weighted model needs the step's totals before
        // its first forward (their pixels are held until the step ends).
        let mut batches = Vec::with_capacity(k as usize);
        for _ in 0..k {
            let position = self.data_position;
            let batch = data
                .batch(position, &mut self.rng)
                .map_err(|source| TrainError::Data { position, source })?;
            self.data_position += 1;
            batches.push((position, batch));
        }
        self.data_state = data.state();
        let step_counts = step_totals(batches.iter().map(|(_, b)| weights.model.loss_counts(b)))
            .map_err(|source| TrainError::Forward {
                step: self.step,
                source,
            })?;
        // Token-weighted losses are already fractions of the step: sum them.
        let scale = if step_counts.is_empty() { k } else { 1 };
        for (micro, (position, batch)) in (0..k).zip(batches) {
            // End of the positions forwarded (a non-finite micro-batch stops the step).
            read_end = position + 1;
            let ctx = StepContext {
                step: self.step,
                micro_batch: micro,
                data_position: position,
                seed: self.rng.next_u64(),
                step_counts: step_counts.clone(),
            };
            let out =
                weights
                    .model
                    .forward_step(batch, &ctx)
                    .map_err(|source| TrainError::Forward {
                        step: self.step,
                        source,
                    })?;
            let values =
                read_scalars(&out.loss, &out.components).map_err(|source| TrainError::Forward {
                    step: self.step,
                    source,
                })?;
            tokens += out.tokens;
            samples += out.samples;
            loss_sum += values[0];
            for ((name, _), v) in out.components.iter().zip(&values[1..]) {
                *components.entry((*name).to_string()).or_default() += v;
            }
            for (name, n) in &out.counts {
                *counts.entry((*name).to_string()).or_default() += n;
            }
            if !values[0].is_finite() {
                finite = false;
                skip_reason = Some(format!("non-finite loss at data position {position}"));
                break;
            }
            // Average micro-batch gradients by scaling each loss (exact for k = 1).
            let loss = if scale > 1 {
                out.loss.div_scalar(f64::from(scale))
            } else {
                out.loss
            };
            let grads = GradientsParams::from_grads(loss.backward(), &weights.model);
            if k > 1 {
                accumulator.accumulate::<B>(&weights.model, grads);
            } else {
                single = Some(grads);
            }
        }
        // Keep data positions aligned to whole steps even when a step stops early.
        self.data_position = first_position + u64::from(k);
        let micro_done = f64::from(scale);
        let loss = loss_sum / micro_done;
        for v in components.values_mut() {
            *v /= micro_done;
        }

        let mut grad_norm = f64::NAN;
        let mut skipped = !finite;
        if finite {
            let grads = single.take().unwrap_or_else(|| accumulator.grads());
            let (grads, norm) = clip_global_norm::<B, M>(
                &weights.model,
                grads,
                &self.trainable,
                self.config.optimizer.grad_clip,
            );
            grad_norm = norm;
            if norm.is_finite() {
                let Weights { model, ema } = self.weights.take().ok_or(TrainError::Poisoned)?;
                let model = self.optim.step(lr, model, grads);
                let ema = ema_update::<B, M>(ema, &model, &self.trainable, self.config.ema.decay);
                self.weights = Some(Weights { model, ema });
                self.step += 1;
                self.consecutive_skips = 0;
            } else {
                skipped = true;
                skip_reason = Some(format!("non-finite gradient norm {norm}"));
            }
        }
        let mut sample_ids = Vec::new();
        if skipped {
            self.consecutive_skips += 1;
            self.skipped_total += 1;
            sample_ids = (first_position..read_end)
                .flat_map(|p| data.sample_ids(p))
                .collect();
        }
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        Ok(StepMetrics {
            step: if skipped { self.step + 1 } else { self.step },
            lr,
            loss,
            components,
            grad_norm,
            tokens_per_s: tokens as f64 / secs,
            samples_per_s: samples as f64 / secs,
            step_time_s: secs,
            skipped,
            counts,
            data_position: Some(first_position),
            skip_reason,
            sample_ids,
        })
    }

    /// Write a checkpoint of the current state into `output_dir/step-XXXXXX/` (atomically),
    /// then delete all but the `checkpoint.keep_last` most recent ones.
    pub fn save_checkpoint(&mut self) -> Result<PathBuf> {
        let root = self.config.output_dir.clone();
        let writer = CheckpointWriter::begin(&root, self.step)?;
        let weights = self.weights.as_ref().ok_or(TrainError::Poisoned)?;
        let ext = M::weights_extension();
        for (name, module) in [("model", &weights.model), ("ema", &weights.ema)] {
            let path = writer.path(&format!("{name}.{ext}"));
            module
                .save_weights(&path)
                .map_err(|source| TrainError::Weights { path, source })?;
        }
        let paths: HashMap<ParamId, String> = self
            .trainable
            .by_path()
            .iter()
            .map(|(p, id)| (*id, p.clone()))
            .collect();
        let optim_path = writer.path(OPTIMIZER_FILE);
        let (bytes, table) = optimizer_to_bytes::<B, M>(&self.optim, &paths, &optim_path)?;
        writer.write_bytes(OPTIMIZER_FILE, &bytes)?;
        let state = TrainerState {
            format_version: STATE_FORMAT_VERSION,
            step: self.step,
            data_position: self.data_position,
            rng_state: self.rng.state(),
            seed: self.config.seed,
            consecutive_skips: self.consecutive_skips,
            skipped_total: self.skipped_total,
            optimizer_param_paths: table,
            trainable_paths: self
                .trainable
                .by_path()
                .iter()
                .map(|(p, _)| p.clone())
                .collect(),
            files: BTreeMap::new(),
            data_state: self.data_state.clone(),
            checksums: BTreeMap::new(),
            state_checksum: None,
        };
        let dir = writer.commit(state)?;
        prune_checkpoints(&root, self.config.checkpoint.keep_last)?;
        self.last_checkpoint = Some((self.step, dir.clone()));
        Ok(dir)
    }

    /// Train until `iterations` steps are applied: metrics every step, evaluation every
    /// `metrics.eval_every` steps, then checkpoints every `checkpoint.every` steps and at the
    /// end (evaluating first, so that a checkpoint's evaluation is never lost to a crash
    /// between the two).
    ///
    /// Before the first step it locks the output folder ([`RunLock`], unless the trainer
    /// already [holds](Self::hold_lock) it), removes leftovers of killed writes
    /// ([`crate::leftovers`]), renames the checkpoints the resume passed over to
    /// `step-XXXXXX.rejected` (so that they neither outrank nor prune the new ones) and
    /// cuts `metrics.jsonl` back to the current state ([`trim_metrics`]).
    ///
    /// Stops early with an error:
    /// * after `guards.max_consecutive_skips` skipped steps in a row: saves a checkpoint
    ///   (its weights are those of the last good step, since skipped steps change no
    ///   weights) and returns [`TrainError::TooManySkips`];
    /// * when the loss diverges ([`crate::divergence`]): returns [`TrainError::Diverged`]
    ///   without writing a checkpoint of the diverged weights;
    /// * when the [stop flag](Self::set_stop_flag) is set: finishes the current step,
    ///   saves a checkpoint and returns [`TrainError::Interrupted`].
    pub fn fit<D>(
        &mut self,
        data: &mut D,
        mut eval: Option<&mut EvalHook<'_, M>>,
    ) -> Result<TrainSummary>
    where
        D: DataSource<Batch = M::Batch>,
    {
        let started = Instant::now();
        let start_step = self.step;
        let _lock = match &self.lock {
            Some(_) => None,
            None => Some(RunLock::acquire(&self.config.output_dir)?),
        };
        remove_stale_leftovers(&self.config.output_dir)?;
        self.set_rejected_aside()?;
        trim_metrics(&self.config.output_dir, self.step, self.data_position)?;
        let mut metrics = MetricsWriter::open(&self.config.output_dir)?;
        let progress = Progress::new(
            self.config.iterations,
            self.step,
            self.config.metrics.progress,
        );
        let mut losses = Vec::new();
        let (mut skipped, mut tokens) = (0u64, 0f64);
        while self.step < self.config.iterations {
            if self.stop.as_ref().is_some_and(|f| f.load(Ordering::SeqCst)) {
                let checkpoint = self.checkpoint_now()?;
                progress.finish();
                return Err(TrainError::Interrupted {
                    step: self.step,
                    checkpoint,
                });
            }
            let m = self.train_step(data)?;
            metrics.write_step(&m)?;
            progress.update(self.step, m.loss, m.lr, m.skipped);
            tokens += m.tokens_per_s * m.step_time_s;
            if m.skipped {
                skipped += 1;
                if self.consecutive_skips >= self.config.guards.max_consecutive_skips {
                    let checkpoint = self.save_checkpoint()?;
                    progress.finish();
                    return Err(TrainError::TooManySkips {
                        skips: self.consecutive_skips,
                        step: self.step,
                        checkpoint,
                    });
                }
                continue;
            }
            losses.push(m.loss);
            if let Some(d) = self.divergence.observe(m.loss) {
                progress.finish();
                return Err(TrainError::Diverged {
                    step: self.step,
                    level: d.level,
                    best: d.best,
                    factor: d.factor,
                    last_checkpoint: self.last_checkpoint.as_ref().map(|(_, p)| p.clone()),
                });
            }
            let eval_every = self.config.metrics.eval_every;
            if let Some(hook) = eval.as_deref_mut()
                && eval_every > 0
                && self.step.is_multiple_of(eval_every)
            {
                let step = self.step;
                let values = hook(step, self.model(), self.ema())
                    .map_err(|source| TrainError::Eval { step, source })?;
                metrics.write_eval(step, &values)?;
            }
            let every = self.config.checkpoint.every;
            if every > 0 && self.step.is_multiple_of(every) {
                self.save_checkpoint()?;
            }
        }
        self.checkpoint_now()?;
        progress.finish();
        let window = self.config.metrics.summary_window;
        let (first_window_loss, last_window_loss) = TrainSummary::windows(&losses, window);
        let wall_time_s = started.elapsed().as_secs_f64();
        let summary = TrainSummary {
            start_step,
            end_step: self.step,
            skipped,
            window,
            first_window_loss,
            last_window_loss,
            wall_time_s,
            tokens_per_s: tokens / wall_time_s.max(1e-9),
            last_checkpoint: self.last_checkpoint.as_ref().map(|(_, p)| p.clone()),
        };
        if self.config.metrics.progress {
            println!("{summary}");
        }
        Ok(summary)
    }
}

/// Element-wise sum of the micro-batches' loss counts; empty when none reports any, an
/// error when they disagree on the number of terms.
fn step_totals(per_batch: impl Iterator<Item = Vec<u64>>) -> Result<Vec<u64>, BoxError> {
    let mut totals: Vec<u64> = Vec::new();
    for (micro, counts) in per_batch.enumerate() {
        if micro == 0 {
            totals = counts;
        } else if counts.len() != totals.len() {
            return Err(format!(
                "micro-batch {micro} reports {} loss counts, micro-batch 0 reported {}",
                counts.len(),
                totals.len()
            )
            .into());
        } else {
            totals.iter_mut().zip(counts).for_each(|(t, c)| *t += c);
        }
    }
    Ok(totals)
}

impl<B: AutodiffBackend, M: TrainStep<B>> Trainer<B, M> {
    /// Rename the checkpoints the resume passed over to `step-XXXXXX.rejected` (kept for
    /// inspection, never resumed from, never counted by `keep_last`): left under their
    /// names, a corrupt newer checkpoint would outrank, and make pruning delete, the good
    /// ones this run writes.
    fn set_rejected_aside(&self) -> Result<()> {
        for (dir, _) in &self.rejected {
            if !dir.is_dir() {
                continue;
            }
            let mut aside = dir.with_extension("rejected");
            let mut n = 1;
            while aside.exists() {
                aside = dir.with_extension(format!("rejected-{n}"));
                n += 1;
            }
            std::fs::rename(dir, &aside).map_err(|e| TrainError::io("rename", dir, e))?;
        }
        Ok(())
    }

    /// A checkpoint of the current step: the last one written when it is of this step,
    /// else a new one.
    fn checkpoint_now(&mut self) -> Result<PathBuf> {
        match &self.last_checkpoint {
            Some((step, dir)) if *step == self.step => Ok(dir.clone()),
            _ => self.save_checkpoint(),
        }
    }
}

/// Read the loss and the components back in one device sync.
fn read_scalars<B: AutodiffBackend>(
    loss: &Tensor<B, 1>,
    components: &[(&'static str, Tensor<B, 1>)],
) -> Result<Vec<f64>, BoxError> {
    let mut parts = vec![loss.clone().inner().reshape([1])];
    for (name, t) in components {
        if t.shape().num_elements() != 1 {
            return Err(format!(
                "loss component `{name}` has shape {:?}, expected [1]",
                t.dims()
            )
            .into());
        }
        parts.push(t.clone().inner().reshape([1]));
    }
    if loss.shape().num_elements() != 1 {
        return Err(format!("loss has shape {:?}, expected [1]", loss.dims()).into());
    }
    let values = Tensor::cat(parts, 0)
        .into_data()
        .convert::<f64>()
        .to_vec::<f64>()
        .map_err(|e| format!("reading the loss back: {e:?}"))?;
    Ok(values)
}
