//! Inference: the schedule, the Euler integrator against exact ODE solutions, the CFG
//! formula against hand values and its renorm bounds, KV-cache sampling against full
//! recomputation, seeded determinism, decoding sizes, PNG grids, and captioning.

use burn::tensor::{Tensor, TensorData, backend::Backend};
use uno_core::bagel::{Bagel, BagelConfig};
use uno_core::data::{ImageTransformConfig, ImageTransforms, RgbImage};
use uno_core::generate::{
    CaptionConfig, Decoding, EditSource, GUTTER, GenerateError, Generator, Guidance, ImageRequest,
    Renorm, SamplerConfig, euler, grid, pick, sampling_timesteps, save_png, to_rgb8,
};
use uno_core::packing::{ImageSize, SpecialTokens};
use uno_core::vae::PixelCodec;
use uno_testing::{assert_close, to_vec};

const SPECIALS: SpecialTokens = SpecialTokens {
    im_start: 60,
    im_end: 61,
    vision_start: 62,
    vision_end: 63,
};

fn t2<B: Backend>(values: &[f32], rows: usize, cols: usize) -> Tensor<B, 2> {
    Tensor::from_data(
        TensorData::new(values.to_vec(), [rows, cols]),
        &Default::default(),
    )
}

#[test]
fn schedule_values_and_errors() {
    // linspace(1, 0, 5) = 1, .75, .5, .25, 0 under shift 3: 3t / (1 + 2t).
    let t = sampling_timesteps(5, 3.0).unwrap();
    let expected = [1.0, 0.9, 0.75, 0.5, 0.0];
    for (a, b) in t.iter().zip(expected) {
        assert!((a - b).abs() < 1e-12, "{t:?}");
    }
    // Shift 1 is the plain linspace.
    assert_eq!(sampling_timesteps(3, 1.0).unwrap(), [1.0, 0.5, 0.0]);
    assert!(matches!(
        sampling_timesteps(1, 3.0),
        Err(GenerateError::Setting { name: "steps", .. })
    ));
    assert!(matches!(
        sampling_timesteps(10, 0.0),
        Err(GenerateError::Setting {
            name: "timestep_shift",
            ..
        })
    ));
}

/// dx/dt = a x from t = 1 down to 0 has x(0) = x(1) e^{-a}. Euler's walk multiplies by
/// `1 - a dt` per step: exactly that product, and within the global error bound
/// `h M / (2 L) (e^{L} - 1)` (M = a^2 max|x|, L = |a|) of the exact solution; halving the
/// step halves the error (first order).
fn euler_on_a_linear_field<B: Backend>() {
    let a = 0.8f64;
    let x1 = [1.5f32, -0.5];
    let solve = |steps: usize| {
        let t = sampling_timesteps(steps, 1.0).unwrap();
        let x = euler(t2::<B>(&x1, 1, 2), &t, |x, _| Ok::<_, ()>(x.mul_scalar(a))).unwrap();
        to_vec(x)
    };
    let mut errors = Vec::new();
    for steps in [11, 21, 41] {
        let got = solve(steps);
        let h = 1.0 / (steps - 1) as f64;
        let product: Vec<f32> = x1
            .iter()
            .map(|&x| (x as f64 * (1.0 - a * h).powi(steps as i32 - 1)) as f32)
            .collect();
        assert_close(&got, &product, 1e-5, 1e-5);
        let exact: Vec<f64> = x1.iter().map(|&x| x as f64 * (-a).exp()).collect();
        let max_x = 1.5f64; // |x| only shrinks along the way
        let bound = h * a * a * max_x / (2.0 * a) * (a.exp() - 1.0);
        let err = (got[0] as f64 - exact[0]).abs();
        assert!(err <= bound, "steps {steps}: error {err} > bound {bound}");
        errors.push(err);
    }
    for pair in errors.windows(2) {
        let ratio = pair[0] / pair[1];
        assert!((1.8..2.2).contains(&ratio), "not first order: {errors:?}");
    }
}

/// The flow of a straight line (constant velocity `eps - x0`) is integrated exactly at
/// any step count and shift: the sampler lands on `x0`.
fn euler_on_a_straight_line<B: Backend>() {
    let x0 = [0.25f32, -1.0, 2.0];
    let eps = [1.0f32, 0.5, -0.5];
    let v: Vec<f32> = eps.iter().zip(&x0).map(|(e, x)| e - x).collect();
    let t = sampling_timesteps(7, 3.0).unwrap();
    let out = euler(t2::<B>(&eps, 1, 3), &t, |_, _| {
        Ok::<_, ()>(t2::<B>(&v, 1, 3))
    })
    .unwrap();
    assert_close(&to_vec(out), &x0, 1e-6, 0.0);
}

/// Hand-computed guidance: v = (1, 2), v_text = (0, 1), v_image = (1, 0), s_t = 4, s_i = 1.5.
/// Text: (0, 1) + 4 (1, 1) = (4, 5). Image: (1, 0) + 1.5 ((4, 5) - (1, 0)) = (5.5, 7.5).
/// Global renorm: |v| / |v'| = sqrt(5) / sqrt(86.5) = 0.240424.
fn cfg_formula_matches_hand_values<B: Backend>() {
    let v = || t2::<B>(&[1.0, 2.0], 1, 2);
    let v_text = || Some(t2::<B>(&[0.0, 1.0], 1, 2));
    let v_image = || Some(t2::<B>(&[1.0, 0.0], 1, 2));
    let g = |renorm, renorm_min| Guidance {
        renorm,
        renorm_min,
        ..Guidance::default()
    };
    let none = g(Renorm::None, 0.0);
    assert_close(
        &to_vec(none.combine(v(), v_text(), v_image())),
        &[5.5, 7.5],
        1e-6,
        0.0,
    );
    assert_close(
        &to_vec(none.combine(v(), v_text(), None)),
        &[4.0, 5.0],
        1e-6,
        0.0,
    );
    let f = (5.0f32).sqrt() / (86.5f32).sqrt();
    let global = g(Renorm::Global, 0.0).combine(v(), v_text(), v_image());
    assert_close(&to_vec(global), &[5.5 * f, 7.5 * f], 1e-6, 0.0);
    // A minimum above the ratio wins.
    let floored = g(Renorm::Global, 0.5).combine(v(), v_text(), v_image());
    assert_close(&to_vec(floored), &[2.75, 3.75], 1e-6, 0.0);
    // text_channel: (4, 5) scaled by sqrt(5) / sqrt(41) first, then the image step.
    let ft = (5.0f32).sqrt() / (41.0f32).sqrt();
    let text_channel = g(Renorm::TextChannel, 0.0).combine(v(), v_text(), v_image());
    let expected = [1.0 + 1.5 * (4.0 * ft - 1.0), 1.5 * 5.0 * ft];
    assert_close(&to_vec(text_channel), &expected, 1e-6, 0.0);
    // No text branch: the conditional velocity itself.
    assert_close(
        &to_vec(none.combine(v(), None, v_image())),
        &[1.0, 2.0],
        0.0,
        0.0,
    );
}

/// Renorm bounds over random velocities: under global renorm `min |v'| <= |out| <= |v|`
/// whenever guidance amplifies, and per token under channel renorm.
fn renorm_bounds_hold<B: Backend>() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut rand = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
    let norm = |x: &[f32]| x.iter().map(|v| v * v).sum::<f32>().sqrt();
    for case in 0..50 {
        let (n, c) = (3, 4);
        let (v, vt, vi) = (rand(n * c), rand(n * c), rand(n * c));
        let min: f64 = [0.0, 0.3, 1.0][case % 3];
        for renorm in [Renorm::Global, Renorm::Channel] {
            let g = Guidance {
                renorm,
                renorm_min: min,
                ..Guidance::default()
            };
            let raw = to_vec(
                Guidance {
                    renorm: Renorm::None,
                    ..g
                }
                .combine(
                    t2::<B>(&v, n, c),
                    Some(t2::<B>(&vt, n, c)),
                    Some(t2::<B>(&vi, n, c)),
                ),
            );
            let out = to_vec(g.combine(
                t2::<B>(&v, n, c),
                Some(t2::<B>(&vt, n, c)),
                Some(t2::<B>(&vi, n, c)),
            ));
            let rows: Vec<(usize, usize)> = match renorm {
                Renorm::Global => vec![(0, n * c)],
                _ => (0..n).map(|r| (r * c, (r + 1) * c)).collect(),
            };
            for (a, b) in rows {
                let (nv, nraw, nout) = (norm(&v[a..b]), norm(&raw[a..b]), norm(&out[a..b]));
                let factor = (nv / (nraw + 1e-8)).clamp(min as f32, 1.0);
                assert!(
                    (nout - factor * nraw).abs() <= 1e-4 * (1.0 + nraw),
                    "case {case}"
                );
                assert!(
                    nout <= nraw * (1.0 + 1e-5),
                    "case {case}: renorm grew the norm"
                );
                assert!(
                    nout + 1e-4 >= min as f32 * nraw,
                    "case {case}: below the minimum"
                );
            }
        }
    }
}

fn model<B: Backend>() -> (BagelConfig, Bagel<B>) {
    let config = BagelConfig::tiny(64, SPECIALS);
    let device = Default::default();
    B::seed(&device, 21);
    let model = config.init::<B>(&device).unwrap();
    // llm2vae is zero-initialised (BAGEL); give it values so velocities are not all zero.
    let mut model = model;
    model.generation.llm2vae.weight = model.generation.llm2vae.weight.map(|w| {
        w.clone()
            .random_like(burn::tensor::Distribution::Normal(0.0, 0.2))
    });
    (config, model)
}

fn source<B: Backend>() -> Tensor<B, 3> {
    let values: Vec<f32> = (0..3 * 8 * 8)
        .map(|i| ((i * 37) % 101) as f32 / 100.0)
        .collect();
    Tensor::from_data(TensorData::new(values, [3, 8, 8]), &Default::default())
}

/// Text-to-image and editing with text and image guidance (renorm on): sampling from a
/// prefilled KV cache equals recomputing the whole sequence at every step; the output has
/// the requested size, lies in [0, 1], and is a function of the seed.
fn kv_cache_sampling_equals_full_recompute<B: Backend>() {
    let (config, model) = model::<B>();
    let generator = Generator {
        model: &model,
        codec: &PixelCodec,
        packing: config.packing(),
    };
    let requests = vec![
        ImageRequest {
            prompt: vec![5, 6, 7],
            size: ImageSize::new(8, 12),
            source: None,
            seed: 3,
        },
        ImageRequest {
            prompt: vec![9, 10],
            size: ImageSize::new(8, 8),
            source: Some(EditSource::same(source::<B>())),
            seed: 4,
        },
    ];
    let sampler = SamplerConfig {
        steps: 6,
        guidance: Guidance {
            interval: (0.0, 1.0),
            ..Guidance::default()
        },
        ..SamplerConfig::default()
    };
    let cached = generator.generate(&requests, &sampler).unwrap();
    let full = generator
        .generate(
            &requests,
            &SamplerConfig {
                kv_cache: false,
                ..sampler
            },
        )
        .unwrap();
    assert_eq!(cached[0].dims(), [3, 8, 12]);
    assert_eq!(cached[1].dims(), [3, 8, 8]);
    for (a, b) in cached.iter().zip(&full) {
        let (a, b) = (to_vec(a.clone()), to_vec(b.clone()));
        assert!(a.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_close(&a, &b, 1e-4, 1e-4);
    }
    // Seeded: the same seed again gives the same image, another seed another one.
    let again = generator.generate(&requests[..1], &sampler).unwrap();
    assert_eq!(to_vec(again[0].clone()), to_vec(cached[0].clone()));
    let other = generator
        .generate(
            &[ImageRequest {
                seed: 99,
                ..requests[0].clone()
            }],
            &sampler,
        )
        .unwrap();
    assert_ne!(to_vec(other[0].clone()), to_vec(cached[0].clone()));
    // Guidance changes the result (the unconditional branches are really used).
    let plain = generator
        .generate(
            &requests[..1],
            &SamplerConfig {
                guidance: Guidance::none(),
                ..sampler
            },
        )
        .unwrap();
    assert_ne!(to_vec(plain[0].clone()), to_vec(cached[0].clone()));
    // A size the codec cannot tile names the request.
    let err = generator
        .generate(
            &[
                requests[0].clone(),
                ImageRequest {
                    size: ImageSize::new(10, 8),
                    ..requests[0].clone()
                },
            ],
            &sampler,
        )
        .unwrap_err();
    assert!(
        matches!(&err, GenerateError::Request { index: 1, message } if message.contains("10x8")),
        "{err}"
    );
}

/// Greedy captioning is deterministic and stops at `max_tokens`; top-p with a tiny `p`
/// is greedy; top-p sampling is seeded.
fn captioning_decodes_from_the_cache<B: Backend>() {
    let (config, model) = model::<B>();
    let generator = Generator {
        model: &model,
        codec: &PixelCodec,
        packing: config.packing(),
    };
    let greedy = CaptionConfig {
        max_tokens: 6,
        ..CaptionConfig::default()
    };
    let a = generator
        .caption(source::<B>(), Some(&[5, 6]), &greedy)
        .unwrap();
    let b = generator
        .caption(source::<B>(), Some(&[5, 6]), &greedy)
        .unwrap();
    assert_eq!(a, b);
    assert!(a.len() <= 6 && a.iter().all(|&t| t < 64 && t != SPECIALS.im_end));
    let narrow = CaptionConfig {
        decoding: Decoding::TopP {
            p: 1e-9,
            temperature: 1.0,
        },
        ..greedy
    };
    assert_eq!(
        generator
            .caption(source::<B>(), Some(&[5, 6]), &narrow)
            .unwrap(),
        a
    );
    let sampled = |seed| {
        let c = CaptionConfig {
            decoding: Decoding::TopP {
                p: 0.95,
                temperature: 1.0,
            },
            seed,
            ..greedy
        };
        generator.caption(source::<B>(), None, &c).unwrap()
    };
    assert_eq!(sampled(1), sampled(1));
    let bad = CaptionConfig {
        decoding: Decoding::TopP {
            p: 0.0,
            temperature: 1.0,
        },
        ..greedy
    };
    assert!(matches!(
        generator.caption(source::<B>(), None, &bad),
        Err(GenerateError::Setting { name: "top_p", .. })
    ));
}

#[test]
fn top_p_keeps_the_nucleus() {
    use rand::SeedableRng;
    // Probabilities ~ (0.64, 0.24, 0.09, 0.03): p = 0.8 keeps the first two only.
    let logits = [2.0f32, 1.0, 0.0, -1.2];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let decoding = Decoding::TopP {
        p: 0.8,
        temperature: 1.0,
    };
    let mut counts = [0usize; 4];
    for _ in 0..4000 {
        counts[pick(&logits, decoding, &mut rng) as usize] += 1;
    }
    assert_eq!(counts[2] + counts[3], 0, "{counts:?}");
    // Within the nucleus the odds stay e^1 : 1 (0.731 of the mass on token 0).
    let share = counts[0] as f64 / 4000.0;
    assert!((share - 0.731).abs() < 0.03, "{counts:?}");
    assert_eq!(pick(&logits, Decoding::Greedy, &mut rng), 0);
}

/// Tiles land at their gutter offsets, the PNG reads back pixel for pixel.
fn png_grid_reads_back<B: Backend>() {
    let tile = |v: f32| -> Tensor<B, 3> { Tensor::full([3, 4, 6], v, &Default::default()) };
    let images = vec![tile(0.0), tile(0.5), tile(1.0)];
    let canvas = grid(images.clone(), 2).unwrap();
    assert_eq!(
        canvas.dimensions(),
        (2 * (6 + GUTTER) + GUTTER, 2 * (4 + GUTTER) + GUTTER)
    );
    assert_eq!(canvas.get_pixel(GUTTER, GUTTER).0, [0, 0, 0]);
    assert_eq!(
        canvas.get_pixel(GUTTER + 6 + GUTTER, GUTTER).0,
        [128, 128, 128]
    );
    assert_eq!(
        canvas.get_pixel(GUTTER, GUTTER + 4 + GUTTER).0,
        [255, 255, 255]
    );
    let path = std::env::temp_dir().join(format!("uno-grid-{}.png", std::process::id()));
    save_png(&canvas, &path).unwrap();
    let back = image::open(&path).unwrap().to_rgb8();
    assert_eq!(back, canvas);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(to_rgb8(images[1].clone()).unwrap().dimensions(), (6, 4));
    assert!(
        grid::<B>(
            vec![tile(0.0), Tensor::zeros([3, 2, 2], &Default::default())],
            2
        )
        .is_err()
    );
}

/// An edit source's two copies each keep their own grid, as in training: a 30x10 image
/// through a codec-side transform (8..24 px, stride 4: scale max(24/30, 8/10) = 0.8, so
/// 24x8) and a ViT-side one (4..12 px, stride 4: scale 0.4, so 12x4, 3x1 patches). The edit
/// samples with them (KV cache = full recompute), each copy changes the result, and a
/// malformed copy is named.
fn edit_source_copies_keep_their_grids<B: Backend>() {
    let (config, model) = model::<B>();
    let generator = Generator {
        model: &model,
        codec: &PixelCodec,
        packing: config.packing(),
    };
    let (height, width) = (10, 30);
    let image = RgbImage {
        height,
        width,
        data: (0..3 * height * width)
            .map(|i| ((i * 53) % 97) as f32 / 96.0)
            .collect(),
    };
    let side = |min, max| ImageTransformConfig {
        min,
        max,
        stride: 4,
        max_pixels: 1 << 20,
    };
    let transforms = ImageTransforms {
        vae: side(8, 24),
        vit: side(4, 12),
    };
    let device = Default::default();
    let source = EditSource::<B>::from_image(&image, &transforms, &device).unwrap();
    assert_eq!(source.vae.dims(), [3, 8, 24]);
    assert_eq!(source.vit.dims(), [3, 4, 12]);
    let request = |source: EditSource<B>| ImageRequest {
        prompt: vec![9, 10],
        size: ImageSize::new(8, 8),
        source: Some(source),
        seed: 4,
    };
    let sampler = SamplerConfig {
        steps: 4,
        ..SamplerConfig::default()
    };
    let run = |source: EditSource<B>, kv_cache| {
        let config = SamplerConfig {
            kv_cache,
            ..sampler
        };
        to_vec(generator.generate(&[request(source)], &config).unwrap()[0].clone())
    };
    let out = run(source.clone(), true);
    assert_close(&out, &run(source.clone(), false), 1e-4, 1e-4);
    let flipped = |t: Tensor<B, 3>| t.neg().add_scalar(1.0);
    let other_vit = EditSource {
        vit: flipped(source.vit.clone()),
        ..source.clone()
    };
    let other_vae = EditSource {
        vae: flipped(source.vae.clone()),
        ..source.clone()
    };
    assert_ne!(run(other_vit, true), out, "the ViT copy is used");
    assert_ne!(run(other_vae, true), out, "the codec copy is used");

    let bad = EditSource {
        vit: Tensor::zeros([1, 4, 12], &device),
        ..source
    };
    let err = generator.generate(&[request(bad)], &sampler).unwrap_err();
    assert!(
        matches!(&err, GenerateError::Request { message, .. } if message.contains("ViT copy")),
        "{err}"
    );
}

uno_testing::backend_tests!(
    euler_on_a_linear_field,
    euler_on_a_straight_line,
    cfg_formula_matches_hand_values,
    renorm_bounds_hold,
    kv_cache_sampling_equals_full_recompute,
    edit_source_copies_keep_their_grids,
    captioning_decodes_from_the_cache,
    png_grid_reads_back
);
