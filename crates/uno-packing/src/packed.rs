//! The packed sequence: several samples laid end to end, with everything the model and the
//! losses need to find their tokens.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::config::PackingConfig;
use crate::error::PackError;
use crate::mask::SampleMask;
use crate::plan::{PlannedSample, PlannedStep, plan_sample};
use crate::sample::{Sample, SampleKind};
use crate::split::{AttnMode, Expert, SplitKind, SplitSpec};

/// Cross-entropy targets: the logits at `indexes[i]` predict `labels[i]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CeTargets {
    /// Positions in the pack whose logits predict, ascending.
    pub indexes: Vec<usize>,
    /// The token each position must predict, one per entry of `indexes`.
    pub labels: Vec<u32>,
}

impl CeTargets {
    /// Number of CE terms.
    pub fn len(&self) -> usize {
        self.indexes.len()
    }

    /// Whether there is no CE term (the forward then skips the loss rather than average
    /// over nothing).
    pub fn is_empty(&self) -> bool {
        self.indexes.is_empty()
    }
}

/// Where a VAE token's flow-matching time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSlot {
    /// A clean condition image: t = 0 (BAGEL passes timestep logit `-inf`), no loss.
    Clean,
    /// A noised image: one timestep per image, shared by its tokens. The value is an index
    /// into [`PackedSequence::images`].
    Noised {
        /// Index into [`PackedSequence::images`] of the noised image.
        image: usize,
    },
}

impl TimestepSlot {
    /// The noised image a token belongs to, `None` for a clean token: the per-token slot
    /// form flow-matching noise is sampled from.
    pub fn noised_image(self) -> Option<usize> {
        match self {
            Self::Clean => None,
            Self::Noised { image } => Some(image),
        }
    }
}

/// How an image enters the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageKind {
    /// SigLIP patches, understanding expert.
    Vit,
    /// Clean VAE latents of a condition image (t = 0), generation expert.
    CleanVae,
    /// Noised VAE latents of a generation target, generation expert.
    NoisedVae,
}

/// One image split of the pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageLayout {
    /// Index into [`PackedSequence::samples`].
    pub sample: usize,
    /// Index into [`PackedSequence::splits`].
    pub split: usize,
    /// How the image enters the model.
    pub kind: ImageKind,
    /// The image's size in pixels.
    pub size: crate::ImageSize,
    /// Rows of the token grid (ViT patches or 2x2 latent patches).
    pub rows: usize,
    /// Columns of the token grid.
    pub cols: usize,
    /// Range into `vit_indexes` (ViT) or `vae_indexes` (VAE) holding this image's tokens.
    pub tokens: Range<usize>,
}

/// One split of the pack (global token offsets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitLayout {
    /// Index into [`PackedSequence::samples`].
    pub sample: usize,
    /// What the split holds.
    pub kind: SplitKind,
    /// How it attends.
    pub mode: AttnMode,
    /// First token of the split in the pack.
    pub start: usize,
    /// Tokens in the split, markers included.
    pub len: usize,
}

/// One sample of the pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleLayout {
    /// The sample's kind, for statistics and logs.
    pub kind: SampleKind,
    /// First token of the sample in the pack.
    pub start: usize,
    /// Tokens in the sample.
    pub len: usize,
    /// Range into [`PackedSequence::splits`].
    pub splits: Range<usize>,
    /// The sample's block mask (offsets relative to `start`).
    pub mask: SampleMask,
}

/// The metaqueries that supervise one noised image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaqueryGroup {
    /// Index into [`PackedSequence::samples`].
    pub sample: usize,
    /// Index into [`PackedSequence::images`] of the noised target whose clean image gives
    /// the regression targets.
    pub target_image: usize,
    /// Range into `metaquery_indexes`; the i-th token of the range is metaquery i.
    pub tokens: Range<usize>,
}

/// Samples packed into one sequence of `len` tokens. All `*_indexes` are positions in
/// `0..len`, ascending.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedSequence {
    /// Total tokens in the pack.
    pub len: usize,
    /// RoPE position per token (BAGEL's rules; restarts at 0 per sample).
    pub position_ids: Vec<usize>,
    /// Positions holding a text token (image markers included).
    pub text_indexes: Vec<usize>,
    /// Token id at each of `text_indexes`.
    pub text_ids: Vec<u32>,
    /// ViT patch positions.
    pub vit_indexes: Vec<usize>,
    /// Position-table id of each of `vit_indexes` (`row * 70 + col`).
    pub vit_position_ids: Vec<usize>,
    /// VAE token positions, clean and noised.
    pub vae_indexes: Vec<usize>,
    /// Latent-table id of each of `vae_indexes` (`row * 64 + col`).
    pub latent_position_ids: Vec<usize>,
    /// Where each of `vae_indexes` takes its timestep from.
    pub vae_timestep_slots: Vec<TimestepSlot>,
    /// VAE tokens with a flow-matching loss (the noised ones), a subset of `vae_indexes`.
    pub noised_indexes: Vec<usize>,
    /// Metaquery positions (no token ids: the model supplies learnable embeddings).
    pub metaquery_indexes: Vec<usize>,
    /// Tokens of the understanding expert (text, markers, ViT, metaqueries).
    /// Together with `gen_indexes` a partition of `0..len`.
    pub und_indexes: Vec<usize>,
    /// Tokens of the generation expert (all VAE latents).
    pub gen_indexes: Vec<usize>,
    /// Next-token targets of understanding text with loss.
    pub text_ce: CeTargets,
    /// Next-token targets of UNO re-captions.
    pub caption_ce: CeTargets,
    /// Every sample, in pack order.
    pub samples: Vec<SampleLayout>,
    /// Every split, in pack order.
    pub splits: Vec<SplitLayout>,
    /// Every image split, in pack order.
    pub images: Vec<ImageLayout>,
    /// One group per metaquery split, in pack order.
    pub metaquery_groups: Vec<MetaqueryGroup>,
}

impl PackedSequence {
    /// Pack `samples` into one sequence (no length budget beyond each sample's maximum).
    /// Errors name the offending sample by its index in `samples`.
    pub fn pack(samples: &[Sample], config: &PackingConfig) -> Result<Self, PackError> {
        config.validate()?;
        let mut packed = Self::default();
        for (index, sample) in samples.iter().enumerate() {
            packed.append(plan_sample(sample, index, config)?, config);
        }
        Ok(packed)
    }

    /// Number of samples in the pack.
    pub fn num_samples(&self) -> usize {
        self.samples.len()
    }

    /// The dense `[L_i, L_i]` mask of sample `sample` (`true` = masked).
    pub fn dense_mask(&self, sample: usize) -> Vec<bool> {
        self.samples[sample].mask.dense()
    }

    /// Indexes into [`Self::images`] of the noised images, in order: one timestep each.
    pub fn noised_images(&self) -> impl Iterator<Item = usize> + '_ {
        self.images
            .iter()
            .enumerate()
            .filter(|(_, image)| image.kind == ImageKind::NoisedVae)
            .map(|(i, _)| i)
    }

    /// Append an already validated sample. Cannot fail: validation happened in planning.
    pub(crate) fn append(&mut self, planned: PlannedSample, config: &PackingConfig) {
        let sample = self.samples.len();
        let (start, first_split) = (self.len, self.splits.len());
        let mut rope = 0;
        let mut target_image = None;
        let mut modes_and_lens = Vec::with_capacity(planned.steps.len());
        for step in planned.steps {
            let PlannedStep::Split(split) = step else {
                rope += 1;
                continue;
            };
            let split_start = self.len;
            match &split.spec {
                SplitSpec::Text { tokens, loss } => {
                    self.push_text(tokens, *loss, &mut rope, config, CeKind::Text)
                }
                SplitSpec::Caption(tokens) => {
                    self.push_text(tokens, true, &mut rope, config, CeKind::Caption)
                }
                SplitSpec::Metaqueries => {
                    let first = self.metaquery_indexes.len();
                    for _ in 0..split.len {
                        self.metaquery_indexes.push(self.len);
                        self.push_token(rope, Expert::Und);
                        rope += 1;
                    }
                    self.metaquery_groups.push(MetaqueryGroup {
                        sample,
                        target_image: target_image
                            .expect("planning checked a noised target precedes metaqueries"),
                        tokens: first..self.metaquery_indexes.len(),
                    });
                }
                SplitSpec::VitImage(size)
                | SplitSpec::VaeImage(size)
                | SplitSpec::NoisedImage(size) => {
                    let (rows, cols) = split.grid.expect("image splits have a grid");
                    let kind = match split.kind {
                        SplitKind::VitImage => ImageKind::Vit,
                        SplitKind::VaeImage => ImageKind::CleanVae,
                        _ => ImageKind::NoisedVae,
                    };
                    let image = self.images.len();
                    let tokens = self.push_image(kind, rows, cols, image, rope, config);
                    self.images.push(ImageLayout {
                        sample,
                        split: self.splits.len(),
                        kind,
                        size: *size,
                        rows,
                        cols,
                        tokens,
                    });
                    // A noised image does not advance the counter: its caption starts at
                    // the image's id (BAGEL).
                    if kind == ImageKind::NoisedVae {
                        target_image = Some(image);
                    } else {
                        rope += 1;
                    }
                }
                SplitSpec::DroppedImage => unreachable!("dropped images are skipped above"),
            }
            debug_assert_eq!(self.len - split_start, split.len);
            modes_and_lens.push((split.mode, split.len));
            self.splits.push(SplitLayout {
                sample,
                kind: split.kind,
                mode: split.mode,
                start: split_start,
                len: split.len,
            });
        }
        self.samples.push(SampleLayout {
            kind: planned.kind,
            start,
            len: self.len - start,
            splits: first_split..self.splits.len(),
            mask: SampleMask::new(&modes_and_lens, config.supervision_visibility),
        });
    }

    /// One token at the end of the sequence, routed to `expert`.
    fn push_token(&mut self, rope: usize, expert: Expert) {
        self.position_ids.push(rope);
        match expert {
            Expert::Und => self.und_indexes.push(self.len),
            Expert::Gen => self.gen_indexes.push(self.len),
        }
        self.len += 1;
    }

    /// A text token (markers included): understanding expert.
    fn push_text_token(&mut self, id: u32, rope: usize) {
        self.text_indexes.push(self.len);
        self.text_ids.push(id);
        self.push_token(rope, Expert::Und);
    }

    /// `<|im_start|> tokens <|im_end|>`, one position each. With a loss, the `<|im_start|>`
    /// and every text position predict the next token, so n tokens give n + 1 targets and
    /// the closing `<|im_end|>` predicts nothing (BAGEL).
    fn push_text(
        &mut self,
        tokens: &[u32],
        loss: bool,
        rope: &mut usize,
        config: &PackingConfig,
        ce: CeKind,
    ) {
        let special = config.special_tokens;
        if loss {
            let targets = match ce {
                CeKind::Text => &mut self.text_ce,
                CeKind::Caption => &mut self.caption_ce,
            };
            targets
                .indexes
                .extend(self.len..self.len + tokens.len() + 1);
            targets.labels.extend_from_slice(tokens);
            targets.labels.push(special.im_end);
        }
        for &id in std::iter::once(&special.im_start)
            .chain(tokens)
            .chain(std::iter::once(&special.im_end))
        {
            self.push_text_token(id, *rope);
            *rope += 1;
        }
    }

    /// `<|vision_start|>` patches `<|vision_end|>`, all at position `rope`. Returns the
    /// range of the image's tokens in `vit_indexes` or `vae_indexes`.
    fn push_image(
        &mut self,
        kind: ImageKind,
        rows: usize,
        cols: usize,
        image: usize,
        rope: usize,
        config: &PackingConfig,
    ) -> Range<usize> {
        let special = config.special_tokens;
        self.push_text_token(special.vision_start, rope);
        let first = match kind {
            ImageKind::Vit => self.vit_indexes.len(),
            _ => self.vae_indexes.len(),
        };
        for row in 0..rows {
            for col in 0..cols {
                match kind {
                    ImageKind::Vit => {
                        self.vit_indexes.push(self.len);
                        self.vit_position_ids
                            .push(row * config.vit_max_patches_per_side + col);
                        self.push_token(rope, Expert::Und);
                    }
                    ImageKind::CleanVae | ImageKind::NoisedVae => {
                        self.vae_indexes.push(self.len);
                        self.latent_position_ids
                            .push(row * config.max_latent_size + col);
                        if kind == ImageKind::NoisedVae {
                            self.noised_indexes.push(self.len);
                            self.vae_timestep_slots.push(TimestepSlot::Noised { image });
                        } else {
                            self.vae_timestep_slots.push(TimestepSlot::Clean);
                        }
                        self.push_token(rope, Expert::Gen);
                    }
                }
            }
        }
        let last = match kind {
            ImageKind::Vit => self.vit_indexes.len(),
            _ => self.vae_indexes.len(),
        };
        self.push_text_token(special.vision_end, rope);
        first..last
    }
}

/// Which CE target list a text split with loss feeds.
#[derive(Clone, Copy)]
enum CeKind {
    Text,
    Caption,
}
