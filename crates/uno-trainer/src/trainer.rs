//! [`Trainer`]: the training loop (forward, backward, accumulation, global clipping, AdamW,
//! EMA, guards, metrics, checkpoints, resume).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::ParamId;
use burn::optim::Optimizer;
use burn::tensor::backend::AutodiffBackend;
use rand::RngCore;

use crate::checkpoint::{
    CheckpointWriter, OPTIMIZER_FILE, STATE_FORMAT_VERSION, TrainerState, checkpoint_dir_name,
    list_checkpoints, optimizer_shard_file, prune_checkpoints, read_verified_state,
};
use crate::clip::clip_global_norm;
use crate::config::TrainConfig;
use crate::data_resume::DataResume;
use crate::divergence::DivergenceGuard;
use crate::ema::{ema_graft, ema_init, ema_update};
use crate::error::{BoxError, Result, TrainError};
use crate::leftovers::remove_stale_leftovers;
use crate::lock::RunLock;
use crate::metrics::{MetricsWriter, StepMetrics, trim_metrics};
use crate::micro::{forward_micro_batches, step_totals};
use crate::model::{DataSource, TrainStep};
use crate::optim::{
    OptimizerRecord, TrainOptimizer, adamw, optimizer_to_bytes, read_optimizer_state,
};
use crate::parallel::{OptimizerShard, Peer, agreed, all_reduce_grads, broadcast_module};
use crate::params::{TrainableParams, param_inventory, reassign_ids};
use crate::progress::Progress;
use crate::rng::TrainRng;
use crate::schedule::LrSchedule;
use crate::summary::TrainSummary;

/// Evaluation hook: `(step, model, ema) -> named values`, run every `metrics.eval_every`
/// steps; the values go to `metrics.jsonl` as an `eval` line.
pub type EvalHook<'a, M> = dyn FnMut(u64, &M, &M) -> Result<Vec<(String, f64)>, BoxError> + 'a;

/// How a checkpoint holds the optimizer state.
enum SavedOptimizer {
    /// One file, [`OPTIMIZER_FILE`], written by the checkpoint's writer.
    Whole,
    /// One file per peer, already written by each ([`optimizer_shard_file`]); their
    /// id -> path tables by rank.
    Shares(Vec<BTreeMap<u64, String>>),
}

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
    /// the checkpoint's single-device state, restored before the first batch.
    data_state: Option<serde_json::Value>,
    /// Whether the checkpoint's data states still have to be restored into the data source
    /// (resume; done as the first step reads, when this peer's rank is known).
    restore_data: bool,
    /// A resumed data-parallel checkpoint's data states, by rank, until the first step
    /// restores this peer's (or one re-divided from all of them: [`DataResume`]).
    peer_data_states: Vec<serde_json::Value>,
    rng: TrainRng,
    consecutive_skips: u32,
    skipped_total: u64,
    last_checkpoint: Option<(u64, PathBuf)>,
    divergence: DivergenceGuard,
    stop: Option<Arc<AtomicBool>>,
    lock: Option<RunLock>,
    rejected: Vec<(PathBuf, String)>,
    /// This replica's place in a data-parallel run ([`Self::join`]).
    peer: Option<Peer<B>>,
    /// The parameters this peer keeps optimizer state for, when it is sharded
    /// (`optimizer.shard_state` on more than one peer).
    shard: Option<OptimizerShard>,
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
            peer: None,
            shard: None,
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
            peer_data_states: Vec::new(),
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

        let trainable_ids: HashMap<String, ParamId> =
            trainer.trainable.by_path().iter().cloned().collect();
        let record = read_optimizer_state::<B, M>(dir, &state, &trainable_ids, &trainer.device)?;
        trainer.optim = trainer.optim.load_record(record);
        trainer.step = state.step;
        trainer.data_position = state.data_position;
        trainer.restore_data = state.data_state.is_some() || !state.peer_data_states.is_empty();
        trainer.data_state = state.data_state;
        trainer.peer_data_states = state.peer_data_states;
        trainer.rng = TrainRng::from_state(state.rng_state);
        // A fresh skip budget: a checkpoint written by the skip guard records the streak
        // that aborted the run; resuming it must not abort again on the first bad batch.
        trainer.consecutive_skips = 0;
        trainer.skipped_total = state.skipped_total;
        trainer.last_checkpoint = Some((state.step, dir.to_path_buf()));
        Ok(trainer)
    }

    /// Join a data-parallel run as `peer` (see [`crate::parallel`]); every peer calls it,
    /// after [`new`](Self::new) or a resume, with the same configuration. The model's
    /// weights and the EMA's trainable ones become peer 0's, bit for bit; the peers must
    /// stand at the same step and data position (resumed from the same checkpoint).
    ///
    /// With `optimizer.shard_state` and more than one peer, the peer keeps the optimizer
    /// state of its own share of the trainable parameters only (of a resumed state, which
    /// holds every parameter's, it drops the rest).
    pub fn join(mut self, peer: Peer<B>) -> Result<Self> {
        let Weights { model, ema } = self.weights.take().ok_or(TrainError::Poisoned)?;
        let model = broadcast_module(&peer, model, None)?;
        // The EMA shares the model's frozen tensors: take the broadcast ones.
        let ema = ema_graft::<B, M>(&model, &ema, &self.trainable);
        let ema = broadcast_module(&peer, ema, Some(&self.trainable))?;
        peer.check_same_position(self.step, self.data_position)?;
        if self.config.optimizer.shard_state && peer.peers() > 1 {
            let shard = OptimizerShard::of::<B, M>(&model, peer.rank(), peer.peers());
            let mut record = self.optim.to_record();
            record.retain(|id, _| shard.owns(*id));
            let optim = std::mem::replace(&mut self.optim, adamw::<B, M>(&self.config.optimizer));
            self.optim = optim.load_record(record);
            self.shard = Some(shard);
        }
        self.weights = Some(Weights { model, ema });
        self.peer = Some(peer);
        Ok(self)
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
        let lr = self.schedule.lr_at(self.step);
        let k = self.config.grad_accumulation;
        let step = self.step;
        let peer = self.peer.as_ref();
        let (rank, peers) = peer.map_or((0, 1), |p| (p.rank() as u64, p.peers() as u64));
        // The step reads `peers x k` positions; this peer reads its own block of `k`.
        let first_position = self.data_position;
        let step_positions = peers * u64::from(k);
        let own_first = first_position + rank * u64::from(k);
        let weights = self.weights.as_ref().ok_or(TrainError::Poisoned)?;
        // A resumed run's data states go into the source as the first step reads (with
        // the other peers' agreement, so that a state this peer cannot take stops them all).
        let resume = self.restore_data.then(|| {
            DataResume::new(
                self.data_state.clone(),
                self.peer_data_states.clone(),
                rank as usize,
                peers as usize,
            )
        });
        // Peers read different positions: each draws its data randomness from its own
        // stream, split off the shared RNG, which then advances the same on every peer.
        let mut split_rng = self.rng.split(rank);
        let data_rng = match peer {
            Some(_) => &mut split_rng,
            None => &mut self.rng,
        };
        // All micro-batches first: a token-weighted model needs the step's totals before
        // its first forward (their pixels are held until the step ends).
        let (batches, data_state, own_counts) = agreed(peer, step, "reading data", || {
            if let Some(resume) = resume {
                resume.apply(data, rank as usize, peers as usize, own_first)?;
            }
            let mut batches = Vec::with_capacity(k as usize);
            for position in own_first..own_first + u64::from(k) {
                let batch = data
                    .batch(position, data_rng)
                    .map_err(|source| TrainError::Data { position, source })?;
                batches.push((position, batch));
            }
            let state = data.state();
            let counts = step_totals(batches.iter().map(|(_, b)| weights.model.loss_counts(b)))
                .map_err(|source| TrainError::Forward { step, source })?;
            Ok((batches, state, counts))
        })?;
        self.data_state = data_state;
        self.restore_data = false;
        self.peer_data_states = Vec::new();
        // Every peer normalises by the counts of the whole step, all peers together.
        let step_counts = match peer {
            Some(p) => p.sum_exact("all-reduce of the loss counts", &own_counts)?,
            None => own_counts,
        };
        // Seeds as a single device would draw them for the step's positions.
        let seeds: Vec<u64> = (0..step_positions).map(|_| self.rng.next_u64()).collect();
        let own_seeds = &seeds[(rank * u64::from(k)) as usize..];
        // Token-weighted losses are already fractions of the step: sum them.
        let scale = if step_counts.is_empty() {
            step_positions
        } else {
            1
        };
        let micro = agreed(peer, step, "forward and backward", || {
            forward_micro_batches(
                &weights.model,
                batches,
                own_seeds,
                step,
                &step_counts,
                scale,
            )
        })?;
        let mut micro = match peer {
            Some(p) => micro.all_reduce(p)?,
            None => micro,
        };
        // Keep data positions aligned to whole steps even when a step stops early.
        self.data_position = first_position + step_positions;
        let micro_done = scale as f64;
        let loss = micro.loss_sum / micro_done;
        for v in micro.components.values_mut() {
            *v /= micro_done;
        }

        let mut grad_norm = f64::NAN;
        let mut skip_reason = micro.skip_reason;
        let mut skipped = skip_reason.is_some();
        if let (false, Some(grads)) = (skipped, micro.grads.take()) {
            let grads = match peer {
                Some(p) => all_reduce_grads::<B, M>(p, &weights.model, grads, &self.trainable)?,
                None => grads,
            };
            let (grads, norm) = clip_global_norm::<B, M>(
                &weights.model,
                grads,
                &self.trainable,
                self.config.optimizer.grad_clip,
            );
            grad_norm = norm;
            if norm.is_finite() {
                let Weights { model, ema } = self.weights.take().ok_or(TrainError::Poisoned)?;
                let model = match (&self.shard, peer) {
                    // This peer's share, then every share from its owner.
                    (Some(shard), Some(peer)) => {
                        let own = shard.own_grads::<B, M>(&model, grads);
                        let model = self.optim.step(lr, model, own);
                        shard.share_updates(peer, model, &self.trainable)?
                    }
                    _ => self.optim.step(lr, model, grads),
                };
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
            sample_ids = (own_first..micro.read_end)
                .flat_map(|p| data.sample_ids(p))
                .collect();
        }
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        Ok(StepMetrics {
            step: if skipped { self.step + 1 } else { self.step },
            lr,
            loss,
            components: micro.components,
            grad_norm,
            tokens_per_s: micro.tokens as f64 / secs,
            samples_per_s: micro.samples as f64 / secs,
            step_time_s: secs,
            skipped,
            counts: micro.counts,
            data_position: Some(first_position),
            skip_reason,
            sample_ids,
        })
    }

    /// Write a checkpoint of the current state into `output_dir/step-XXXXXX/` (atomically),
    /// then delete all but the `checkpoint.keep_last` most recent ones.
    ///
    /// In a data-parallel run every peer calls it; peer 0 writes once every peer has
    /// arrived, and every peer returns the same outcome.
    pub fn save_checkpoint(&mut self) -> Result<PathBuf> {
        // Nothing read since a resume: the resumed checkpoint's data states still hold,
        // whatever number of peers wrote them (every peer has them all).
        let unread = self
            .restore_data
            .then(|| (self.data_state.clone(), self.peer_data_states.clone()));
        let root = &self.config.output_dir;
        let dir = match &self.peer {
            None => {
                let (single, peers) = unread.unwrap_or((self.data_state.clone(), Vec::new()));
                let writer = CheckpointWriter::begin(root, self.step)?;
                self.write_checkpoint(writer, single, peers, SavedOptimizer::Whole)?
            }
            Some(peer) => {
                let step = self.step;
                peer.agree::<_, TrainError>(step, "finishing the step", Ok(()))?;
                // Each peer's data source has its own cursor: peer 0 saves them all.
                let (single, states) = match unread {
                    Some(saved) => saved,
                    None => (None, peer.gather_data_states(self.data_state.as_ref())?),
                };
                let begun = match peer.is_writer() {
                    true => CheckpointWriter::begin(root, step).map(Some),
                    false => Ok(None),
                };
                let begun = peer.agree(step, "starting the checkpoint", begun)?;
                let optimizer = match &self.shard {
                    Some(_) => self.write_optimizer_share(peer)?,
                    None => SavedOptimizer::Whole,
                };
                let written = match begun {
                    Some(writer) => self
                        .write_checkpoint(writer, single, states, optimizer)
                        .map(Some),
                    None => Ok(None),
                };
                let written = peer.agree(step, "writing the checkpoint", written)?;
                written.unwrap_or_else(|| root.join(checkpoint_dir_name(step)))
            }
        };
        self.last_checkpoint = Some((self.step, dir.clone()));
        Ok(dir)
    }

    /// With sharded optimizer state: every peer writes its own share into the folder that
    /// peer 0 (which began the checkpoint) writes into, and every peer learns every
    /// share's id -> path table; a peer that cannot write stops them all (peer 0's
    /// unfinished folder is then removed with its writer).
    fn write_optimizer_share(&self, peer: &Peer<B>) -> Result<SavedOptimizer> {
        let (step, rank, peers) = (self.step, peer.rank(), peer.peers());
        // The folder is named by peer 0's process id.
        let pid = match peer.is_writer() {
            true => u64::from(std::process::id()),
            false => 0,
        };
        let pid = peer.sum_exact("agreement on the checkpoint folder", &[pid])?[0];
        let tmp = CheckpointWriter::temporary_dir(&self.config.output_dir, step, pid as u32);
        let file = tmp.join(optimizer_shard_file(rank, peers));
        let table = self.optimizer_bytes(&file).and_then(|(bytes, table)| {
            uno_checkpoint::write_synced(&file, &bytes)?;
            Ok(table)
        });
        let table = peer.agree(step, "writing the optimizer shares", table)?;
        let table = serde_json::to_value(table).map_err(|source| TrainError::Json {
            path: file.clone(),
            source,
        })?;
        let tables = peer
            .gather_json(Some(&table))?
            .into_iter()
            .map(|t| {
                serde_json::from_value(t.unwrap_or_default()).map_err(|source| TrainError::Json {
                    path: file.clone(),
                    source,
                })
            })
            .collect::<Result<_>>()?;
        Ok(SavedOptimizer::Shares(tables))
    }

    /// This peer's optimizer state as bytes, and the id -> path table of its keys (`file`
    /// names it in errors).
    fn optimizer_bytes(&self, file: &Path) -> Result<(Vec<u8>, BTreeMap<u64, String>)> {
        let paths: HashMap<ParamId, String> = self
            .trainable
            .by_path()
            .iter()
            .map(|(p, id)| (*id, p.clone()))
            .collect();
        optimizer_to_bytes::<B, M>(&self.optim, &paths, file)
    }

    /// [`save_checkpoint`](Self::save_checkpoint)'s files, written by this process into
    /// `writer`, with the data state of a single device or the data states of all peers.
    fn write_checkpoint(
        &self,
        writer: CheckpointWriter,
        data_state: Option<serde_json::Value>,
        peer_data_states: Vec<serde_json::Value>,
        optimizer: SavedOptimizer,
    ) -> Result<PathBuf> {
        let root = self.config.output_dir.clone();
        let weights = self.weights.as_ref().ok_or(TrainError::Poisoned)?;
        let ext = M::weights_extension();
        for (name, module) in [("model", &weights.model), ("ema", &weights.ema)] {
            let path = writer.path(&format!("{name}.{ext}"));
            module
                .save_weights(&path)
                .map_err(|source| TrainError::Weights { path, source })?;
        }
        let (table, optimizer_shards) = match optimizer {
            SavedOptimizer::Whole => {
                let (bytes, table) = self.optimizer_bytes(&writer.path(OPTIMIZER_FILE))?;
                writer.write_bytes(OPTIMIZER_FILE, &bytes)?;
                (table, Vec::new())
            }
            SavedOptimizer::Shares(tables) => (BTreeMap::new(), tables),
        };
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
            optimizer_shards,
            files: BTreeMap::new(),
            data_state,
            peer_data_states,
            checksums: BTreeMap::new(),
            state_checksum: None,
        };
        let dir = writer.commit(state)?;
        prune_checkpoints(&root, self.config.checkpoint.keep_last)?;
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
        // In a data-parallel run only peer 0 touches the run folder; the others wait at the
        // agreement, and stop with it if it fails.
        let writer = self.is_writer();
        let (_lock, mut metrics) = agreed(
            self.peer.as_ref(),
            self.step,
            "preparing the run folder",
            || {
                if !writer {
                    return Ok((None, None));
                }
                let lock = match &self.lock {
                    Some(_) => None,
                    None => Some(RunLock::acquire(&self.config.output_dir)?),
                };
                remove_stale_leftovers(&self.config.output_dir)?;
                self.set_rejected_aside()?;
                trim_metrics(&self.config.output_dir, self.step, self.data_position)?;
                Ok((lock, Some(MetricsWriter::open(&self.config.output_dir)?)))
            },
        )?;
        let progress = Progress::new(
            self.config.iterations,
            self.step,
            self.config.metrics.progress && writer,
        );
        let mut losses = Vec::new();
        let (mut skipped, mut tokens) = (0u64, 0f64);
        while self.step < self.config.iterations {
            let stop = self.stop.as_ref().is_some_and(|f| f.load(Ordering::SeqCst));
            let stop = match &self.peer {
                Some(peer) => peer.any(stop)?,
                None => stop,
            };
            if stop {
                let checkpoint = self.checkpoint_now()?;
                progress.finish();
                return Err(TrainError::Interrupted {
                    step: self.step,
                    checkpoint,
                });
            }
            let m = self.train_step(data)?;
            agreed(self.peer.as_ref(), self.step, "writing metrics", || {
                metrics.as_mut().map_or(Ok(()), |w| w.write_step(&m))
            })?;
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
                // Peer 0 evaluates (the replicas are identical); the others wait.
                let step = self.step;
                let (model, ema) = (self.model(), self.ema());
                agreed(self.peer.as_ref(), step, "evaluating", || {
                    let Some(metrics) = metrics.as_mut() else {
                        return Ok(());
                    };
                    let values = hook(step, model, ema)
                        .map_err(|source| TrainError::Eval { step, source })?;
                    metrics.write_eval(step, &values)
                })?;
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
        if self.config.metrics.progress && writer {
            println!("{summary}");
        }
        Ok(summary)
    }
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

    /// Whether this process writes the run's files: always, but in a data-parallel run
    /// only peer 0.
    fn is_writer(&self) -> bool {
        self.peer.as_ref().is_none_or(Peer::is_writer)
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
