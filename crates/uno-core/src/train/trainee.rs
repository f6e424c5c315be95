//! BAGEL as a [`TrainStep`]: the UNO forward on a packed batch, BAGEL-named weight files.

use std::path::Path;
use std::sync::Arc;

use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};

use super::{TrainBatch, Trainable};
use crate::bagel::{Bagel, LossNormalization, Precision, UnoBatch, UnoObjective};
use crate::checkpoint::{SaveDtype, UnexpectedKeys, WeightReader};
use crate::objectives::{LossCounts, UnoLossConfig};
use crate::trainer::{BoxError, StepContext, StepOutput, TrainStep};
use crate::vae::{CachedCodec, Codec, FrozenCodec, LatentCache};

/// The model being post-trained, its (frozen) codec and its objective.
#[derive(Module, Debug)]
pub struct UnoTrainee<B: Backend> {
    /// The model; UNO's frozen set is frozen ([`Bagel::freeze_for_uno`]) unless
    /// [`Self::with_trainable`] trains every weight.
    pub model: Bagel<B>,
    /// Encodes the batch's images into the latents the flow loss noises. Frozen, and not
    /// part of the weight files ([`TrainStep::save_weights`] writes the model only).
    pub codec: Codec<B>,
    /// Loss weights and timestep shift of the run.
    #[module(skip)]
    pub objective: UnoObjective,
    /// The codec's posteriors of the images seen so far, so later epochs skip the encoder
    /// (empty and disabled unless [`Self::with_latent_cache`] sizes it).
    #[module(skip)]
    pub latent_cache: Arc<LatentCache>,
    /// The float types the model trains in ([`Self::with_precision`]).
    #[module(skip)]
    pub precision: Precision,
    /// Which weights train ([`Self::with_trainable`]).
    #[module(skip)]
    pub trainable: Trainable,
    /// Packs longer than this many tokens checkpoint every decoder layer
    /// ([`Self::with_layer_checkpointing`]; `None`: never).
    #[module(skip)]
    pub checkpoint_above_tokens: Option<usize>,
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
            latent_cache: Arc::new(LatentCache::new(0)),
            precision: Precision::F32,
            trainable: Trainable::Generation,
            checkpoint_above_tokens: None,
        }
    }

    /// Train the weights `trainable` names: UNO's set (what [`Self::new`] leaves) or every
    /// weight ([`Bagel::train_all`], pretraining). Weights loaded on resume keep these
    /// flags ([`TrainStep::load_weights`] loads values only).
    pub fn with_trainable(self, trainable: Trainable) -> Self {
        let model = match trainable {
            Trainable::Generation => self.model.freeze_for_uno(),
            Trainable::All => self.model.train_all(),
        };
        Self {
            model,
            trainable,
            ..self
        }
    }

    /// Train in `precision` ([`Precision`]; check [`Precision::supported`] first). Weights
    /// loaded on resume get it again, so the frozen expert stays bf16.
    pub fn with_precision(self, precision: Precision) -> Self {
        Self {
            model: self.model.with_precision(precision),
            precision,
            ..self
        }
    }

    /// Keep up to `capacity_bytes` of encoder posteriors in host memory
    /// ([`LatentCache`]); a cached step is bit-identical to an uncached one.
    pub fn with_latent_cache(self, capacity_bytes: usize) -> Self {
        Self {
            latent_cache: Arc::new(LatentCache::new(capacity_bytes)),
            ..self
        }
    }

    /// Checkpoint every decoder layer of the packs longer than `above_tokens` tokens
    /// (`None`: never): the forward keeps each layer's input only, and the backward
    /// recomputes one layer at a time ([`crate::bagel::LayerTape`]). The gradients are the
    /// plain forward's up to summation order; the activation memory of a layer drops to
    /// its input.
    pub fn with_layer_checkpointing(self, above_tokens: Option<usize>) -> Self {
        Self {
            checkpoint_above_tokens: above_tokens,
            ..self
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

    /// `[noised tokens, caption targets, metaqueries, answer targets]` of the batch: the
    /// losses are token-weighted over the whole step (BAGEL's normalisation).
    fn loss_counts(&self, batch: &TrainBatch<B>) -> Vec<u64> {
        let pack = &batch.pack;
        [
            pack.noised_indexes.len(),
            pack.caption_ce.len(),
            pack.metaquery_indexes.len(),
            pack.text_ce.len(),
        ]
        .map(|n| n as u64)
        .to_vec()
    }

    fn forward_step(
        &self,
        batch: TrainBatch<B>,
        ctx: &StepContext,
    ) -> Result<StepOutput<B>, BoxError> {
        let normalization = match ctx.step_counts[..] {
            [noised_tokens, caption_tokens, metaqueries, text_tokens] => {
                LossNormalization::StepTotals(LossCounts {
                    noised_tokens: noised_tokens as usize,
                    caption_tokens: caption_tokens as usize,
                    metaqueries: metaqueries as usize,
                    text_tokens: text_tokens as usize,
                })
            }
            _ => LossNormalization::PerPack,
        };
        let uno_batch = UnoBatch {
            pack: &batch.pack,
            images: &batch.images,
            vit_targets: &batch.vit_targets,
            noise_seed: ctx.seed,
            normalization,
        };
        // On the inner backend, the frozen codec records no graph; its posteriors are kept
        // for later epochs.
        let codec = CachedCodec {
            codec: FrozenCodec(self.codec.valid()),
            cache: &self.latent_cache,
        };
        let checkpoint = self
            .checkpoint_above_tokens
            .is_some_and(|above| batch.pack.len > above);
        // Checkpointed, the trainee differentiates its loss itself (one backward per layer)
        // and hands the trainer the gradients.
        let (loss, grads) = match checkpoint {
            false => {
                let out = self.model.uno_forward(uno_batch, &codec, &self.objective)?;
                (out.loss, None)
            }
            true => {
                let (out, tape) =
                    self.model
                        .uno_forward_taped(uno_batch, &codec, &self.objective)?;
                let grads = tape.gradients(&self.model, out.loss.total.clone())?;
                (out.loss, Some(grads))
            }
        };

        let tokens = batch.pack.composition();
        Ok(StepOutput {
            loss: loss.total,
            components: vec![
                ("flow", loss.flow),
                ("caption", loss.caption),
                ("visual", loss.visual),
                ("text", loss.text),
            ],
            tokens: batch.pack.len as u64,
            samples: batch.pack.num_samples() as u64,
            counts: vec![
                ("text_tokens", tokens.text as u64),
                ("image_tokens", tokens.image as u64),
                ("caption_tokens", tokens.caption as u64),
                ("metaquery_tokens", tokens.metaqueries as u64),
                ("answer_tokens", batch.pack.text_ce.len() as u64),
                ("samples", batch.pack.num_samples() as u64),
                ("skipped_samples", batch.skipped),
            ],
            grads,
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
            model: model.with_precision(self.precision),
            ..self
        })
    }
}
