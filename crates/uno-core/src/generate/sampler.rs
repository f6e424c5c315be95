//! Text-to-image and editing with BAGEL's flow sampler: the context is prefilled once into
//! a KV cache per guidance branch, and each Euler step queries only the image tokens.

use burn::tensor::{Bool, Tensor, TensorData, backend::Backend};
use rand::{SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use super::{GenerateError, Guidance, sampling_timesteps};
use crate::bagel::Bagel;
use crate::mot::{KvCache, Routing, SampleMask};
use crate::packing::{
    EditDropout, ImageSize, PackedSequence, PackingConfig, Sample, SplitKind, Supervision,
    index_tensor,
};
use crate::vae::LatentCodec;

/// Sampler settings (BAGEL's inference defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SamplerConfig {
    /// Timesteps `T` of `linspace(1, 0, T)`: `T - 1` Euler steps.
    pub steps: usize,
    /// Timestep shift of the schedule (BAGEL samples with 3.0).
    pub timestep_shift: f64,
    pub guidance: Guidance,
    /// Prefill the context once and query only the image tokens at each step (`true`), or
    /// run the whole sequence at every step (`false`: slower, the reference the cache is
    /// tested against).
    pub kv_cache: bool,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            steps: 50,
            timestep_shift: 3.0,
            guidance: Guidance::default(),
            kv_cache: true,
        }
    }
}

/// One image to generate.
#[derive(Debug, Clone)]
pub struct ImageRequest<B: Backend> {
    /// The prompt (text-to-image) or instruction (editing) tokens, without chat markers.
    pub prompt: Vec<u32>,
    /// Output size in pixels: multiples of the model's pixels per latent token.
    pub size: ImageSize,
    /// For editing: the source image `[3, H, W]` in `[0, 1]` (seen through the ViT and the
    /// codec, as in training).
    pub source: Option<Tensor<B, 3>>,
    /// Seed of the initial noise.
    pub seed: u64,
}

/// Generation and captioning with a model, its codec and its packing configuration.
pub struct Generator<'a, B: Backend, C: LatentCodec<B>> {
    pub model: &'a Bagel<B>,
    pub codec: &'a C,
    /// The model's packing ([`crate::bagel::BagelConfig::packing`]).
    pub packing: PackingConfig,
}

impl<B: Backend, C: LatentCodec<B>> Generator<'_, B, C> {
    /// Generate one image per request, `[3, H, W]` in `[0, 1]`. Requests run one after the
    /// other (the KV cache holds one sample); each is a pure function of its seed.
    pub fn generate(
        &self,
        requests: &[ImageRequest<B>],
        config: &SamplerConfig,
    ) -> Result<Vec<Tensor<B, 3>>, GenerateError> {
        config.guidance.validate()?;
        let timesteps = sampling_timesteps(config.steps, config.timestep_shift)?;
        requests
            .iter()
            .enumerate()
            .map(|(index, request)| {
                self.generate_one(request, config, &timesteps)
                    .map_err(|e| match e {
                        GenerateError::Request { message, .. } => {
                            GenerateError::Request { index, message }
                        }
                        other => other,
                    })
            })
            .collect()
    }

    fn generate_one(
        &self,
        request: &ImageRequest<B>,
        config: &SamplerConfig,
        timesteps: &[f64],
    ) -> Result<Tensor<B, 3>, GenerateError> {
        let px = self.codec.pixels_per_token();
        let ImageSize { height, width } = request.size;
        if height == 0 || width == 0 || height % px != 0 || width % px != 0 {
            return Err(GenerateError::Request {
                index: 0,
                message: format!(
                    "size {height}x{width} is not a positive multiple of the codec's {px} pixels per latent token"
                ),
            });
        }
        let grid = [height / px, width / px];
        let guidance = &config.guidance;
        let (conditional, text_free, image_free) = self.branch_samples(request)?;
        let build = |sample| Branch::new(self, sample, request.source.as_ref(), config.kv_cache);
        let conditional = build(conditional)?;
        // Unconditional branches only where guidance will use them.
        let any_text = timesteps.iter().any(|&t| guidance.text_active(t));
        let any_image = timesteps.iter().any(|&t| guidance.image_active(t));
        let text_free = any_text.then(|| build(text_free)).transpose()?;
        let image_free = match image_free {
            Some(sample) if any_image => Some(build(sample)?),
            _ => None,
        };

        let mut x = initial_noise::<B>(
            grid[0] * grid[1],
            self.codec.token_dim(),
            request.seed,
            &self.model.embed_tokens.device(),
        );
        x = euler(x, timesteps, |x, t| {
            let v = conditional.velocity(self, x.clone(), t)?;
            let v_text = match &text_free {
                Some(b) if guidance.text_active(t) => Some(b.velocity(self, x.clone(), t)?),
                _ => None,
            };
            let v_image = match &image_free {
                Some(b) if guidance.image_active(t) => Some(b.velocity(self, x, t)?),
                _ => None,
            };
            Ok::<_, GenerateError>(guidance.combine(v, v_text, v_image))
        })?;
        Ok(self.codec.decode_tokens(x, grid)?)
    }

    /// The samples of the three branches: conditional, without the last text, and (for
    /// editing) without the images.
    fn branch_samples(
        &self,
        request: &ImageRequest<B>,
    ) -> Result<(Sample, Sample, Option<Sample>), GenerateError> {
        let target = request.size;
        let prompt = request.prompt.clone();
        let Some(source) = &request.source else {
            let t2i = |drop_prompt| Sample::TextToImage {
                prompt: prompt.clone(),
                target,
                supervision: Supervision::none(),
                drop_prompt,
            };
            return Ok((t2i(false), t2i(true), None));
        };
        let [c, h, w] = source.dims();
        if c != 3 {
            return Err(GenerateError::Request {
                index: 0,
                message: format!("the source image must be [3, H, W], found [{c}, {h}, {w}]"),
            });
        }
        let edit = |dropout| Sample::Edit {
            source: ImageSize::new(h, w),
            instruction: prompt.clone(),
            target,
            supervision: Supervision::none(),
            dropout,
        };
        Ok((
            edit(EditDropout::default()),
            edit(EditDropout {
                instruction: true,
                ..EditDropout::default()
            }),
            Some(edit(EditDropout {
                source_vit: true,
                source_vae: true,
                ..EditDropout::default()
            })),
        ))
    }
}

/// Euler steps of the flow ODE from `timesteps[0]` down to the last timestep: `x <- x - v
/// (t_i - t_{i+1})`, with `v = velocity(x, t_i)` (the velocity points from data to noise,
/// so the sampler walks it backwards).
pub fn euler<B: Backend, E>(
    mut x: Tensor<B, 2>,
    timesteps: &[f64],
    mut velocity: impl FnMut(Tensor<B, 2>, f64) -> Result<Tensor<B, 2>, E>,
) -> Result<Tensor<B, 2>, E> {
    for pair in timesteps.windows(2) {
        let v = velocity(x.clone(), pair[0])?;
        x = x - v.mul_scalar(pair[0] - pair[1]);
    }
    Ok(x)
}

/// Standard normal noise `[tokens, channels]` drawn on the host from `seed` (identical on
/// every backend).
fn initial_noise<B: Backend>(
    tokens: usize,
    channels: usize,
    seed: u64,
    device: &B::Device,
) -> Tensor<B, 2> {
    let mut rng = StdRng::seed_from_u64(seed);
    let values: Vec<f32> = (0..tokens * channels)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    Tensor::from_data(TensorData::new(values, [tokens, channels]), device)
}

/// One guidance branch: a one-sample pack whose last split is the noised target image.
/// The context (everything before it) is embedded once, and prefilled when caching.
struct Branch<B: Backend> {
    pack: PackedSequence,
    /// Tokens before the noised split.
    context_len: usize,
    /// Context rows `[context_len, hidden]` (`None` for an empty context).
    context: Option<Tensor<B, 2>>,
    cache: Option<KvCache<B>>,
    /// The full sample mask `[L, L]`, `true` = masked.
    mask: Tensor<B, 2, Bool>,
}

impl<B: Backend> Branch<B> {
    fn new<C: LatentCodec<B>>(
        generator: &Generator<'_, B, C>,
        sample: Sample,
        source: Option<&Tensor<B, 3>>,
        kv_cache: bool,
    ) -> Result<Self, GenerateError> {
        let model = generator.model;
        let device = model.embed_tokens.device();
        let pack = PackedSequence::pack(&[sample], &generator.packing)?;
        let noised = pack
            .splits
            .iter()
            .find(|s| s.kind == SplitKind::NoisedImage)
            .expect("every branch sample ends with its noised target");
        let context_len = noised.start;
        // ViT images get [-1, 1]; clean VAE tokens their latents at t = 0; the query's
        // latent rows are placeholders (dropped with the query rows).
        let vit_images: Vec<Tensor<B, 3>> = if pack.vit_indexes.is_empty() {
            Vec::new()
        } else {
            let image = source.expect("only edits have ViT splits").clone();
            vec![image.mul_scalar(2.0).sub_scalar(1.0)]
        };
        let mut clean_rows = Vec::new();
        if pack.vae_indexes.len() > pack.noised_indexes.len() {
            let image = source.expect("only edits have clean VAE splits").clone();
            clean_rows.push(generator.codec.encode_tokens(image)?.0);
        }
        let query_tokens = pack.noised_indexes.len();
        clean_rows.push(Tensor::zeros(
            [query_tokens, generator.codec.token_dim()],
            &device,
        ));
        let rows = Tensor::cat(clean_rows, 0);
        let t = Tensor::zeros([pack.vae_indexes.len()], &device);
        let hidden = model
            .embed_sequence(&pack, &vit_images, Some((rows, t)))
            .map_err(GenerateError::Model)?;
        let context = (context_len > 0).then(|| hidden.narrow(0, 0, context_len));
        let len = pack.len;
        let mask = pack.samples[0]
            .mask
            .to_tensor::<B>(&device)
            .reshape([len, len]);
        let cache = match (kv_cache, &context) {
            (false, _) => None,
            (true, None) => Some(KvCache::new()),
            (true, Some(context)) => {
                let c = context_len;
                let (und, gen_) = split_routing(&pack, 0..c);
                let routing = Routing::from_indices(&und, &gen_, c, &device)?;
                let positions = index_tensor::<B>(&pack.position_ids[..c], &device);
                let prefix = mask.clone().slice([0..c, 0..c]);
                let (_, cache) =
                    model
                        .language_model
                        .prefill(context.clone(), &routing, positions, prefix)?;
                Some(cache)
            }
        };
        Ok(Self {
            pack,
            context_len,
            context,
            cache,
            mask,
        })
    }

    /// The conditional velocity of this branch at `(x_t, t)`, `[tokens, token_dim]`.
    fn velocity<C: LatentCodec<B>>(
        &self,
        generator: &Generator<'_, B, C>,
        x_t: Tensor<B, 2>,
        t: f64,
    ) -> Result<Tensor<B, 2>, GenerateError> {
        let model = generator.model;
        let device = x_t.device();
        let (c, len) = (self.context_len, self.pack.len);
        let n = len - c;
        let tokens = n - 2;
        // <|vision_start|> latents <|vision_end|>
        let markers = index_tensor::<B>(
            &[
                self.pack.text_ids[self.pack.text_ids.len() - 2] as usize,
                self.pack.text_ids[self.pack.text_ids.len() - 1] as usize,
            ],
            &device,
        );
        let markers = model.embed_tokens.val().select(0, markers);
        let latent_ids =
            &self.pack.latent_position_ids[self.pack.latent_position_ids.len() - tokens..];
        let latents = model
            .generation
            .input(x_t, Tensor::full([tokens], t, &device), latent_ids)
            .map_err(|e| GenerateError::Model(e.into()))?;
        let query = Tensor::cat(
            vec![
                markers.clone().narrow(0, 0, 1),
                latents,
                markers.narrow(0, 1, 1),
            ],
            0,
        );
        let out = match &self.cache {
            Some(cache) => {
                let routing = Routing::from_indices(
                    &[0, n - 1],
                    &(1..n - 1).collect::<Vec<_>>(),
                    n,
                    &device,
                )?;
                let positions = index_tensor::<B>(&self.pack.position_ids[c..], &device);
                let rows = self.mask.clone().slice([c..len, 0..len]);
                model
                    .language_model
                    .forward_cached(query, &routing, positions, rows, cache)?
                    .0
            }
            None => {
                let (und, gen_) = split_routing(&self.pack, 0..len);
                let routing = Routing::from_indices(&und, &gen_, len, &device)?;
                let positions = index_tensor::<B>(&self.pack.position_ids, &device);
                let hidden = match &self.context {
                    Some(context) => Tensor::cat(vec![context.clone(), query], 0),
                    None => query,
                };
                let sample = SampleMask {
                    start: 0,
                    len,
                    mask: self.mask.clone(),
                };
                model
                    .language_model
                    .forward(hidden, &routing, positions, &[sample])?
                    .narrow(0, c, n)
            }
        };
        Ok(model.generation.output(out.narrow(0, 1, tokens)))
    }
}

/// The und and gen indexes of the pack that fall in `range`, relative to its start.
fn split_routing(pack: &PackedSequence, range: std::ops::Range<usize>) -> (Vec<usize>, Vec<usize>) {
    let pick = |indexes: &[usize]| {
        indexes
            .iter()
            .filter(|i| range.contains(i))
            .map(|i| i - range.start)
            .collect()
    };
    (pick(&pack.und_indexes), pick(&pack.gen_indexes))
}
