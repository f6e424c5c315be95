//! The UNO post-training loop, generic over the Burn autodiff backend and the model.
//!
//! The model implements [`TrainStep`] (loss of a batch, named loss components, and its own
//! weight files); a [`DataSource`] gives micro-batches by position. [`Trainer`] then does
//! what BAGEL's training script does:
//!
//! * AdamW (lr 1e-4, betas 0.9/0.95, eps 1e-15, no weight decay) from burn-optim, with state
//!   only for trainable parameters (`no_grad` ones get none);
//! * linear warmup then cosine or constant learning rate ([`LrSchedule`]);
//! * GLOBAL grad-norm clipping ([`clip`]), not burn-optim's per-tensor one;
//! * EMA of the trainable weights ([`ema`]);
//! * gradient accumulation over `grad_accumulation` micro-batches;
//! * guards: a non-finite loss or gradient norm skips the step; too many in a row abort
//!   after a checkpoint;
//! * atomic checkpoints (`step-000100/`), keep-last-N, and exact resume ([`checkpoint`]);
//! * `metrics.jsonl`, a progress bar and a [`TrainSummary`].
//!
//! Configuration is one TOML file ([`TrainConfig`]) mirroring the paper's appendix A.
//!
//! # Plugging a model in
//! ```ignore
//! impl<B: AutodiffBackend> TrainStep<B> for Bagel<B> {
//!     type Batch = PackedBatch;
//!     fn forward_step(&self, batch: PackedBatch, ctx: &StepContext)
//!         -> Result<StepOutput<B>, BoxError> {
//!         let noise = FlowNoise::sample(&batch.slots, 64, self.shift, ctx.seed)?;
//!         let out = self.loss(batch, noise)?; // L_fm + 0.1 L_cap + 0.2 L_vis
//!         Ok(StepOutput {
//!             loss: out.total.clone(),
//!             components: vec![("flow", out.flow), ("caption", out.caption), ("visual", out.visual)],
//!             tokens: out.tokens,
//!             samples: out.samples,
//!         })
//!     }
//!     fn save_weights(&self, path: &Path) -> Result<(), BoxError> { /* BAGEL safetensors */ }
//!     fn load_weights(self, path: &Path) -> Result<Self, BoxError> { /* same names */ }
//! }
//!
//! let config = TrainConfig::load(Some(path), &overrides)?;
//! let model = Bagel::load(model_dir, &device)?.freeze_understanding(); // no_grad()
//! let mut trainer = Trainer::resume_or_new(config, model, device)?;
//! let summary = trainer.fit(&mut |pos, rng: &mut TrainRng| data.batch(pos, rng), None)?;
//! ```

pub mod checkpoint;
pub mod clip;
pub mod config;
pub mod ema;
pub mod error;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod params;
pub mod progress;
pub mod rng;
pub mod schedule;
pub mod summary;
pub mod trainer;

pub use config::{
    CheckpointConfig, EmaConfig, GuardConfig, MetricsConfig, OptimizerConfig, ScheduleConfig,
    ScheduleKind, TrainConfig, apply_overrides,
};
pub use error::{BoxError, Result, TrainError};
pub use metrics::StepMetrics;
pub use model::{DataSource, StepContext, StepOutput, TrainStep};
pub use params::TrainableParams;
pub use rng::TrainRng;
pub use schedule::LrSchedule;
pub use summary::TrainSummary;
pub use trainer::{EvalHook, Trainer};
