//! Held-out evaluation for the trainer's evaluation hook: the UNO losses of fixed batches
//! under fixed noise, so two evaluations differ only by the weights.

use std::sync::Arc;

use burn::tensor::ElementConversion;
use burn::tensor::backend::{AutodiffBackend, Backend};

use super::{Ablation, BatchFill, PackedBatches, TrainBatch, UnoTrainee, gradient_alignment};
use crate::bagel::{BagelError, LossNormalization, UnoBatch, UnoObjective};
use crate::data::Dataset;
use crate::objectives::ConditionDropoutConfig;
use crate::objectives::UnoLossConfig;
use crate::packing::PackingConfig;
use crate::trainer::{BoxError, DataSource, TrainRng};
use crate::vae::{CachedCodec, LatentCache};

/// Fixed evaluation batches: the first `num_batches` micro-batches of a data set, packed
/// without condition dropout, each with its own fixed noise seed.
#[derive(Debug, Clone)]
pub struct HeldOut<B: Backend> {
    batches: Vec<TrainBatch<B>>,
    seed: u64,
    /// Every posterior of the batches' images: the set is small and fixed, and is encoded
    /// once instead of at every evaluation. Its own cache, not the trainee's, so that an
    /// evaluation never depends on what training encoded before it.
    latents: Arc<LatentCache>,
}

impl<B: Backend> HeldOut<B> {
    /// Pack the first `num_batches` micro-batches of `dataset`, filled as `fill` says, in
    /// file order (items wrap around a smaller set). `seed` fixes the evaluation noise.
    pub fn new<D: Dataset>(
        dataset: D,
        num_batches: usize,
        fill: BatchFill,
        packing: PackingConfig,
        device: B::Device,
        seed: u64,
    ) -> Result<Self, BoxError> {
        let no_dropout = ConditionDropoutConfig::new()
            .with_text(0.0)
            .with_vit(0.0)
            .with_vae(0.0);
        let mut source = PackedBatches::new(dataset, fill, packing, no_dropout, device);
        // No dropout: the generator is never drawn from.
        let mut rng = TrainRng::new(0);
        let batches = (0..num_batches as u64)
            .map(|p| source.batch(p, &mut rng))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            batches,
            seed,
            latents: Arc::new(LatentCache::new(usize::MAX)),
        })
    }

    /// Mean total, flow, caption, visual and text loss over the batches (unweighted components,
    /// as in `metrics.jsonl`), named `{prefix}total`, `{prefix}flow`, ...
    ///
    /// Runs the plain forward; on an autodiff backend the graph it records is dropped
    /// with the outputs.
    pub fn evaluate(
        &self,
        trainee: &UnoTrainee<B>,
        prefix: &str,
    ) -> Result<Vec<(String, f64)>, BagelError> {
        let mut sums = [0.0f64; 5];
        for (k, batch) in self.batches.iter().enumerate() {
            let out = trainee.model.uno_forward(
                UnoBatch {
                    pack: &batch.pack,
                    images: &batch.images,
                    vit_targets: &batch.vit_targets,
                    noise_seed: self.seed.wrapping_add(k as u64),
                    normalization: LossNormalization::PerPack,
                },
                &CachedCodec {
                    codec: &trainee.codec,
                    cache: &self.latents,
                },
                &trainee.objective,
            )?;
            let loss = out.loss;
            for (sum, term) in
                sums.iter_mut()
                    .zip([loss.total, loss.flow, loss.caption, loss.visual, loss.text])
            {
                *sum += term.into_scalar().elem::<f64>();
            }
        }
        let n = self.batches.len().max(1) as f64;
        Ok(["total", "flow", "caption", "visual", "text"]
            .iter()
            .zip(sums)
            .map(|(name, sum)| (format!("{prefix}{name}"), sum / n))
            .collect())
    }
}

impl<B: AutodiffBackend> HeldOut<B> {
    /// The gradient diagnostics of the paper's Figure 8 ([`gradient_alignment`]) on the
    /// first batch, as named values: per decoder layer `i`, `{prefix}caption_l{i}` and
    /// `{prefix}visual_l{i}` (the cosine of each term's generation-expert gradient with the
    /// flow-matching one; left out when undefined) and `{prefix}flow_norm_l{i}`.
    ///
    /// Every run is measured on the joint objective's terms (caption and visual on,
    /// unweighted), whatever it trains with, so that an SFT run's figures compare with a
    /// joint run's. The weights are not changed; three forwards and backwards.
    pub fn alignment(
        &self,
        trainee: &UnoTrainee<B>,
        prefix: &str,
    ) -> Result<Vec<(String, f64)>, BagelError> {
        let Some(batch) = self.batches.first() else {
            return Ok(Vec::new());
        };
        let (caption, visual) = Ablation::Joint.weights();
        let objective = UnoObjective {
            loss: UnoLossConfig {
                caption,
                visual,
                ..trainee.objective.loss.config().clone()
            }
            .init()?,
            ..trainee.objective.clone()
        };
        let layers = gradient_alignment(
            &trainee.model,
            UnoBatch {
                pack: &batch.pack,
                images: &batch.images,
                vit_targets: &batch.vit_targets,
                noise_seed: self.seed,
                normalization: LossNormalization::PerPack,
            },
            &CachedCodec {
                codec: &trainee.codec,
                cache: &self.latents,
            },
            &objective,
        )?;
        let mut values = Vec::new();
        for layer in layers {
            let i = layer.layer;
            values.push((format!("{prefix}flow_norm_l{i}"), layer.flow_norm));
            for (term, figures) in [("caption", layer.caption), ("visual", layer.visual)] {
                if let Some(cosine) = figures.and_then(|t| t.cosine) {
                    values.push((format!("{prefix}{term}_l{i}"), cosine));
                }
            }
        }
        Ok(values)
    }
}
