//! Text-to-image and editing with BAGEL's flow sampler: the context is prefilled once into
//! a KV cache per guidance branch, and each Euler step queries only the image tokens.

use burn::tensor::{Bool, Int, Tensor, TensorData, backend::Backend};
use rand::{SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use super::{EditSource, GenerateError, Guidance, sampling_timesteps};
use crate::bagel::Bagel;
use crate::bagel::sample_attention;
use crate::mot::{CacheWrite, KvCache, Routing, SampleAttention};
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
    /// Classifier-free guidance (text and image scales, interval, renorm).
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
    /// For editing: the source image, one copy for the codec and one for the ViT, as in
    /// training ([`EditSource::from_image`]).
    pub source: Option<EditSource<B>>,
    /// Seed of the initial noise.
    pub seed: u64,
}

/// Generation and captioning with a model, its codec and its packing configuration.
pub struct Generator<'a, B: Backend, C: LatentCodec<B>> {
    /// The model (inference only; any backend).
    pub model: &'a Bagel<B>,
    /// The codec its latents come from (decodes the samples, encodes edit sources).
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
        let mut conditional = build(conditional)?;
        // Unconditional branches only where guidance will use them.
        let any_text = timesteps.iter().any(|&t| guidance.text_active(t));
        let any_image = timesteps.iter().any(|&t| guidance.image_active(t));
        let mut text_free = any_text.then(|| build(text_free)).transpose()?;
        let mut image_free = match image_free {
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
            let v = conditional.velocity(self.model, x.clone(), t)?;
            let v_text = match &mut text_free {
                Some(b) if guidance.text_active(t) => Some(b.velocity(self.model, x.clone(), t)?),
                _ => None,
            };
            let v_image = match &mut image_free {
                Some(b) if guidance.image_active(t) => Some(b.velocity(self.model, x, t)?),
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
        let size = |image: &Tensor<B, 3>, side: &str| match image.dims() {
            [3, h, w] => Ok(ImageSize::new(h, w)),
            dims => Err(GenerateError::Request {
                index: 0,
                message: format!("the source's {side} copy must be [3, H, W], found {dims:?}"),
            }),
        };
        let (source_vae, source_vit) = (size(&source.vae, "VAE")?, size(&source.vit, "ViT")?);
        let edit = |dropout| Sample::Edit {
            source: source_vae,
            source_vit,
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
/// Everything that does not depend on `(x_t, t)` is built once here: the context (prefilled
/// when caching), the marker rows, routings, positions and masks, so a step uploads nothing
/// but its timestep.
struct Branch<B: Backend> {
    /// `<|vision_start|>` and `<|vision_end|>` rows `[2, hidden]`.
    markers: Tensor<B, 2>,
    /// Latent position ids of the image tokens.
    latent_ids: Vec<usize>,
    step: StepInputs<B>,
}

/// What the decoder needs per step besides the query rows.
enum StepInputs<B: Backend> {
    /// Query the image split `[n]` against the prefilled context; the cache has room for
    /// the query after the context, rewritten at every step.
    Cached {
        cache: KvCache<B>,
        routing: Routing<B>,
        positions: Tensor<B, 1, Int>,
        /// Rows of the sample mask for the query, `[n, L]`.
        mask: Tensor<B, 2, Bool>,
    },
    /// Run context + query `[L]` again.
    Full {
        /// Context rows `[L - n, hidden]` (`None` for an empty context).
        context: Option<Tensor<B, 2>>,
        routing: Routing<B>,
        positions: Tensor<B, 1, Int>,
        attention: SampleAttention,
    },
}

impl<B: Backend> Branch<B> {
    fn new<C: LatentCodec<B>>(
        generator: &Generator<'_, B, C>,
        sample: Sample,
        source: Option<&EditSource<B>>,
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
        let (c, len) = (noised.start, pack.len);
        // ViT images get [-1, 1]; clean VAE tokens their latents at t = 0; the query's
        // latent rows are placeholders (only its marker rows are kept).
        let vit_images: Vec<Tensor<B, 3>> = if pack.vit_indexes.is_empty() {
            Vec::new()
        } else {
            let image = source.expect("only edits have ViT splits").vit.clone();
            vec![image.mul_scalar(2.0).sub_scalar(1.0)]
        };
        let mut clean_rows = Vec::new();
        if pack.vae_indexes.len() > pack.noised_indexes.len() {
            let image = source
                .expect("only edits have clean VAE splits")
                .vae
                .clone();
            clean_rows.push(generator.codec.encode_tokens(image)?.0);
        }
        let tokens = pack.noised_indexes.len();
        clean_rows.push(Tensor::zeros(
            [tokens, generator.codec.token_dim()],
            &device,
        ));
        let rows = Tensor::cat(clean_rows, 0);
        let t = Tensor::zeros([pack.vae_indexes.len()], &device);
        let hidden = model
            .embed_sequence(&pack, &vit_images, Some((rows, t)))
            .map_err(GenerateError::Model)?;
        let markers = hidden
            .clone()
            .select(0, index_tensor::<B>(&[c, len - 1], &device));
        let context = (c > 0).then(|| hidden.narrow(0, 0, c));
        let step = if kv_cache {
            let mask = pack.samples[0]
                .mask
                .to_tensor::<B>(&device)
                .reshape([len, len]);
            let cache = match context {
                None => model.language_model.kv_cache(len, &device),
                Some(context) => {
                    let (und, gen_) = split_routing(&pack, 0..c);
                    let routing = Routing::from_indices(&und, &gen_, c, &device)?;
                    let positions = index_tensor::<B>(&pack.position_ids[..c], &device);
                    let prefix = mask.clone().slice([0..c, 0..c]);
                    model
                        .language_model
                        .prefill(context, &routing, positions, prefix, len)?
                        .1
                }
            };
            let (und, gen_) = split_routing(&pack, c..len);
            StepInputs::Cached {
                cache,
                routing: Routing::from_indices(&und, &gen_, len - c, &device)?,
                positions: index_tensor::<B>(&pack.position_ids[c..], &device),
                mask: mask.slice([c..len, 0..len]),
            }
        } else {
            let (und, gen_) = split_routing(&pack, 0..len);
            StepInputs::Full {
                context,
                routing: Routing::from_indices(&und, &gen_, len, &device)?,
                positions: index_tensor::<B>(&pack.position_ids, &device),
                attention: sample_attention(0, &pack.samples[0].mask)?,
            }
        };
        let latent_ids =
            pack.latent_position_ids[pack.latent_position_ids.len() - tokens..].to_vec();
        Ok(Self {
            markers,
            latent_ids,
            step,
        })
    }

    /// The conditional velocity of this branch at `(x_t, t)`, `[tokens, token_dim]`.
    fn velocity(
        &mut self,
        model: &Bagel<B>,
        x_t: Tensor<B, 2>,
        t: f64,
    ) -> Result<Tensor<B, 2>, GenerateError> {
        let tokens = self.latent_ids.len();
        let latents = model
            .generation
            .input(
                x_t.clone(),
                Tensor::full([tokens], t, &x_t.device()),
                &self.latent_ids,
            )
            .map_err(|e| GenerateError::Model(e.into()))?;
        // <|vision_start|> latents <|vision_end|>
        let query = Tensor::cat(
            vec![
                self.markers.clone().narrow(0, 0, 1),
                latents,
                self.markers.clone().narrow(0, 1, 1),
            ],
            0,
        );
        let out = match &mut self.step {
            StepInputs::Cached {
                cache,
                routing,
                positions,
                mask,
            } => model.language_model.forward_cached(
                query,
                routing,
                positions.clone(),
                mask.clone(),
                cache,
                CacheWrite::Discard,
            )?,
            StepInputs::Full {
                context,
                routing,
                positions,
                attention,
            } => {
                let hidden = match context {
                    Some(context) => Tensor::cat(vec![context.clone(), query], 0),
                    None => query,
                };
                let [len, _] = hidden.dims();
                model
                    .language_model
                    .forward(
                        hidden,
                        routing,
                        positions.clone(),
                        std::slice::from_ref(attention),
                    )?
                    .narrow(0, len - tokens - 2, tokens + 2)
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
