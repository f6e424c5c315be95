//! Validation of a sample's split plan, before anything is appended to a pack: a bad sample
//! is rejected whole and leaves the pack it was offered to untouched.

use crate::config::{MetaqueryAttention, PackingConfig};
use crate::error::PackError;
use crate::sample::{Sample, SampleKind};
use crate::split::{AttnMode, ImageSize, SplitKind, SplitSpec};

/// A validated split with its token count.
#[derive(Debug, Clone)]
pub(crate) struct PlannedSplit {
    pub spec: SplitSpec,
    pub kind: SplitKind,
    pub mode: AttnMode,
    pub len: usize,
    /// Token grid `(rows, cols)` of an image split.
    pub grid: Option<(usize, usize)>,
}

/// One step of a validated plan.
#[derive(Debug, Clone)]
pub(crate) enum PlannedStep {
    Split(PlannedSplit),
    /// A CFG-dropped image: the position counter advances, no tokens.
    SkipPosition,
}

/// A validated sample, ready to append.
#[derive(Debug, Clone)]
pub(crate) struct PlannedSample {
    pub kind: SampleKind,
    pub steps: Vec<PlannedStep>,
    pub tokens: usize,
}

impl Sample {
    /// Tokens this sample takes in a pack (markers included), after validating it like
    /// [`crate::PackedSequence::pack`] does; errors name it as sample 0. Token-budget
    /// packing decides with this before the sample's pixels are needed.
    pub fn token_count(&self, config: &PackingConfig) -> Result<usize, PackError> {
        Ok(plan_sample(self, 0, config)?.tokens)
    }
}

/// Validate `sample` (the `index`-th the caller supplied) and compute its layout sizes.
pub(crate) fn plan_sample(
    sample: &Sample,
    index: usize,
    config: &PackingConfig,
) -> Result<PlannedSample, PackError> {
    let mut steps = Vec::new();
    let mut tokens = 0;
    let mut has_noised = false;
    for (split, spec) in sample.plan().into_iter().enumerate() {
        let step = plan_split(spec, index, split, has_noised, config)?;
        if let PlannedStep::Split(s) = &step {
            tokens += s.len;
            has_noised |= s.kind == SplitKind::NoisedImage;
        }
        steps.push(step);
    }
    if tokens == 0 {
        return Err(PackError::EmptySample { sample: index });
    }
    if tokens > config.max_sample_tokens {
        return Err(PackError::SampleTooLong {
            sample: index,
            tokens,
            max: config.max_sample_tokens,
        });
    }
    Ok(PlannedSample {
        kind: sample.kind(),
        steps,
        tokens,
    })
}

fn plan_split(
    spec: SplitSpec,
    sample: usize,
    split: usize,
    has_noised: bool,
    config: &PackingConfig,
) -> Result<PlannedStep, PackError> {
    let (kind, mode, len, grid) = match &spec {
        SplitSpec::DroppedImage => return Ok(PlannedStep::SkipPosition),
        SplitSpec::Text { tokens, .. } | SplitSpec::Caption(tokens) => {
            let (kind, mode) = match spec {
                SplitSpec::Text { .. } => (SplitKind::Text, AttnMode::Causal),
                _ => (SplitKind::Caption, AttnMode::Caption),
            };
            check_text(tokens, sample, split, kind, config)?;
            // `<|im_start|> tokens <|im_end|>`
            (kind, mode, tokens.len() + 2, None)
        }
        SplitSpec::VitImage(size) => {
            let grid = image_grid(
                *size,
                config.vit_patch_size,
                config.vit_max_patches_per_side,
                (sample, split, SplitKind::VitImage),
            )?;
            (
                SplitKind::VitImage,
                AttnMode::Full,
                grid.0 * grid.1 + 2,
                Some(grid),
            )
        }
        SplitSpec::VaeImage(size) | SplitSpec::NoisedImage(size) => {
            let (kind, mode) = match spec {
                SplitSpec::VaeImage(_) => (SplitKind::VaeImage, AttnMode::Full),
                _ => (SplitKind::NoisedImage, AttnMode::Noise),
            };
            let grid = image_grid(
                *size,
                config.vae_downsample,
                config.max_latent_size,
                (sample, split, kind),
            )?;
            (kind, mode, grid.0 * grid.1 + 2, Some(grid))
        }
        SplitSpec::Metaqueries => {
            if config.num_metaqueries == 0 {
                return Err(PackError::ZeroMetaqueries { sample, split });
            }
            let mode = match config.metaquery_attention {
                MetaqueryAttention::Causal => AttnMode::MetaqueryCausal,
                MetaqueryAttention::Full => AttnMode::MetaqueryFull,
            };
            (SplitKind::Metaqueries, mode, config.num_metaqueries, None)
        }
    };
    if mode.is_supervision() && !has_noised {
        return Err(PackError::SupervisionWithoutTarget {
            sample,
            split,
            kind,
        });
    }
    Ok(PlannedStep::Split(PlannedSplit {
        spec,
        kind,
        mode,
        len,
        grid,
    }))
}

fn check_text(
    tokens: &[u32],
    sample: usize,
    split: usize,
    kind: SplitKind,
    config: &PackingConfig,
) -> Result<(), PackError> {
    if tokens.is_empty() {
        return Err(PackError::EmptySplit {
            sample,
            split,
            kind,
        });
    }
    match tokens.iter().position(|&id| id >= config.vocab_size) {
        Some(position) => Err(PackError::TokenOutOfVocab {
            sample,
            split,
            kind,
            position,
            id: tokens[position],
            vocab_size: config.vocab_size,
        }),
        None => Ok(()),
    }
}

/// The `(rows, cols)` token grid of an image with `pixels`-per-token sides.
fn image_grid(
    size: ImageSize,
    pixels: usize,
    max_side: usize,
    (sample, split, kind): (usize, usize, SplitKind),
) -> Result<(usize, usize), PackError> {
    let ImageSize { height, width } = size;
    if height == 0 || width == 0 || height % pixels != 0 || width % pixels != 0 {
        return Err(PackError::ImageNotDivisible {
            sample,
            split,
            kind,
            height,
            width,
            multiple: pixels,
        });
    }
    let (rows, cols) = (height / pixels, width / pixels);
    if rows > max_side || cols > max_side {
        return Err(PackError::ImageTooLarge {
            sample,
            split,
            kind,
            height,
            width,
            rows,
            cols,
            max: max_side,
        });
    }
    Ok((rows, cols))
}
