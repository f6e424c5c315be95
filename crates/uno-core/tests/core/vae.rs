//! Latent patchify, the PixelCodec and the FLUX autoencoder, against hand values and
//! `tools/vision_reference.py` (`tests/data/vision_vae.safetensors`); GroupNorm against
//! float64 statistics computed here; posterior sampling against the posterior it samples.

use crate::fixture;

use burn::module::AutodiffModule;
use burn::tensor::{Distribution, Tensor, TensorData, backend::Backend};
use fixture::{CoreFixture, Fixture};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::{Normal, Uniform};
use uno_core::vae::{
    CachedCodec, FluxAeConfig, FluxAutoEncoder, FrozenCodec, GroupNormConfig, LatentCache,
    LatentCacheStats, LatentCodec, LatentSampling, PixelCodec, VisionError, patchify_latent,
    unpatchify_latent,
};
use uno_testing::{assert_tensor_close, to_vec};

const TOL: f32 = 1e-4;

/// Latent value `c * 1000 + y * 10 + x` ([16, 4, 6]): token `r * 3 + q`, element
/// `(py * 2 + px) * 16 + c` is `c * 1000 + (2r + py) * 10 + 2q + px`.
fn latent_patchify_by_hand<B: Backend>() {
    let device = Default::default();
    let (z, h, w) = (16usize, 4usize, 6usize);
    let vals: Vec<f32> = (0..z)
        .flat_map(|c| (0..h).flat_map(move |y| (0..w).map(move |x| (c * 1000 + y * 10 + x) as f32)))
        .collect();
    let latent = Tensor::<B, 3>::from_data(TensorData::new(vals.clone(), [z, h, w]), &device);
    let (tokens, grid) = patchify_latent(latent).unwrap();
    assert_eq!(grid, [2, 3]);
    assert_eq!(tokens.dims(), [6, 64]);
    let t = to_vec(tokens.clone());
    for r in 0..2 {
        for q in 0..3 {
            for py in 0..2 {
                for px in 0..2 {
                    for c in 0..z {
                        let got = t[(r * 3 + q) * 64 + (py * 2 + px) * 16 + c];
                        assert_eq!(got, (c * 1000 + (2 * r + py) * 10 + 2 * q + px) as f32);
                    }
                }
            }
        }
    }
    assert_eq!(to_vec(unpatchify_latent(tokens, grid).unwrap()), vals);
    let odd = Tensor::<B, 3>::zeros([16, 3, 4], &device);
    assert!(matches!(
        patchify_latent(odd),
        Err(VisionError::NotDivisible {
            height: 3,
            patch: 2,
            ..
        })
    ));
}

/// PixelCodec: latent channel `(dy * 2 + dx) * 3 + c` at `(y, x)` is pixel
/// `(2y + dy, 2x + dx)` of channel `c`; channels 12..16 are zero; the round trip is exact.
fn pixel_codec_roundtrip<B: Backend>() {
    let device = Default::default();
    let codec = PixelCodec;
    let image = Tensor::<B, 4>::random([2, 3, 8, 12], Distribution::Uniform(0.0, 1.0), &device);
    let pixels = to_vec(image.clone());
    let latent = LatentCodec::<B>::encode(&codec, image.clone()).unwrap();
    assert_eq!(latent.dims(), [2, 16, 4, 6]);
    let l = to_vec(latent.clone());
    let px = |n: usize, c: usize, y: usize, x: usize| pixels[((n * 3 + c) * 8 + y) * 12 + x];
    let lat = |n: usize, k: usize, y: usize, x: usize| l[((n * 16 + k) * 4 + y) * 6 + x];
    for n in 0..2 {
        for y in 0..4 {
            for x in 0..6 {
                for dy in 0..2 {
                    for dx in 0..2 {
                        for c in 0..3 {
                            assert_eq!(
                                lat(n, (dy * 2 + dx) * 3 + c, y, x),
                                px(n, c, 2 * y + dy, 2 * x + dx)
                            );
                        }
                    }
                }
                for k in 12..16 {
                    assert_eq!(lat(n, k, y, x), 0.0);
                }
            }
        }
    }
    assert_eq!(
        to_vec(LatentCodec::<B>::decode(&codec, latent).unwrap()),
        pixels
    );

    // Tokens: one 64-d token per 4x4 pixel block, and back exactly.
    let one = image.narrow(0, 1, 1).reshape([3, 8, 12]);
    let one_vals = to_vec(one.clone());
    let (tokens, grid) = codec.encode_tokens(one).unwrap();
    assert_eq!((tokens.dims(), grid), ([6, 64], [2, 3]));
    assert_eq!(LatentCodec::<B>::token_dim(&codec), 64);
    assert_eq!(LatentCodec::<B>::pixels_per_token(&codec), 4);
    assert_eq!(to_vec(codec.decode_tokens(tokens, grid).unwrap()), one_vals);

    let err = codec
        .encode_tokens(Tensor::<B, 3>::zeros([3, 8, 10], &device))
        .unwrap_err();
    assert!(
        matches!(
            err,
            VisionError::NotDivisible {
                width: 10,
                patch: 4,
                ..
            }
        ),
        "{err}"
    );
    assert!(LatentCodec::<B>::encode(&codec, Tensor::zeros([1, 4, 8, 8], &device)).is_err());
    assert!(LatentCodec::<B>::decode(&codec, Tensor::zeros([1, 12, 2, 2], &device)).is_err());
    let err = codec
        .decode_tokens(Tensor::<B, 2>::zeros([6, 48], &device), [2, 3])
        .unwrap_err();
    assert!(err.to_string().contains("expected 64, found 48"), "{err}");
}

fn tiny_flux<B: Backend>(f: &Fixture, device: &B::Device) -> FluxAutoEncoder<B> {
    let ae = FluxAeConfig::tiny().init::<B>(device).unwrap();
    f.load_into(ae, "", device)
}

fn flux_matches_reference<B: Backend>() {
    let device = Default::default();
    let f = Fixture::load("vision_vae.safetensors");
    let ae = tiny_flux::<B>(&f, &device);
    assert_eq!(ae.downsample_factor(), 2);
    let image = f.tensor::<B, 4>("input.image", &device);

    let (moments, shape) = f.f32("expected.moments");
    let shape4 = |s: &[usize]| [s[0], s[1], s[2], s[3]];
    assert_tensor_close(
        ae.encoder.forward(image.clone()),
        shape4(&shape),
        &moments,
        TOL,
        TOL,
    );
    let (latent, lshape) = f.f32("expected.latent");
    assert_tensor_close(
        ae.encode_raw(image.clone()).unwrap(),
        shape4(&lshape),
        &latent,
        TOL,
        TOL,
    );

    let z = f.tensor::<B, 4>("input.latent", &device);
    let (raw, rshape) = f.f32("expected.decoded_raw");
    assert_tensor_close(
        ae.decode_raw(z.clone()).unwrap(),
        shape4(&rshape),
        &raw,
        TOL,
        TOL,
    );

    // The codec interface: [0, 1] images in, [0, 1] images out.
    let image01 = (image.clone() + 1.0) / 2.0;
    assert_tensor_close(
        ae.encode(image01.clone()).unwrap(),
        shape4(&lshape),
        &latent,
        TOL,
        TOL,
    );
    let (decoded, _) = f.f32("expected.decoded");
    assert_tensor_close(
        LatentCodec::decode(&ae, z).unwrap(),
        shape4(&rshape),
        &decoded,
        TOL,
        TOL,
    );
    let (tokens0, _) = f.f32("expected.tokens0");
    let (tokens, grid) = ae
        .encode_tokens(image01.narrow(0, 0, 1).reshape([3, 8, 12]))
        .unwrap();
    assert_eq!(grid, [2, 3]);
    assert_tensor_close(tokens.clone(), [6, 64], &tokens0, TOL, TOL);
    let back = ae.decode_tokens(tokens, grid).unwrap();
    assert_eq!(back.dims(), [3, 8, 12]);
}

fn flux_rejects_bad_input<B: Backend>() {
    let device = Default::default();
    let ae = FluxAeConfig::tiny().init::<B>(&device).unwrap();
    let err = ae
        .encode_raw(Tensor::zeros([1, 4, 8, 8], &device))
        .unwrap_err();
    assert!(err.to_string().contains("expected 3, found 4"), "{err}");
    let err = ae
        .encode_raw(Tensor::zeros([1, 3, 7, 8], &device))
        .unwrap_err();
    assert!(
        matches!(
            err,
            VisionError::NotDivisible {
                height: 7,
                width: 8,
                patch: 2,
                ..
            }
        ),
        "{err}"
    );
    let err = ae
        .decode_raw(Tensor::zeros([1, 8, 2, 2], &device))
        .unwrap_err();
    assert!(err.to_string().contains("expected 16, found 8"), "{err}");
    // Tokens need sides that are multiples of 2 * downsample = 4.
    assert!(matches!(
        ae.encode_tokens(Tensor::zeros([3, 6, 8], &device)),
        Err(VisionError::NotDivisible {
            height: 6,
            patch: 4,
            ..
        })
    ));
}

/// GroupNorm on `[2, 2, 1024, 1024]` in 2 groups: 1M elements (one 1024^2 channel) per
/// group, a quarter of a FLUX GroupNorm(32) group of a 128-channel 1024^2 activation. Sample 0 is a mostly flat image
/// (0.3 plus uniform noise of +-0.01, where a 1e-6 relative error in the mean is 5e-5 in
/// the output), sample 1 normal (mean 0.5, std 2); per-channel `gamma` / `beta` random.
/// The reference normalises with two-pass float64 statistics of the same f32 values.
/// `burn::nn::GroupNorm` (the old path) on the same input is printed (`--nocapture`), not
/// asserted: its error depends on the backend and its features.
fn group_norm_matches_f64_on_large_groups<B: Backend>() {
    let device = Default::default();
    let (c, side, groups, eps) = (2usize, 1024usize, 2usize, 1e-6);
    let per_sample = c * side * side;
    let mut rng = StdRng::seed_from_u64(5);
    let flat = Uniform::new(-0.01f32, 0.01).unwrap();
    let normal = Normal::new(0.5f32, 2.0).unwrap();
    let mut xs: Vec<f32> = (0..per_sample).map(|_| 0.3 + rng.sample(flat)).collect();
    xs.extend((0..per_sample).map(|_| rng.sample(normal)));
    let gamma: Vec<f32> = (0..c).map(|_| rng.random_range(0.5..2.0)).collect();
    let beta: Vec<f32> = (0..c).map(|_| rng.random_range(-0.5..0.5)).collect();

    let group_len = per_sample / groups;
    let channel_len = side * side;
    let mut want = vec![0.0f64; xs.len()];
    for (g, chunk) in xs.chunks(group_len).enumerate() {
        let n = chunk.len() as f64;
        let mean = chunk.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = chunk
            .iter()
            .map(|&x| (x as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        let inv = 1.0 / (var + eps).sqrt();
        for (i, &x) in chunk.iter().enumerate() {
            let ch = ((g % groups) * group_len + i) / channel_len;
            want[g * group_len + i] = (x as f64 - mean) * inv * gamma[ch] as f64 + beta[ch] as f64;
        }
    }

    let shape = [2, c, side, side];
    let x = Tensor::<B, 4>::from_data(TensorData::new(xs, shape), &device);
    let gamma = Tensor::<B, 1>::from_floats(gamma.as_slice(), &device);
    let beta = Tensor::<B, 1>::from_floats(beta.as_slice(), &device);
    let mut norm = GroupNormConfig::new(groups, c)
        .with_epsilon(eps)
        .init::<B>(&device)
        .unwrap();
    norm.gamma = norm.gamma.map(|_| gamma.clone());
    norm.beta = norm.beta.map(|_| beta.clone());
    let mut old = burn::nn::GroupNormConfig::new(groups, c)
        .with_epsilon(eps)
        .init::<B>(&device);
    old.gamma = old.gamma.map(|p| p.map(|_| gamma));
    old.beta = old.beta.map(|p| p.map(|_| beta));

    let max_err = |got: Vec<f32>, sample: usize| {
        let range = sample * per_sample..(sample + 1) * per_sample;
        got[range.clone()]
            .iter()
            .zip(&want[range])
            .map(|(&y, &w)| (y as f64 - w).abs())
            .fold(0.0, f64::max)
    };
    let got = to_vec(norm.forward(x.clone()));
    let old = to_vec(old.forward(x));
    for (sample, name) in ["flat", "random"].iter().enumerate() {
        let err = max_err(got.clone(), sample);
        eprintln!(
            "GroupNorm {name}: max abs err {err:.2e}, burn::nn::GroupNorm {:.2e}",
            max_err(old.clone(), sample)
        );
        assert!(err <= 1e-4, "{name}: max |GroupNorm - f64| = {err:.2e}");
    }
}

/// Posterior draws are a pure function of the seed, differ from the mean and between
/// seeds, and the mean path is `encode` (the fixture's `expected.latent`).
fn flux_sampling_is_seeded<B: Backend>() {
    let device = Default::default();
    let f = Fixture::load("vision_vae.safetensors");
    let ae = tiny_flux::<B>(&f, &device);
    let image01 = (f.tensor::<B, 4>("input.image", &device) + 1.0) / 2.0;
    let draw = |seed| {
        to_vec(
            ae.encode_with(image01.clone(), LatentSampling::Sample, seed)
                .unwrap(),
        )
    };
    let mean = to_vec(
        ae.encode_with(image01.clone(), LatentSampling::Mean, 7)
            .unwrap(),
    );
    assert_eq!(mean, to_vec(ae.encode(image01.clone()).unwrap()));
    let (latent, _) = f.f32("expected.latent");
    uno_testing::assert_close(&mean, &latent, TOL, TOL);
    let a = draw(7);
    assert_eq!(a, draw(7), "same seed, same draw");
    assert_ne!(a, draw(8), "another seed, another draw");
    assert!(
        a.iter().zip(&mean).all(|(s, m)| s != m),
        "a draw equals the mean"
    );

    // The token path samples too, with the same noise as a one-image encode.
    let one = image01.clone().narrow(0, 0, 1);
    let [_, c, h, w] = one.dims();
    let (tokens, grid) = ae
        .encode_tokens_with(one.clone().reshape([c, h, w]), LatentSampling::Sample, 3)
        .unwrap();
    let latent = ae.encode_with(one, LatentSampling::Sample, 3).unwrap();
    let [_, z, lh, lw] = latent.dims();
    let (expected, _) = patchify_latent(latent.reshape([z, lh, lw])).unwrap();
    assert_eq!(grid, [2, 3]);
    assert_eq!(to_vec(tokens), to_vec(expected));

    // The PixelCodec has no posterior: sampling is the identity encode.
    let pixels =
        LatentCodec::<B>::encode_with(&PixelCodec, image01.clone(), LatentSampling::Sample, 1);
    assert_eq!(
        to_vec(pixels.unwrap()),
        to_vec(LatentCodec::<B>::encode(&PixelCodec, image01).unwrap())
    );
}

/// A sampled encode is the posterior draw `LatentSampling::latent` makes, scaled; and over
/// 1000 draws (the posterior of one image repeated, one seed: every copy gets its own
/// noise), each latent cell's sample mean and std match the posterior's scaled mean
/// `scale * (mean - shift)` and std `scale * exp(logvar / 2)` within 5 standard errors. The
/// encoder runs once: the statistics are the sampling step's.
fn flux_samples_follow_the_posterior<B: Backend>() {
    let device = Default::default();
    let f = Fixture::load("vision_vae.safetensors");
    let ae = tiny_flux::<B>(&f, &device);
    let draws = 1000usize;
    let image = f.tensor::<B, 4>("input.image", &device).narrow(0, 0, 1);
    let (mean, logvar) = ae.posterior(image.clone()).unwrap();
    let scale = FluxAeConfig::tiny().scale_factor;
    let shift = FluxAeConfig::tiny().shift_factor;
    let mu: Vec<f64> = to_vec(mean.clone())
        .iter()
        .map(|&m| scale * (m as f64 - shift))
        .collect();
    let sd: Vec<f64> = to_vec(logvar.clone())
        .iter()
        .map(|&l| scale * (0.5 * l as f64).exp())
        .collect();
    let cells = mu.len();

    let draw = |mean: Tensor<B, 4>, logvar: Tensor<B, 4>| {
        let z = LatentSampling::Sample.latent(mean, logvar, 11);
        to_vec((z - shift) * scale)
    };
    assert_eq!(
        to_vec(
            ae.encode_raw_with(image, LatentSampling::Sample, 11)
                .unwrap()
        ),
        draw(mean.clone(), logvar.clone())
    );
    let z = draw(mean.repeat_dim(0, draws), logvar.repeat_dim(0, draws));
    assert_eq!(z.len(), draws * cells);
    let k = draws as f64;
    for cell in 0..cells {
        let xs = z.iter().skip(cell).step_by(cells).map(|&v| v as f64);
        let m = xs.clone().sum::<f64>() / k;
        let s = (xs.map(|v| (v - m).powi(2)).sum::<f64>() / (k - 1.0)).sqrt();
        assert!(
            (m - mu[cell]).abs() <= 5.0 * sd[cell] / k.sqrt(),
            "cell {cell}: sample mean {m} vs posterior {}",
            mu[cell]
        );
        assert!(
            (s / sd[cell] - 1.0).abs() <= 5.0 / (2.0 * k).sqrt(),
            "cell {cell}: sample std {s} vs posterior {}",
            sd[cell]
        );
    }
}

/// `FrozenCodec` runs the codec of an autodiff backend on its inner backend: the same
/// latents and images (mean and sampled, to 1e-5) as the codec itself, and no graph, even
/// when the codec's weights require gradients: a backward from its output reaches no weight.
fn frozen_codec_matches_the_codec<B: Backend>() {
    type A<B> = burn::backend::Autodiff<B>;
    let device = Default::default();
    let f = Fixture::load("vision_vae.safetensors");
    // Freshly initialised: the weights require gradients.
    let ae = FluxAeConfig::tiny().init::<A<B>>(&device).unwrap();
    let frozen = FrozenCodec(ae.valid());
    let image01 = (f.tensor::<A<B>, 4>("input.image", &device) + 1.0) / 2.0;
    let weight = |grads: &_| ae.encoder.conv_in.weight.grad(grads).is_some();

    let direct = ae.encode(image01.clone()).unwrap();
    assert!(
        weight(&direct.clone().sum().backward()),
        "the codec itself is tracked"
    );
    let latent = frozen.encode(image01.clone()).unwrap();
    // Not bit-equal: under autodiff Burn runs the unfused attention of the mid block.
    uno_testing::assert_close(&to_vec(latent.clone()), &to_vec(direct), 1e-5, 1e-5);
    assert!(
        !weight(&latent.clone().sum().backward()),
        "FrozenCodec recorded a graph"
    );

    let sample = |codec: &dyn LatentCodec<A<B>>| {
        to_vec(
            codec
                .encode_with(image01.clone(), LatentSampling::Sample, 5)
                .unwrap(),
        )
    };
    uno_testing::assert_close(&sample(&frozen), &sample(&ae), 1e-5, 1e-5);
    let decoded = frozen.decode(latent.clone()).unwrap();
    let direct = LatentCodec::decode(&ae, latent).unwrap();
    uno_testing::assert_close(&to_vec(decoded), &to_vec(direct), 1e-5, 1e-5);
    assert_eq!(
        (
            LatentCodec::<A<B>>::latent_channels(&frozen),
            LatentCodec::<A<B>>::downsample(&frozen)
        ),
        (ae.latent_channels(), ae.downsample_factor())
    );
}

/// A [`CachedCodec`] answers a repeated image from its cache with the very latents the
/// codec draws (bit-equal, mean and sampled, any seed), counts hits and misses, keys by
/// pixels (another image, or the same one shifted by one ulp-scale step, is a miss), never
/// grows past its byte budget, and with a budget of 0 is the bare codec.
fn latent_cache_is_exact<B: Backend>() {
    let device = Default::default();
    let f = Fixture::load("vision_vae.safetensors");
    let ae = tiny_flux::<B>(&f, &device);
    let image01 = (f.tensor::<B, 4>("input.image", &device) + 1.0) / 2.0;
    let one = image01.clone().narrow(0, 0, 1);
    let other = image01.narrow(0, 1, 1);
    let draw = |codec: &dyn LatentCodec<B>, image: &Tensor<B, 4>, sampling, seed| {
        to_vec(codec.encode_with(image.clone(), sampling, seed).unwrap())
    };

    let cache = LatentCache::new(1 << 20);
    let cached = CachedCodec {
        codec: &ae,
        cache: &cache,
    };
    let mut expected_hits = 0;
    for (k, (sampling, seed)) in [
        (LatentSampling::Sample, 3),
        (LatentSampling::Sample, 4),
        (LatentSampling::Mean, 0),
        (LatentSampling::Sample, 3),
    ]
    .into_iter()
    .enumerate()
    {
        let want = draw(&ae, &one, sampling, seed);
        assert_eq!(draw(&cached, &one, sampling, seed), want, "call {k}");
        expected_hits += u64::from(k > 0);
    }
    let stats = cache.stats();
    assert_eq!(
        (stats.hits, stats.misses, stats.entries),
        (expected_hits, 1, 1)
    );
    // One posterior: mean and logvar, [1, 4, 4, 6] f32 each.
    let [_, _, h, w] = one.dims();
    let cells = ae.latent_channels() * (h / 2) * (w / 2);
    assert_eq!(stats.bytes, 2 * cells * 4);

    // Keyed by the pixels: another image and a nudged copy are misses.
    let nudged = one.clone() + 1e-3;
    for image in [&other, &nudged] {
        assert_eq!(
            draw(&cached, image, LatentSampling::Sample, 9),
            draw(&ae, image, LatentSampling::Sample, 9)
        );
    }
    assert_eq!(cache.stats().misses, 3);

    // A budget of one posterior keeps the first and stays within it.
    let small = LatentCache::new(2 * cells * 4);
    let cached = CachedCodec {
        codec: &ae,
        cache: &small,
    };
    for image in [&one, &other, &other, &one] {
        draw(&cached, image, LatentSampling::Mean, 0);
    }
    let stats = small.stats();
    assert_eq!(
        (stats.hits, stats.misses, stats.entries, stats.bytes),
        (1, 3, 1, 2 * cells * 4)
    );

    // Budget 0: the bare codec, nothing counted.
    let off = LatentCache::new(0);
    let cached = CachedCodec {
        codec: &ae,
        cache: &off,
    };
    assert_eq!(
        draw(&cached, &one, LatentSampling::Sample, 3),
        draw(&ae, &one, LatentSampling::Sample, 3)
    );
    assert_eq!(off.stats(), LatentCacheStats::default());
}

#[test]
fn flux_config() {
    let cfg = FluxAeConfig::default();
    assert_eq!(
        (cfg.ch, cfg.z_channels, cfg.num_res_blocks, cfg.norm_groups),
        (128, 16, 2, 32)
    );
    assert_eq!(cfg.ch_mult, vec![1, 2, 4, 4]);
    assert_eq!(cfg.downsample(), 8);
    assert_eq!((cfg.scale_factor, cfg.shift_factor), (0.3611, 0.1159));
    let parsed: FluxAeConfig =
        serde_json::from_str(r#"{"ch": 8, "ch_mult": [1, 2], "norm_groups": 4}"#).unwrap();
    let mut tiny = FluxAeConfig::tiny();
    tiny.resolution = 256;
    assert_eq!(parsed, tiny);
    let mut bad = FluxAeConfig::tiny();
    bad.norm_groups = 3;
    assert!(matches!(bad.validate(), Err(VisionError::InvalidConfig(m)) if m.contains("3 groups")));
    bad.ch_mult = vec![];
    assert!(bad.validate().is_err());
}

uno_testing::backend_tests!(
    latent_patchify_by_hand,
    pixel_codec_roundtrip,
    flux_matches_reference,
    flux_rejects_bad_input,
    group_norm_matches_f64_on_large_groups,
    flux_sampling_is_seeded,
    flux_samples_follow_the_posterior,
    frozen_codec_matches_the_codec,
    latent_cache_is_exact
);
