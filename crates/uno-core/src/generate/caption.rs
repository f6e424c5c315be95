//! Captioning through the understanding path: ViT tokens (and an optional question) as
//! context, then text decoded token by token from the KV cache.

use burn::tensor::{Bool, Tensor, backend::Backend};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

use super::{GenerateError, Generator};
use crate::mot::{CacheWrite, KvCache, Routing};
use crate::packing::{ImageSize, PackedSequence, Sample, SplitSpec, index_tensor};
use crate::vae::LatentCodec;

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decoding {
    /// The most likely token.
    Greedy,
    /// Nucleus sampling: the smallest set of tokens whose probabilities (at `temperature`)
    /// reach `p`, renormalised, sampled from the seeded generator.
    TopP {
        /// Probability mass kept, in `(0, 1]` (1 = plain sampling).
        p: f64,
        /// Logits are divided by this before the softmax; finite and `> 0`.
        temperature: f64,
    },
}

/// Captioning settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CaptionConfig {
    /// Stop after this many tokens if `<|im_end|>` has not come.
    pub max_tokens: usize,
    /// Greedy (the default) or top-p sampling.
    pub decoding: Decoding,
    /// Seed of top-p sampling.
    pub seed: u64,
}

impl Default for CaptionConfig {
    fn default() -> Self {
        Self {
            max_tokens: 64,
            decoding: Decoding::Greedy,
            seed: 0,
        }
    }
}

impl CaptionConfig {
    fn validate(&self) -> Result<(), GenerateError> {
        if let Decoding::TopP { p, temperature } = self.decoding {
            if !(p > 0.0 && p <= 1.0) {
                return Err(GenerateError::setting("top_p", p, "a number in (0, 1]"));
            }
            if !(temperature.is_finite() && temperature > 0.0) {
                return Err(GenerateError::setting(
                    "temperature",
                    temperature,
                    "a finite number > 0",
                ));
            }
        }
        Ok(())
    }
}

impl<B: Backend, C: LatentCodec<B>> Generator<'_, B, C> {
    /// Describe `image` (`[3, H, W]` in `[0, 1]`, sides multiples of the ViT patch): the
    /// tokens of the answer, without `<|im_start|>` / `<|im_end|>`. `question` (tokens,
    /// without markers) is asked after the image when given.
    pub fn caption(
        &self,
        image: Tensor<B, 3>,
        question: Option<&[u32]>,
        config: &CaptionConfig,
    ) -> Result<Vec<u32>, GenerateError> {
        config.validate()?;
        let model = self.model;
        let device = image.device();
        let [_, h, w] = image.dims();
        let mut plan = vec![SplitSpec::VitImage(ImageSize::new(h, w))];
        if let Some(q) = question {
            plan.push(SplitSpec::Text {
                tokens: q.to_vec(),
                loss: false,
            });
        }
        let pack = PackedSequence::pack(&[Sample::Custom(plan)], &self.packing)?;
        let vit = [image.mul_scalar(2.0).sub_scalar(1.0)];
        let context = model.embed_sequence(&pack, &vit, None)?;
        let len = pack.len;
        let mask = pack.samples[0]
            .mask
            .to_tensor::<B>(&device)
            .reshape([len, len]);
        let routing = Routing::from_indices(&pack.und_indexes, &pack.gen_indexes, len, &device)?;
        let positions = index_tensor::<B>(&pack.position_ids, &device);
        // Room for the context and every token the answer may feed back.
        let capacity = len + config.max_tokens;
        let (_, mut cache) = model
            .language_model
            .prefill(context, &routing, positions, mask, capacity)?;

        let specials = self.packing.special_tokens;
        let first = pack.position_ids.iter().max().map_or(0, |p| p + 1);
        let mut token = specials.im_start;
        let mut rng = StdRng::seed_from_u64(config.seed);
        let mut answer = Vec::new();
        for position in (first..).take(config.max_tokens) {
            let logits = self.next_logits(token, position, &mut cache)?;
            token = pick(&logits, config.decoding, &mut rng);
            if token == specials.im_end {
                break;
            }
            answer.push(token);
        }
        Ok(answer)
    }

    /// Feed one token at `position`, keep it in the cache (written in place), return the
    /// next-token logits.
    fn next_logits(
        &self,
        token: u32,
        position: usize,
        cache: &mut KvCache<B>,
    ) -> Result<Vec<f32>, GenerateError> {
        let model = self.model;
        let device = model.embed_tokens.device();
        let hidden = model
            .embed_tokens
            .val()
            .select(0, index_tensor::<B>(&[token as usize], &device));
        let routing = Routing::from_indices(&[0], &[], 1, &device)?;
        let mask = Tensor::<B, 2, Bool>::from_bool(
            burn::tensor::TensorData::new(vec![false; cache.len() + 1], [1, cache.len() + 1]),
            &device,
        );
        let positions = index_tensor::<B>(&[position], &device);
        let out = model.language_model.forward_cached(
            hidden,
            &routing,
            positions,
            mask,
            cache,
            CacheWrite::Keep,
        )?;
        let logits = model.lm_head.forward(out);
        Ok(logits
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("f32 logits"))
    }
}

/// Choose the next token from `logits` (host side, so every backend picks alike).
pub fn pick(logits: &[f32], decoding: Decoding, rng: &mut impl Rng) -> u32 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &l)| {
                if l > best.1 { (i, l) } else { best }
            })
            .0 as u32
    };
    let Decoding::TopP { p, temperature } = decoding else {
        return argmax();
    };
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut probs: Vec<(usize, f64)> = logits
        .iter()
        .map(|&l| ((l as f64 - max) / temperature).exp())
        .enumerate()
        .collect();
    let total: f64 = probs.iter().map(|(_, q)| q).sum();
    probs.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut kept = 0;
    let mut mass = 0.0;
    for (_, q) in &probs {
        kept += 1;
        mass += q / total;
        if mass >= p {
            break;
        }
    }
    let nucleus = &probs[..kept];
    let norm: f64 = nucleus.iter().map(|(_, q)| q).sum();
    let mut u = rng.random::<f64>() * norm;
    for &(i, q) in nucleus {
        if u < q {
            return i as u32;
        }
        u -= q;
    }
    nucleus[kept - 1].0 as u32
}
