//! Generation evaluation: images of every held-out prompt under fixed seeds, each judged by
//! the pixel judge, aggregated per category as GenEval does.
//!
//! The images come from a [`PromptImages`] source: the model under evaluation
//! ([`ModelImages`]: BAGEL's sampler with text classifier-free guidance), or the
//! benchmark's own ground truth ([`GroundTruth`]) judged through the same code at the same
//! size, whose accuracy is the ceiling the model's scores are read against
//! (docs/shapesbench.md: at 32 px the judge's margin is thin).

use burn::tensor::{Tensor, TensorData, backend::Backend};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use uno_core::burn;
use uno_core::data::shapes::{BenchScores, PixelJudge, PromptSpec, ShapesBench};
use uno_core::data::{RgbImage, TextTokenizer};
use uno_core::generate::{Generator, ImageRequest, SamplerConfig};
use uno_core::packing::ImageSize;
use uno_core::vae::LatentCodec;

use crate::BenchError;

/// Something that draws images of benchmark prompts.
pub trait PromptImages {
    /// One `size` x `size` image of `spec` per seed, in seed order.
    fn images(
        &mut self,
        spec: &PromptSpec,
        seeds: &[u64],
        size: usize,
    ) -> Result<Vec<RgbImage>, BenchError>;
}

/// How many images of each prompt, at which size, under which seeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalSettings {
    /// Images per prompt (seeds `seed`, `seed + 1`, ...: the same for every prompt and arm).
    pub images_per_prompt: usize,
    /// Image side in pixels.
    pub image_size: usize,
    /// The first seed.
    pub seed: u64,
}

impl EvalSettings {
    /// The seeds every prompt is drawn under.
    pub fn seeds(&self) -> Vec<u64> {
        (0..self.images_per_prompt as u64)
            .map(|k| self.seed + k)
            .collect()
    }
}

/// Judged images of a prompt set.
#[derive(Debug, Clone)]
pub struct Judged {
    /// Correct / judged per category.
    pub scores: BenchScores,
    /// Images with a NaN or infinite pixel (a diverged model): judged wrong without being
    /// looked at.
    pub non_finite: usize,
    /// Every image, prompt-major (`images_per_prompt` per prompt), for the PNG grid.
    pub images: Vec<RgbImage>,
}

/// Draw every prompt of `prompts` under every seed of `settings` and judge each image.
pub fn judge_prompts(
    source: &mut impl PromptImages,
    prompts: &[PromptSpec],
    judge: &PixelJudge,
    settings: &EvalSettings,
) -> Result<Judged, BenchError> {
    if settings.images_per_prompt == 0 {
        return Err(BenchError::setting(
            "images_per_prompt",
            0,
            "at least one image per prompt",
        ));
    }
    let seeds = settings.seeds();
    let mut judged = Judged {
        scores: BenchScores::default(),
        non_finite: 0,
        images: Vec::with_capacity(prompts.len() * seeds.len()),
    };
    for spec in prompts {
        for image in source.images(spec, &seeds, settings.image_size)? {
            let finite = image.data.iter().all(|v| v.is_finite());
            judged.non_finite += usize::from(!finite);
            judged
                .scores
                .record(spec.category, finite && judge.score(&image, spec));
            judged.images.push(image);
        }
    }
    Ok(judged)
}

/// The benchmark's ground truth: a layout of the prompt ([`ShapesBench::layout`]) drawn
/// from the seed and the prompt, rendered at the requested size.
#[derive(Debug, Clone, Copy)]
pub struct GroundTruth<'a> {
    /// The benchmark whose layouts are drawn (its held-out colours stay out of open-colour
    /// objects).
    pub bench: &'a ShapesBench,
}

impl PromptImages for GroundTruth<'_> {
    fn images(
        &mut self,
        spec: &PromptSpec,
        seeds: &[u64],
        size: usize,
    ) -> Result<Vec<RgbImage>, BenchError> {
        seeds
            .iter()
            .map(|&seed| {
                let mut rng = StdRng::seed_from_u64(prompt_seed(spec, seed));
                Ok(self.bench.layout(spec, &mut rng)?.render(size))
            })
            .collect()
    }
}

/// A seed that differs between prompts (FNV-1a of the text, mixed with `seed`), so that
/// one seed does not put every prompt's objects in the same cells.
pub(crate) fn prompt_seed(spec: &PromptSpec, seed: u64) -> u64 {
    let hash = spec.text().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    hash ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The model under evaluation: each prompt tokenized and sampled with BAGEL's flow sampler
/// and text guidance, one image per seed (the initial noise is a pure function of it).
pub struct ModelImages<'a, B: Backend, C: LatentCodec<B>> {
    /// The model, codec and packing.
    pub generator: Generator<'a, B, C>,
    /// The vocabulary the model was trained with.
    pub tokenizer: &'a TextTokenizer,
    /// Timesteps, shift and guidance.
    pub sampler: SamplerConfig,
}

impl<B: Backend, C: LatentCodec<B>> PromptImages for ModelImages<'_, B, C> {
    fn images(
        &mut self,
        spec: &PromptSpec,
        seeds: &[u64],
        size: usize,
    ) -> Result<Vec<RgbImage>, BenchError> {
        let prompt = self.tokenizer.encode(&spec.text())?;
        let requests: Vec<ImageRequest<B>> = seeds
            .iter()
            .map(|&seed| ImageRequest {
                prompt: prompt.clone(),
                size: ImageSize::new(size, size),
                source: None,
                seed,
            })
            .collect();
        Ok(self
            .generator
            .generate(&requests, &self.sampler)?
            .into_iter()
            .map(to_rgb_image)
            .collect())
    }
}

/// A `[3, H, W]` tensor in `[0, 1]` as a host image (values clamped; `clamp` keeps NaN,
/// so that [`judge_prompts`] can count it).
pub fn to_rgb_image<B: Backend>(image: Tensor<B, 3>) -> RgbImage {
    let [_, height, width] = image.dims();
    let data = image
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 pixels")
        .into_iter()
        .map(|v| v.clamp(0.0, 1.0))
        .collect();
    RgbImage {
        height,
        width,
        data,
    }
}

/// A host image as a `[3, H, W]` tensor on `device`.
pub fn to_tensor<B: Backend>(image: &RgbImage, device: &B::Device) -> Tensor<B, 3> {
    Tensor::from_data(
        TensorData::new(image.data.clone(), [3, image.height, image.width]),
        device,
    )
}
