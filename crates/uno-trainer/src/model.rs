//! What the model side implements to be trained: [`TrainStep`], and what feeds it:
//! [`DataSource`].
//!
//! The trainer is generic: it knows nothing of BAGEL. The model computes its loss from a
//! batch and names its components for logging; it writes and reads its own weight files
//! (BAGEL safetensors names), so checkpoints are usable by any BAGEL tool.

use std::path::Path;

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, backend::AutodiffBackend};

use crate::error::BoxError;
use crate::rng::TrainRng;

/// Per micro-batch information given to [`TrainStep::forward_step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepContext {
    /// Optimizer steps already applied (0 for the first step).
    pub step: u64,
    /// Index of this micro-batch within the step (`0..grad_accumulation`).
    pub micro_batch: u32,
    /// Data position of this micro-batch (as given to the [`DataSource`]).
    pub data_position: u64,
    /// A seed drawn from the trainer RNG for this micro-batch: use it for host-side noise
    /// (timesteps, flow noise, CFG dropout) so that resume reproduces it exactly. Burn's
    /// backend RNG is process-global and not checkpointed; do not rely on it.
    pub seed: u64,
    /// The step's item count of each loss term: [`TrainStep::loss_counts`] summed over the
    /// step's micro-batches (empty when the model reports none). A model that reports
    /// counts divides each term's per-item sum by its total here.
    pub step_counts: Vec<u64>,
}

/// What one forward pass returns.
#[derive(Debug)]
pub struct StepOutput<B: AutodiffBackend> {
    /// The scalar (shape `[1]`) loss to differentiate: the weighted total.
    pub loss: Tensor<B, 1>,
    /// Named scalar components for logging (`flow`, `caption`, `visual`), shape `[1]` each.
    /// They are read back with the loss in one device sync; they are not differentiated.
    pub components: Vec<(&'static str, Tensor<B, 1>)>,
    /// Tokens processed (for tokens/s).
    pub tokens: u64,
    /// Samples processed (for samples/s).
    pub samples: u64,
    /// Named counts for the step's metrics line (e.g. the tokens of each kind, samples
    /// skipped by the data); summed over the step's micro-batches into
    /// [`crate::StepMetrics::counts`].
    pub counts: Vec<(&'static str, u64)>,
    /// The gradients of `loss`, when the model computed them itself (uno-core's per-layer
    /// activation checkpointing runs one backward per decoder layer): the trainer then uses
    /// them, scaled as it scales the loss, instead of differentiating `loss`, whose graph
    /// may be spent. `None`: the trainer differentiates `loss`.
    pub grads: Option<GradientsParams>,
}

/// A model the trainer can train.
///
/// Parameters frozen with `Module::no_grad()` get no gradient, no optimizer state, no
/// update and no EMA work. `load_weights` must keep the `require_grad` flags of `self`
/// (Burn's `load_record` and burn-store's apply do); the trainer checks it on resume.
pub trait TrainStep<B: AutodiffBackend>: AutodiffModule<B> + Sized {
    /// One micro-batch.
    type Batch;

    /// The item count of each loss term of `batch` (e.g. noised tokens, caption targets,
    /// metaqueries), always in the same order, or none (the default).
    ///
    /// With counts, the model is token-weighted: the trainer reads all micro-batches of a
    /// step before the first forward, gives each forward the step's totals
    /// ([`StepContext::step_counts`]), and SUMS the micro-batch losses, which the model has
    /// normalised by those totals. `k` micro-batches then give exactly the gradient of one
    /// batch holding all of them (BAGEL's normalisation, here across accumulation). Without
    /// counts the trainer averages the micro-batch losses.
    fn loss_counts(&self, _batch: &Self::Batch) -> Vec<u64> {
        Vec::new()
    }

    /// The loss of one micro-batch (the trainer averages or sums micro-batches, see
    /// [`Self::loss_counts`], and differentiates it, unless the model computed the
    /// gradients itself: [`StepOutput::grads`]).
    fn forward_step(
        &self,
        batch: Self::Batch,
        ctx: &StepContext,
    ) -> Result<StepOutput<B>, BoxError>;

    /// File extension of the weight files written by [`save_weights`](Self::save_weights),
    /// without the dot: checkpoints hold `model.<ext>` and `ema.<ext>`.
    fn weights_extension() -> &'static str {
        "safetensors"
    }

    /// Write all weights to exactly `path` (the trainer fsyncs and renames around it).
    fn save_weights(&self, path: &Path) -> Result<(), BoxError>;

    /// Load the weights written by [`save_weights`](Self::save_weights) into `self`,
    /// bit-exactly, keeping the `require_grad` flags of `self`.
    fn load_weights(self, path: &Path) -> Result<Self, BoxError>;
}

/// Source of micro-batches, addressed by position so resume continues exactly.
///
/// The batch at a position must depend only on the position and the RNG state (which the
/// trainer checkpoints): the trainer asks for positions 0, 1, 2, ... one per micro-batch.
pub trait DataSource {
    /// The batch type (the model's [`TrainStep::Batch`]).
    type Batch;

    /// The micro-batch at `position`; may draw from `rng` (shuffling, augmentation).
    fn batch(&mut self, position: u64, rng: &mut TrainRng) -> Result<Self::Batch, BoxError>;

    /// State beyond the position and the RNG that exact resume needs (e.g. a token-budget
    /// packer's cursor into its sample stream, which does not advance one item per
    /// position). The trainer reads it after each step and keeps it in its checkpoints;
    /// `None` (the default): the position says it all.
    fn state(&self) -> Option<serde_json::Value> {
        None
    }

    /// Restore a [`Self::state`] read from a checkpoint, before the first batch of a
    /// resumed run.
    fn restore(&mut self, _state: &serde_json::Value) -> Result<(), BoxError> {
        Ok(())
    }

    /// This peer's state (`rank` of `peers`) continuing from `saved`, the states of the
    /// `saved.len()` peers (one device counts as one) that wrote a checkpoint, when the
    /// number of peers changed between them. The trainer passes the result to
    /// [`Self::restore`]. Exact resume is then impossible in general (the global batch and
    /// each peer's shard change); a source should continue the stream from the point every
    /// saved peer had reached, so that no item is skipped, and document what it repeats.
    /// Default: an error, for sources whose state cannot be re-divided (resume them with
    /// the number of peers that wrote the checkpoint).
    fn reshard(
        &self,
        saved: &[serde_json::Value],
        rank: usize,
        peers: usize,
    ) -> Result<serde_json::Value, BoxError> {
        let _ = (saved, rank, peers);
        Err("this data source keeps a state per peer and cannot re-divide it".into())
    }

    /// Ids of the samples in the micro-batch at `position` (data set indexes, record ids),
    /// logged with a skipped step so that a bad sample can be found. Default: none.
    fn sample_ids(&self, position: u64) -> Vec<String> {
        let _ = position;
        Vec::new()
    }
}

/// Closures `FnMut(position, &mut rng) -> Result<Batch, BoxError>` are data sources.
impl<T, F> DataSource for F
where
    F: FnMut(u64, &mut TrainRng) -> Result<T, BoxError>,
{
    type Batch = T;

    fn batch(&mut self, position: u64, rng: &mut TrainRng) -> Result<T, BoxError> {
        self(position, rng)
    }
}
