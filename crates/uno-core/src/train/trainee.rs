//! BAGEL as a [`TrainStep`]: the UNO forward on a packed batch, BAGEL-named weight files.

use std::path::Path;

use burn::module::Module;
use burn::tensor::backend::{AutodiffBackend, Backend};

use super::TrainBatch;
use crate::bagel::{Bagel, UnoBatch, UnoObjective};
use crate::checkpoint::{SaveDtype, UnexpectedKeys, WeightReader};
use crate::objectives::UnoLossConfig;
use crate::trainer::{BoxError, StepContext, StepOutput, TrainStep};
use crate::vae::Codec;

/// The model being post-trained, its (frozen) codec and its objective.
#[derive(Module, Debug)]
pub struct UnoTrainee<B: Backend> {
    /// The model; UNO's frozen set is frozen ([`Bagel::freeze_for_uno`]).
    pub model: Bagel<B>,
    /// Encodes the batch's images into the latents the flow loss noises. Frozen, and not
    /// part of the weight files ([`TrainStep::save_weights`] writes the model only).
    pub codec: Codec<B>,
    /// Loss weights and timestep shift of the run.
    #[module(skip)]
    pub objective: UnoObjective,
}

impl<B: Backend> UnoTrainee<B> {
    /// Wrap a model for UNO post-training, freezing what UNO keeps frozen
    /// ([`Bagel::freeze_for_uno`]). The codec is the [`crate::vae::PixelCodec`]; a model
    /// built for FLUX latents needs [`Self::with_codec`].
    ///
    /// The loss's own finiteness check is turned off: it turns a NaN into an error, which
    /// would abort the run, while the trainer's guard reads the loss back anyway and skips
    /// a non-finite step (counted, logged with its sample ids, aborting after
    /// `guards.max_consecutive_skips` in a row with a checkpoint of the last good state).
    pub fn new(model: Bagel<B>, mut objective: UnoObjective) -> Self {
        let unchecked = UnoLossConfig {
            check_finite: false,
            ..objective.loss.config().clone()
        };
        // Only the flag differs from a config that already built a loss: it cannot fail.
        if let Ok(loss) = unchecked.init() {
            objective.loss = loss;
        }
        Self {
            model: model.freeze_for_uno(),
            codec: Codec::pixel(),
            objective,
        }
    }

    /// Use `codec` (e.g. [`crate::bagel::BagelConfig::load_codec`]'s FLUX autoencoder),
    /// frozen.
    pub fn with_codec(self, codec: Codec<B>) -> Self {
        Self {
            codec: codec.no_grad(),
            ..self
        }
    }
}

impl<B: AutodiffBackend> TrainStep<B> for UnoTrainee<B> {
    type Batch = TrainBatch<B>;

    fn forward_step(
        &self,
        batch: TrainBatch<B>,
        ctx: &StepContext,
    ) -> Result<StepOutput<B>, BoxError> {
        let out = self.model.uno_forward(
            UnoBatch {
                pack: &batch.pack,
                images: &batch.images,
                noise_seed: ctx.seed,
            },
            &self.codec,
            &self.objective,
        )?;
        let loss = out.loss;
        Ok(StepOutput {
            loss: loss.total,
            components: vec![
                ("flow", loss.flow),
                ("caption", loss.caption),
                ("visual", loss.visual),
            ],
            tokens: batch.pack.len as u64,
            samples: batch.pack.num_samples() as u64,
        })
    }

    fn save_weights(&self, path: &Path) -> Result<(), BoxError> {
        Ok(self.model.save_safetensors(path, SaveDtype::F32)?)
    }

    fn load_weights(self, path: &Path) -> Result<Self, BoxError> {
        let reader = WeightReader::open(path)?;
        let (model, _) = self
            .model
            .load_safetensors(&reader, UnexpectedKeys::Error)?;
        Ok(Self { model, ..self })
    }
}
