//! The assembled BAGEL model's UNO forward on the synthetic data: loss values, counts,
//! and the gradient paths UNO relies on (caption and visual losses reach the generation
//! expert THROUGH the frozen understanding expert).

use burn::module::Param;
use burn::tensor::{Tensor, backend::AutodiffBackend, backend::Backend};
use uno_core::bagel::{Bagel, BagelConfig, BagelError, UnoBatch, flow_slots};
use uno_core::data::{SyntheticConfig, TrainItem};

use crate::scenes::scenes;
use uno_core::objectives::FlowNoise;
use uno_core::packing::PackedSequence;
use uno_core::vae::PixelCodec;

fn setup<B: Backend>(
    items: usize,
) -> (
    BagelConfig,
    Bagel<B>,
    PackedSequence,
    Vec<Tensor<B, 3>>,
    Vec<TrainItem>,
) {
    let set = SyntheticConfig {
        len: 8,
        image_size: 16,
        max_shapes: 2,
        seed: 3,
    };
    let s = scenes::<B>(set, items);
    (s.config, s.model, s.pack, s.images, s.items)
}

fn scalar<B: Backend>(t: Tensor<B, 1>) -> f32 {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()[0]
}

/// With `llm2vae` zero-initialised (BAGEL), the predicted velocity is 0, so the flow loss
/// is exactly mean_tokens(mean_channels((eps - x0)^2)), computable on the host from the
/// seeded noise and the PixelCodec's identity latents.
fn flow_loss_matches_host_value_at_init<B: Backend>() {
    let (config, model, pack, images, items) = setup::<B>(2);
    let out = model
        .uno_forward(
            UnoBatch {
                pack: &pack,
                images: &images,
                vit_targets: &images,
                noise_seed: 11,
                normalization: Default::default(),
            },
            &PixelCodec,
            &config.objective().unwrap(),
        )
        .unwrap();
    let counts = out.loss.counts;
    assert_eq!(counts.noised_tokens, 2 * 16); // 16x16 px, 4x4 px per token
    assert_eq!(counts.metaqueries, 2 * 4);
    assert_eq!(counts.caption_tokens, pack.caption_ce.len());
    assert_eq!(
        pack.caption_ce.len(),
        items
            .iter()
            .map(|i| i.caption.split(' ').count() + 1)
            .sum::<usize>()
    );

    let noise = FlowNoise::sample(&flow_slots(&pack), 64, 4.0, 11).unwrap();
    // PixelCodec token (py, px, c) of a 2x2 latent cell block = a 4x4 pixel block:
    // latent channel (dy*2+dx)*3+c of cell (y, x) is pixel (2y+dy, 2x+dx); channels 12..16 zero.
    let mut expected = 0.0f64;
    for (img, item) in items.iter().enumerate() {
        let t = &item.target.vae;
        for token in 0..16 {
            let (ty, tx) = (token / 4, token % 4);
            let row = img * 16 + token;
            for py in 0..2 {
                for px in 0..2 {
                    for z in 0..16 {
                        let x0 = if z < 12 {
                            let (dy, dx, c) = (z / 6, (z / 3) % 2, z % 3);
                            t.get(c, (2 * ty + py) * 2 + dy, (2 * tx + px) * 2 + dx)
                        } else {
                            0.0
                        };
                        let eps = noise.noise[row * 64 + (py * 2 + px) * 16 + z];
                        expected += f64::from((eps - x0) * (eps - x0)) / 64.0;
                    }
                }
            }
        }
    }
    expected /= 32.0;
    let got = scalar(out.loss.flow);
    assert!(
        (f64::from(got) - expected).abs() < 1e-4 * expected,
        "flow {got} vs host {expected}"
    );
    // Caption CE at init is near ln(vocab) (random small logits) and finite.
    let cap = scalar(out.loss.caption);
    let ln_v = (config.llm.vocab_size as f32).ln();
    assert!((cap - ln_v).abs() < 0.5, "caption {cap} vs ln V {ln_v}");
    let vis = scalar(out.loss.visual);
    assert!(vis.is_finite() && (0.0..=2.0).contains(&vis));
    let total = scalar(out.loss.total);
    assert!((total - (got + 0.1 * cap + 0.2 * vis)).abs() < 1e-4);
}

fn grad_norm<B: AutodiffBackend>(p: &Param<Tensor<B, 2>>, grads: &B::Gradients) -> Option<f32> {
    p.val().grad(grads).map(|g| {
        let g: Tensor<B::InnerBackend, 2> = g;
        scalar(g.powf_scalar(2.0).sum().sqrt())
    })
}

/// UNO's premise: with the understanding expert frozen, the caption loss alone and the
/// visual loss alone still produce gradients on the generation expert (they flow through
/// the frozen expert's attention to the noised image tokens), and none on frozen weights.
fn supervision_gradients_reach_generation_expert<B: AutodiffBackend>() {
    let (config, model, pack, images, _) = setup::<B>(2);
    let model = model.freeze_for_uno();
    let objective = config.objective().unwrap();
    for term in ["caption", "visual"] {
        let out = model
            .uno_forward(
                UnoBatch {
                    pack: &pack,
                    images: &images,
                    vit_targets: &images,
                    noise_seed: 5,
                    normalization: Default::default(),
                },
                &PixelCodec,
                &objective,
            )
            .unwrap();
        let loss = if term == "caption" {
            out.loss.caption
        } else {
            out.loss.visual
        };
        let grads = loss.backward();
        let layer = &model.language_model.layers[0];
        let gen_k = grad_norm(&layer.moe_gen.self_attn.k_proj.weight, &grads);
        assert!(
            gen_k.is_some_and(|g| g > 0.0),
            "{term}: gen k_proj grad {gen_k:?}"
        );
        let gen_v = grad_norm(&layer.moe_gen.self_attn.v_proj.weight, &grads);
        assert!(
            gen_v.is_some_and(|g| g > 0.0),
            "{term}: gen v_proj grad {gen_v:?}"
        );
        assert!(
            grad_norm(&layer.und.self_attn.q_proj.weight, &grads).is_none(),
            "{term}: und has a grad"
        );
        assert!(grad_norm(&model.embed_tokens, &grads).is_none());
        assert!(grad_norm(&model.lm_head.weight, &grads).is_none());
        let mq = grad_norm(&model.metaqueries, &grads);
        if term == "visual" {
            assert!(
                mq.is_some_and(|g| g > 0.0),
                "metaqueries get the visual gradient"
            );
        } else {
            // Captions never see the metaqueries.
            assert!(
                mq.is_none_or(|g| g == 0.0),
                "caption leaked into metaqueries: {mq:?}"
            );
        }
    }
}

fn bad_images_are_errors<B: Backend>() {
    let (config, model, pack, images, _) = setup::<B>(2);
    let objective = config.objective().unwrap();
    let err = model
        .uno_forward(
            UnoBatch {
                pack: &pack,
                images: &images[..1],
                vit_targets: &images,
                noise_seed: 0,
                normalization: Default::default(),
            },
            &PixelCodec,
            &objective,
        )
        .unwrap_err();
    assert!(matches!(err, BagelError::Image { .. }), "{err}");
    let device = Default::default();
    let wrong = vec![images[0].clone(), Tensor::zeros([3, 16, 20], &device)];
    let err = model
        .uno_forward(
            UnoBatch {
                pack: &pack,
                images: &wrong,
                vit_targets: &images,
                noise_seed: 0,
                normalization: Default::default(),
            },
            &PixelCodec,
            &objective,
        )
        .unwrap_err();
    assert!(err.to_string().contains("image 1 of the pack"), "{err}");
}

fn supervision_gradients<B: Backend>() {
    supervision_gradients_reach_generation_expert::<burn::backend::Autodiff<B>>();
}

uno_testing::backend_tests!(
    flow_loss_matches_host_value_at_init,
    supervision_gradients,
    bad_images_are_errors
);
