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
//! * gradient accumulation over `grad_accumulation` micro-batches: the mean of their losses,
//!   or, for a model that reports its loss terms' item counts ([`TrainStep::loss_counts`]),
//!   token-weighted over the whole step (BAGEL's normalisation);
//! * a data source's own state (e.g. a packer's cursor) kept in checkpoints
//!   ([`DataSource::state`]);
//! * guards: a non-finite loss or gradient norm skips the step (logged with its sample
//!   ids); too many in a row abort after a checkpoint; a diverging loss aborts
//!   ([`divergence`]);
//! * atomic checkpoints (`step-000100/`) with per-file checksums, keep-last-N, and exact
//!   resume that falls back to the newest checkpoint that verifies ([`checkpoint`]);
//! * run safety: one run per folder ([`RunLock`]), leftovers of killed writes removed
//!   ([`leftovers`]), a stop on SIGTERM / SIGINT after a checkpoint ([`stop`]);
//! * data parallel over N devices on burn-collective ([`parallel`]): the same steps as
//!   one device with the same global batch;
//! * `metrics.jsonl` (cut back to the checkpoint on resume), a progress bar and a
//!   [`TrainSummary`].
//!
//! Configuration is one TOML file ([`TrainConfig`]) mirroring the paper's appendix A; a model side
//! embeds it in its own run config (uno-core's `RunConfig`) and reuses [`apply_overrides`].
//!
//! # Plugging a model in
//!
//! A model implements [`TrainStep`] (its loss, and its own weight files); data is any
//! [`DataSource`], a closure included. Here a one-weight line `y = w x` learns `w = 3`:
//!
//! ```
//! use std::path::Path;
//!
//! use burn::backend::{Autodiff, Flex};
//! use burn::module::{Module, Param};
//! use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
//! use burn::tensor::backend::{AutodiffBackend, Backend};
//! use burn::tensor::{Tensor, TensorData};
//! use uno_trainer::{BoxError, StepContext, StepOutput, TrainConfig, TrainRng, TrainStep, Trainer};
//!
//! #[derive(Module, Debug)]
//! struct Line<B: Backend> {
//!     w: Param<Tensor<B, 1>>,
//! }
//!
//! impl<B: AutodiffBackend> TrainStep<B> for Line<B> {
//!     type Batch = (Tensor<B, 1>, Tensor<B, 1>); // inputs, targets
//!
//!     fn forward_step(&self, (x, y): Self::Batch, _: &StepContext) -> Result<StepOutput<B>, BoxError> {
//!         let loss = (x * self.w.val() - y).powi_scalar(2).mean();
//!         Ok(StepOutput { loss: loss.clone(), components: vec![("mse", loss)], tokens: 4, samples: 4, counts: vec![], grads: None })
//!     }
//!
//!     fn weights_extension() -> &'static str {
//!         "mpk"
//!     }
//!
//!     fn save_weights(&self, path: &Path) -> Result<(), BoxError> {
//!         let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
//!         Ok(std::fs::write(path, recorder.record(self.clone().into_record(), ())?)?)
//!     }
//!
//!     fn load_weights(self, path: &Path) -> Result<Self, BoxError> {
//!         let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
//!         let record = recorder.load(std::fs::read(path)?, &self.w.device())?;
//!         Ok(self.load_record(record))
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! type B = Autodiff<Flex>;
//! let device = Default::default();
//! let dir = std::env::temp_dir().join(format!("uno-trainer-doc-{}", std::process::id()));
//! let config = TrainConfig::default().with_overrides(&[
//!     "iterations=100".to_string(),
//!     "optimizer.lr=0.1".into(), // cosine decay to 1e-7 (the default schedule)
//!     "metrics.progress=false".into(),
//!     format!("output_dir=\"{}\"", dir.display()),
//! ])?;
//! let line = Line { w: Param::from_tensor(Tensor::<B, 1>::zeros([1], &device)) };
//! let mut trainer = Trainer::new(config, line, device)?;
//! let x = TensorData::new(vec![1.0f32, -2.0, 0.5, 3.0], [4]);
//! let y = TensorData::new(vec![3.0f32, -6.0, 1.5, 9.0], [4]);
//! let mut data = |_position: u64, _rng: &mut TrainRng| -> Result<_, BoxError> {
//!     let device = Default::default();
//!     Ok((Tensor::from_data(x.clone(), &device), Tensor::from_data(y.clone(), &device)))
//! };
//! let summary = trainer.fit(&mut data, None)?;
//! let w: f32 = trainer.model().w.val().into_scalar();
//! assert!((w - 3.0).abs() < 1e-2, "w = {w}");
//! assert_eq!(summary.end_step, 100);
//! std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod checkpoint;
pub mod checksum;
pub mod clip;
pub mod config;
mod data_resume;
pub mod divergence;
pub mod ema;
pub mod error;
pub mod leftovers;
pub mod lock;
pub mod metrics;
mod micro;
pub mod model;
pub mod optim;
pub mod parallel;
pub mod params;
pub mod progress;
pub mod rng;
pub mod schedule;
pub mod stop;
pub mod summary;
pub mod trainer;

pub use config::{
    CheckpointConfig, EmaConfig, GuardConfig, MetricsConfig, OptimizerConfig, ScheduleConfig,
    ScheduleKind, TrainConfig, apply_overrides,
};
pub use divergence::{Divergence, DivergenceGuard};
pub use error::{BoxError, Result, TrainError};
pub use lock::RunLock;
pub use metrics::{MetricsTrim, StepMetrics, trim_metrics};
pub use model::{DataSource, StepContext, StepOutput, TrainStep};
pub use parallel::{Peer, PeerError, run_data_parallel};
pub use params::TrainableParams;
pub use rng::TrainRng;
pub use schedule::LrSchedule;
pub use stop::install_stop_signals;
pub use summary::TrainSummary;
pub use trainer::{EvalHook, Trainer};
