//! Caption accuracy, stage 1's report: greedy captions of held-out scenes through the
//! understanding path, compared word by word with the scenes' reference re-captions.
//!
//! The scenes are layouts of the benchmark's held-out prompts, so the coloured ones show
//! colour-shape pairs no training image draws: a captioner that only memorised its
//! training pairs fails them.

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use uno_core::burn::tensor::backend::Backend;
use uno_core::data::TextTokenizer;
use uno_core::data::shapes::ShapesBench;
use uno_core::generate::{CaptionConfig, Generator};
use uno_core::vae::LatentCodec;

use crate::BenchError;
use crate::generation::{prompt_seed, to_tensor};

/// How close captions are to their references.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CaptionAccuracy {
    /// Captions compared.
    pub captions: usize,
    /// Fraction of captions equal to their reference, word for word.
    pub exact_match: f64,
    /// Words equal to the reference's word at the same position, over the longer of the
    /// two lengths, summed over captions (a caption that stops early or runs on loses the
    /// missing or extra words).
    pub token_accuracy: f64,
}

/// One captioned scene.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptionSample {
    /// The benchmark prompt the scene was laid out from.
    pub prompt: String,
    /// The scene's re-caption.
    pub reference: String,
    /// What the model said.
    pub caption: String,
}

impl CaptionAccuracy {
    /// Compare `(caption, reference)` pairs word by word (whitespace-separated).
    pub fn of<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let (mut captions, mut exact, mut matched, mut total) = (0usize, 0usize, 0usize, 0usize);
        for (caption, reference) in pairs {
            let said: Vec<&str> = caption.split_whitespace().collect();
            let wanted: Vec<&str> = reference.split_whitespace().collect();
            captions += 1;
            exact += usize::from(said == wanted);
            matched += said.iter().zip(&wanted).filter(|(a, b)| a == b).count();
            total += said.len().max(wanted.len());
        }
        let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        Self {
            captions,
            exact_match: ratio(exact, captions),
            token_accuracy: ratio(matched, total),
        }
    }
}

/// Caption `scenes` layouts of the held-out prompts (cycled, each drawn from `(seed, its
/// index)`) rendered at `image_size`, greedily, and score them against their re-captions.
pub fn caption_held_out<B: Backend, C: LatentCodec<B>>(
    generator: &Generator<'_, B, C>,
    tokenizer: &TextTokenizer,
    bench: &ShapesBench,
    scenes: usize,
    image_size: usize,
    seed: u64,
) -> Result<(CaptionAccuracy, Vec<CaptionSample>), BenchError> {
    let prompts = bench.held_out_prompts();
    let config = CaptionConfig::default();
    let device = generator.model.embed_tokens.device();
    let samples = prompts
        .iter()
        .cycle()
        .take(scenes)
        .enumerate()
        .map(|(i, spec)| {
            let mut rng = StdRng::seed_from_u64(prompt_seed(spec, seed.wrapping_add(i as u64)));
            let scene = bench.layout(spec, &mut rng)?;
            let image = to_tensor::<B>(&scene.render(image_size), &device);
            let tokens = generator.caption(image, None, &config)?;
            Ok(CaptionSample {
                prompt: spec.text(),
                reference: scene.recaption(),
                caption: tokenizer.decode(&tokens)?,
            })
        })
        .collect::<Result<Vec<_>, BenchError>>()?;
    let accuracy = CaptionAccuracy::of(
        samples
            .iter()
            .map(|s| (s.caption.as_str(), s.reference.as_str())),
    );
    Ok((accuracy, samples))
}
