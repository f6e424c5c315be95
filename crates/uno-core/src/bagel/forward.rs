//! The UNO forward of a packed batch: embed every token group, run the MoT decoder once,
//! and compute flow matching, caption CE and metaquery regression on the same sequence.

use burn::tensor::{Int, Tensor, backend::Backend};
use rand::RngCore;

use super::pack_attention;
use super::{Bagel, BagelConfig, BagelError};
use crate::mot::{MotError, MotModel, Routing, SampleAttention};
use crate::objectives::{
    FlowNoise, FlowSlot, LossCounts, UnoLoss, UnoLossInputs, UnoLossOutput, pool_target_tokens,
};
use crate::packing::{ImageKind, PackedSequence, TimestepSlot, index_tensor};
use crate::trainer::TrainRng;
use crate::vae::{LatentCodec, LatentSampling};

/// One packed batch and the pixels behind its images. `Copy` for every backend (it holds
/// only references and plain values; a derive would ask `B: Copy`).
#[derive(Debug)]
pub struct UnoBatch<'a, B: Backend> {
    /// The packed sequence (made with the model's [`BagelConfig::packing`]).
    pub pack: &'a PackedSequence,
    /// One RGB image `[3, H, W]` in `[0, 1]` per entry of `pack.images`, in order: the
    /// condition image of a ViT or clean-VAE split (its ViT-side or VAE-side copy), and for
    /// a noised split its CLEAN target's VAE-side copy (the forward encodes and noises it).
    pub images: &'a [Tensor<B, 3>],
    /// One RGB image `[3, H, W]` in `[0, 1]` per entry of `pack.metaquery_groups`, in order:
    /// the clean target's ViT-side copy (sides a multiple of the ViT patch), whose pooled
    /// ViT features the visual loss regresses. Ignored (may be empty) when the visual
    /// weight is 0.
    pub vit_targets: &'a [Tensor<B, 3>],
    /// Seed of this batch's timesteps and noise, and of its posterior draws when latents
    /// are sampled (host-side, identical on every backend).
    pub noise_seed: u64,
    /// What each loss term's per-item sum is divided by.
    pub normalization: LossNormalization,
}

impl<B: Backend> Clone for UnoBatch<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for UnoBatch<'_, B> {}

/// What each loss term's per-item sum is divided by (noised tokens for flow matching,
/// caption targets for the caption loss, metaqueries for the visual loss, answer targets
/// for the understanding text loss).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LossNormalization {
    /// This pack's own count: each term is a mean over this pack.
    #[default]
    PerPack,
    /// Counts summed over every pack of the optimizer step (all micro-batches, and all
    /// data-parallel ranks): BAGEL's token weighting, under which `k` micro-batches give
    /// the gradient of one batch holding all of them. The packs' losses are then summed,
    /// not averaged.
    StepTotals(LossCounts),
}

/// What the UNO forward returns.
#[derive(Debug, Clone)]
pub struct UnoForward<B: Backend> {
    /// Total and components (unweighted), with token counts.
    pub loss: UnoLossOutput<B>,
    /// Final hidden states `[L, hidden]`, each token normalised by its expert's final norm.
    pub hidden: Tensor<B, 2>,
}

/// The objective settings the forward needs besides the weights.
#[derive(Debug, Clone)]
pub struct UnoObjective {
    /// The weighted sum `L_fm + caption * L_cap + visual * L_vis + text * L_text`.
    pub loss: UnoLoss,
    /// Flow-matching timestep shift of training (UNO: 4.0).
    pub timestep_shift: f64,
    /// Which latent of the codec's posterior the flow loss noises: by default a seeded
    /// draw, as BAGEL trains ([`LatentSampling`]).
    pub latent_sampling: LatentSampling,
}

impl BagelConfig {
    /// The objective this configuration trains with (its loss weights and timestep shift).
    pub fn objective(&self) -> Result<UnoObjective, BagelError> {
        Ok(UnoObjective {
            loss: self.loss.init()?,
            timestep_shift: self.timestep_shift,
            latent_sampling: LatentSampling::default(),
        })
    }
}

impl<B: Backend> Bagel<B> {
    /// The UNO forward. The losses follow the paper: `L = L_fm + w_cap L_cap + w_vis L_vis`
    /// (weights in `objective`), plus BAGEL's understanding CE `w_text L_text` over the
    /// answer targets `pack.text_ce` (0 in post-training; pretraining turns it on); terms
    /// whose splits are absent from the pack (or whose weight is 0) are zero with a zero
    /// count.
    ///
    /// Visual targets are the model's own ViT + connector features of the clean target
    /// image (without the `vit_pos_embed` table, which carries position, not content),
    /// pooled to a `sqrt(N) x sqrt(N)` grid and gradient-stopped.
    pub fn uno_forward(
        &self,
        batch: UnoBatch<'_, B>,
        codec: &impl LatentCodec<B>,
        objective: &UnoObjective,
    ) -> Result<UnoForward<B>, BagelError> {
        let noise = batch_noise(&batch, codec, objective)?;
        self.uno_forward_with_noise(batch, &noise, codec, objective)
    }

    /// [`Self::uno_forward`] with the timesteps and noise given instead of drawn from
    /// `batch.noise_seed`: for comparing with another implementation on the same draw, or
    /// for a caller's own noise schedule. `noise` has one row per VAE token of the pack (in
    /// `pack.vae_indexes` order), `codec.token_dim()` channels. `batch.noise_seed` still
    /// seeds the posterior draws of [`LatentSampling::Sample`] (unused with
    /// [`LatentSampling::Mean`] and by codecs without a posterior).
    ///
    /// # Randomness
    /// Each VAE image is encoded alone, with the next seed of the SplitMix64 stream
    /// [`TrainRng`] started at the noise seed. [`FlowNoise::sample`] seeds its `StdRng` with
    /// the noise seed itself, so the posterior noise is unrelated to the flow noise.
    pub fn uno_forward_with_noise(
        &self,
        batch: UnoBatch<'_, B>,
        noise: &FlowNoise,
        codec: &impl LatentCodec<B>,
        objective: &UnoObjective,
    ) -> Result<UnoForward<B>, BagelError> {
        let (forward, ()) = self.uno_forward_via(
            batch,
            noise,
            codec,
            objective,
            |decoder, hidden, routing, positions, masks| {
                Ok((decoder.forward(hidden, routing, positions, masks)?, ()))
            },
        )?;
        Ok(forward)
    }

    /// [`Self::uno_forward_with_noise`] with the decoder run by `decoder` (given the
    /// decoder, its input rows, the routing, the position ids and the attention of each
    /// sample; it returns the output rows and what else it keeps, returned alongside):
    /// the plain forward, or the one that tapes its layers (`Bagel::uno_forward_taped`).
    pub(super) fn uno_forward_via<T>(
        &self,
        batch: UnoBatch<'_, B>,
        noise: &FlowNoise,
        codec: &impl LatentCodec<B>,
        objective: &UnoObjective,
        decoder: impl FnOnce(
            &MotModel<B>,
            Tensor<B, 2>,
            &Routing<B>,
            Tensor<B, 1, Int>,
            &[SampleAttention],
        ) -> Result<(Tensor<B, 2>, T), MotError>,
    ) -> Result<(UnoForward<B>, T), BagelError> {
        let UnoBatch {
            pack,
            images,
            vit_targets,
            noise_seed: latent_seed,
            normalization,
        } = batch;
        self.check_images(pack, images)?;
        let device = self.embed_tokens.device();

        let mut flow_target = None;
        let mut vae_rows = None;
        let vae_images = images_of(pack, images, |k| k != ImageKind::Vit);
        if !vae_images.is_empty() {
            let mut latents = Vec::with_capacity(vae_images.len());
            let mut seeds = TrainRng::new(latent_seed);
            for image in vae_images {
                let seed = seeds.next_u64();
                latents.push(
                    codec
                        .encode_tokens_with(image, objective.latent_sampling, seed)?
                        .0,
                );
            }
            // The codec is never trained: its latents are data.
            let x0 = Tensor::cat(latents, 0).detach();
            let noised = noise.apply(x0)?;
            flow_target = noised.velocity_target;
            vae_rows = Some((noised.x_t, noised.token_timesteps));
        }
        let vit_images = images_of(pack, images, |k| k == ImageKind::Vit);
        let hidden = self.embed_sequence(pack, &vit_images, vae_rows)?;

        let routing =
            Routing::from_indices(&pack.und_indexes, &pack.gen_indexes, pack.len, &device)?;
        let masks = pack_attention(pack)?;
        let positions = index_tensor::<B>(&pack.position_ids, &device);
        let (hidden, kept) = decoder(&self.language_model, hidden, &routing, positions, &masks)?;

        let weights = objective.loss.config();
        let rows = |indexes: &[usize]| {
            hidden
                .clone()
                .select(0, index_tensor::<B>(indexes, &device))
        };
        let mut inputs = UnoLossInputs::new(&device);
        if let Some(target) = flow_target {
            inputs = inputs.flow(self.generation.output(rows(&pack.noised_indexes)), target);
        }
        if weights.caption > 0.0 && !pack.caption_ce.is_empty() {
            let logits = self.lm_head.forward(rows(&pack.caption_ce.indexes));
            inputs = inputs.caption(logits, &pack.caption_ce.labels);
        }
        if weights.text > 0.0 && !pack.text_ce.is_empty() {
            let logits = self.lm_head.forward(rows(&pack.text_ce.indexes));
            inputs = inputs.text(logits, &pack.text_ce.labels);
        }
        if weights.visual > 0.0 && !pack.metaquery_indexes.is_empty() {
            let target = self.visual_targets(pack, vit_targets)?;
            inputs = inputs.visual(rows(&pack.metaquery_indexes), target);
        }
        let loss = match normalization {
            LossNormalization::PerPack => objective.loss.forward(inputs)?,
            LossNormalization::StepTotals(totals) => {
                objective.loss.forward_global(inputs, totals, 1.0)?
            }
        };
        Ok((UnoForward { loss, hidden }, kept))
    }

    /// The decoder's input rows `[pack.len, hidden]` in sequence order: token embeddings
    /// of the text, ViT + connector (+ position table) rows of `vit_images` (one per ViT
    /// image of the pack, in order, already in `[-1, 1]`), generation-input rows of the
    /// VAE tokens (`vae`: their `x_t` `[N_vae, token_dim]` and timesteps `[N_vae]`, in
    /// `pack.vae_indexes` order) and the metaqueries.
    pub fn embed_sequence(
        &self,
        pack: &PackedSequence,
        vit_images: &[Tensor<B, 3>],
        vae: Option<(Tensor<B, 2>, Tensor<B, 1>)>,
    ) -> Result<Tensor<B, 2>, BagelError> {
        let device = self.embed_tokens.device();
        let mut pieces = Vec::new();
        let mut order: Vec<usize> = Vec::with_capacity(pack.len);

        if !pack.text_ids.is_empty() {
            let ids: Vec<usize> = pack.text_ids.iter().map(|&i| i as usize).collect();
            let ids = index_tensor::<B>(&ids, &device);
            pieces.push(self.embed_tokens.val().select(0, ids));
            order.extend(&pack.text_indexes);
        }

        if !vit_images.is_empty() {
            let (features, _) = self.vit_model.forward_images(vit_images)?;
            let tokens = super::vit_tokens_to_llm(
                &self.connector,
                &self.vit_pos_embed,
                features,
                &pack.vit_position_ids,
            )?;
            pieces.push(tokens);
            order.extend(&pack.vit_indexes);
        }

        match vae {
            Some((x_t, t)) => {
                pieces.push(self.generation.input(x_t, t, &pack.latent_position_ids)?);
                order.extend(&pack.vae_indexes);
            }
            None if !pack.vae_indexes.is_empty() => {
                return Err(BagelError::PackMismatch {
                    what: "latents of the VAE tokens",
                    expected: format!("{} tokens", pack.vae_indexes.len()),
                    got: "none".into(),
                });
            }
            None => {}
        }

        for group in &pack.metaquery_groups {
            if group.tokens.len() != self.num_metaqueries() {
                return Err(BagelError::PackMismatch {
                    what: "metaqueries per image (pack with BagelConfig::packing())",
                    expected: format!("{} (the model's)", self.num_metaqueries()),
                    got: group.tokens.len().to_string(),
                });
            }
            pieces.push(self.metaqueries.val());
            order.extend(&pack.metaquery_indexes[group.tokens.clone()]);
        }

        if order.len() != pack.len {
            return Err(BagelError::PackMismatch {
                what: "embedded rows (are the ViT images missing?)",
                expected: pack.len.to_string(),
                got: order.len().to_string(),
            });
        }
        // One gather puts every group's rows in sequence order.
        let mut inverse = vec![0; pack.len];
        for (row, &position) in order.iter().enumerate() {
            inverse[position] = row;
        }
        Ok(Tensor::cat(pieces, 0).select(0, index_tensor::<B>(&inverse, &device)))
    }

    /// Pooled, gradient-stopped ViT + connector features of each metaquery group's clean
    /// target, `[groups * N, hidden]`. `vit_targets` holds one ViT-side image `[3, H, W]` in
    /// `[0, 1]` per group of `pack.metaquery_groups`, in order. Each image keeps its own
    /// (possibly non-square) patch grid, pooled to `sqrt(N) x sqrt(N)` per axis
    /// ([`pool_target_tokens`]).
    pub fn visual_targets(
        &self,
        pack: &PackedSequence,
        vit_targets: &[Tensor<B, 3>],
    ) -> Result<Tensor<B, 2>, BagelError> {
        if vit_targets.len() != pack.metaquery_groups.len() {
            return Err(BagelError::PackMismatch {
                what: "ViT-side targets (one per metaquery group)",
                expected: pack.metaquery_groups.len().to_string(),
                got: vit_targets.len().to_string(),
            });
        }
        let targets: Vec<Tensor<B, 3>> = vit_targets
            .iter()
            .map(|image| vit_input(image.clone()))
            .collect();
        let (features, grids) = self.vit_model.forward_images(&targets)?;
        let features = self.connector.forward(features).detach();
        let mut start = 0;
        let mut pooled = Vec::with_capacity(grids.len());
        for grid in grids {
            let len = grid[0] * grid[1];
            let rows = features.clone().narrow(0, start, len);
            pooled.push(pool_target_tokens(rows, grid, self.num_metaqueries())?);
            start += len;
        }
        Ok(Tensor::cat(pooled, 0))
    }

    fn check_images(
        &self,
        pack: &PackedSequence,
        images: &[Tensor<B, 3>],
    ) -> Result<(), BagelError> {
        if images.len() != pack.images.len() {
            return Err(BagelError::Image {
                index: images.len().min(pack.images.len()),
                message: format!(
                    "the pack has {} images but {} were given",
                    pack.images.len(),
                    images.len()
                ),
            });
        }
        for (index, (image, layout)) in images.iter().zip(&pack.images).enumerate() {
            let expected = [3, layout.size.height, layout.size.width];
            if image.dims() != expected {
                return Err(BagelError::Image {
                    index,
                    message: format!(
                        "expected [C, H, W] = {expected:?}, found {:?}",
                        image.dims()
                    ),
                });
            }
        }
        Ok(())
    }
}

/// The ViT sees images in `[-1, 1]` (BAGEL's normalisation), codecs take `[0, 1]`.
fn vit_input<B: Backend>(image: Tensor<B, 3>) -> Tensor<B, 3> {
    image.mul_scalar(2.0).sub_scalar(1.0)
}

/// The pixels of the pack's images of the selected kinds, in pack order (ViT images
/// already mapped to the ViT's input range).
fn images_of<B: Backend>(
    pack: &PackedSequence,
    images: &[Tensor<B, 3>],
    keep: impl Fn(ImageKind) -> bool,
) -> Vec<Tensor<B, 3>> {
    pack.images
        .iter()
        .zip(images)
        .filter(|(layout, _)| keep(layout.kind))
        .map(|(layout, image)| match layout.kind {
            ImageKind::Vit => vit_input(image.clone()),
            _ => image.clone(),
        })
        .collect()
}

/// The timesteps and noise of `batch`'s noised tokens, drawn from its noise seed under
/// `objective`'s shift.
pub(super) fn batch_noise<B: Backend>(
    batch: &UnoBatch<'_, B>,
    codec: &impl LatentCodec<B>,
    objective: &UnoObjective,
) -> Result<FlowNoise, BagelError> {
    Ok(FlowNoise::sample(
        &flow_slots(batch.pack),
        codec.token_dim(),
        objective.timestep_shift,
        batch.noise_seed,
    )?)
}

/// The flow-matching slot of every VAE token of `pack`, in VAE-token order: packing's
/// [`TimestepSlot`] in `uno-objectives`' terms (the two crates do not know each other).
pub fn flow_slots(pack: &PackedSequence) -> Vec<FlowSlot> {
    pack.vae_timestep_slots
        .iter()
        .map(|slot| match *slot {
            TimestepSlot::Clean => FlowSlot::Clean,
            TimestepSlot::Noised { image } => FlowSlot::Noised { image },
        })
        .collect()
}
