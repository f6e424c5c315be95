//! BAGEL as a [`TrainStep`]: the UNO forward on a packed batch, BAGEL-named weight files.

use std::path::Path;

use burn::module::Module;
use burn::tensor::backend::{AutodiffBackend, Backend};

use super::TrainBatch;
use crate::bagel::{Bagel, UnoBatch, UnoObjective};
use crate::checkpoint::{SaveDtype, UnexpectedKeys, WeightReader};
use crate::trainer::{BoxError, StepContext, StepOutput, TrainStep};
use crate::vae::PixelCodec;

/// The model being post-trained, with its objective. The codec is the identity
/// [`PixelCodec`] (toy runs and tests); the FLUX VAE path is not wired into training yet.
#[derive(Module, Debug)]
pub struct UnoTrainee<B: Backend> {
    pub model: Bagel<B>,
    #[module(skip)]
    pub objective: UnoObjective,
}

impl<B: Backend> UnoTrainee<B> {
    /// Wrap a model for UNO post-training, freezing what UNO keeps frozen
    /// ([`Bagel::freeze_for_uno`]).
    pub fn new(model: Bagel<B>, objective: UnoObjective) -> Self {
        Self {
            model: model.freeze_for_uno(),
            objective,
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
            &PixelCodec,
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
        Ok(Self {
            model,
            objective: self.objective,
        })
    }
}
