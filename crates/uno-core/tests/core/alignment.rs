//! Gradient alignment (the paper's Figure 8) on the tiny model. The reference cosines are
//! computed here on the host, from each parameter's gradient read off a plain backward and
//! listed field by field, not through the library's visitor.

use burn::backend::Autodiff;
use burn::module::Param;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Tensor, TensorData};
use uno_core::bagel::{Bagel, BagelConfig, LossNormalization, UnoBatch, UnoObjective};
use uno_core::data::{Dataset, SyntheticConfig, SyntheticScenes};
use uno_core::objectives::{UnoLossConfig, UnoLossOutput};
use uno_core::packing::PackedSequence;
use uno_core::train::{ExpertGradients, gradient_alignment};
use uno_core::vae::PixelCodec;
use uno_testing::to_vec;

struct Fixture<B: Backend> {
    model: Bagel<B>,
    objective: UnoObjective,
    pack: PackedSequence,
    images: Vec<Tensor<B, 3>>,
}

impl<B: Backend> Fixture<B> {
    fn batch(&self) -> UnoBatch<'_, B> {
        UnoBatch {
            pack: &self.pack,
            images: &self.images,
            vit_targets: &self.images,
            noise_seed: 17,
            normalization: LossNormalization::PerPack,
        }
    }

    fn loss(&self) -> UnoLossOutput<B> {
        self.model
            .uno_forward(self.batch(), &PixelCodec, &self.objective)
            .unwrap()
            .loss
    }
}

/// Three synthetic samples with both supervision splits, the tiny model frozen for UNO.
fn fixture<B: Backend>() -> Fixture<B> {
    let set = SyntheticScenes::new(SyntheticConfig {
        len: 3,
        image_size: 16,
        max_shapes: 3,
        seed: 5,
    })
    .unwrap();
    let config = BagelConfig::tiny(set.tokenizer().vocab_size(), set.special_tokens());
    let device = Default::default();
    B::seed(&device, 9);
    let mut model = config.init::<B>(&device).unwrap();
    // llm2vae is zero-initialised (BAGEL), which would cut the flow gradient to the
    // decoder; give it values.
    model.generation.llm2vae.weight = model
        .generation
        .llm2vae
        .weight
        .map(|w| w.random_like(Distribution::Normal(0.0, 0.2)));
    let items: Vec<_> = (0..3).map(|i| set.get(i).unwrap()).collect();
    let samples: Vec<_> = items.iter().map(|i| i.sample.clone()).collect();
    let images = items
        .iter()
        .map(|i| {
            let t = &i.target.vae;
            Tensor::from_data(
                TensorData::new(t.data.clone(), [3, t.height, t.width]),
                &device,
            )
        })
        .collect();
    Fixture {
        model: model.freeze_for_uno(),
        objective: config.objective().unwrap(),
        pack: PackedSequence::pack(&samples, &config.packing()).unwrap(),
        images,
    }
}

/// Every generation-expert gradient of each layer, concatenated on the host (zeros for a
/// parameter the loss does not reach).
fn host_gradients<B: AutodiffBackend>(model: &Bagel<B>, loss: Tensor<B, 1>) -> Vec<Vec<f64>> {
    let grads = loss.backward();
    let read2 = |p: &Param<Tensor<B, 2>>| {
        let zeros = || vec![0.0; p.val().shape().num_elements()];
        p.val().grad(&grads).map(to_vec).unwrap_or_else(zeros)
    };
    let read1 = |p: &Param<Tensor<B, 1>>| {
        let zeros = || vec![0.0; p.val().shape().num_elements()];
        p.val().grad(&grads).map(to_vec).unwrap_or_else(zeros)
    };
    model
        .language_model
        .layers
        .iter()
        .map(|layer| {
            let e = &layer.moe_gen;
            let attn = &e.self_attn;
            let mut flat: Vec<f32> = Vec::new();
            for linear in [&attn.q_proj, &attn.k_proj, &attn.v_proj, &attn.o_proj] {
                flat.extend(read2(&linear.weight));
                flat.extend(linear.bias.as_ref().map(read1).unwrap_or_default());
            }
            for norm in [&attn.q_norm, &attn.k_norm].into_iter().flatten() {
                flat.extend(read1(&norm.gamma));
            }
            for linear in [&e.mlp.gate_proj, &e.mlp.up_proj, &e.mlp.down_proj] {
                flat.extend(read2(&linear.weight));
            }
            flat.extend(read1(&e.input_layernorm.gamma));
            flat.extend(read1(&e.post_attention_layernorm.gamma));
            flat.into_iter().map(f64::from).collect()
        })
        .collect()
}

fn norm(a: &[f64]) -> f64 {
    a.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>() / (norm(a) * norm(b))
}

fn alignment_matches_host_cosines<B: AutodiffBackend>() {
    let f = fixture::<B>();
    let layers = gradient_alignment(&f.model, f.batch(), &PixelCodec, &f.objective).unwrap();
    assert_eq!(layers.len(), f.model.language_model.layers.len());
    let flow = host_gradients(&f.model, f.loss().flow);
    let caption = host_gradients(&f.model, f.loss().caption);
    let visual = host_gradients(&f.model, f.loss().visual);
    for (i, layer) in layers.iter().enumerate() {
        assert_eq!(layer.layer, i);
        let close = |a: f64, b: f64, what: &str| {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs().max(1e-3),
                "layer {i} {what}: {a} vs {b}"
            );
        };
        assert!(norm(&flow[i]) > 0.0);
        close(layer.flow_norm, norm(&flow[i]), "flow norm");
        for (term, host, what) in [
            (layer.caption, &caption[i], "caption"),
            (layer.visual, &visual[i], "visual"),
        ] {
            let term = term.unwrap_or_else(|| panic!("layer {i}: no {what} term"));
            close(term.norm, norm(host), what);
            let cos = term.cosine.unwrap();
            assert!((-1.0..=1.0).contains(&cos), "layer {i} {what}: {cos}");
            assert!(
                (cos - cosine(&flow[i], host)).abs() < 1e-4,
                "layer {i} {what}: {cos} vs {}",
                cosine(&flow[i], host)
            );
        }
    }
}

fn scaled_copies_are_aligned<B: AutodiffBackend>() {
    let f = fixture::<B>();
    let base = ExpertGradients::of(&f.model, f.loss().flow);
    let tripled = ExpertGradients::of(&f.model, f.loss().flow.mul_scalar(3.0));
    let negated = ExpertGradients::of(&f.model, f.loss().flow.mul_scalar(-0.5));
    let norms = base.norms();
    for (k, (same, (scaled, opposite))) in base
        .cosines(&base)
        .into_iter()
        .zip(
            base.cosines(&tripled)
                .into_iter()
                .zip(base.cosines(&negated)),
        )
        .enumerate()
    {
        assert!((same.unwrap() - 1.0).abs() < 1e-6, "layer {k}: {same:?}");
        assert!(
            (scaled.unwrap() - 1.0).abs() < 1e-5,
            "layer {k}: {scaled:?}"
        );
        assert!(
            (opposite.unwrap() + 1.0).abs() < 1e-5,
            "layer {k}: {opposite:?}"
        );
        assert!((tripled.norms()[k] - 3.0 * norms[k]).abs() < 1e-4 * norms[k]);
    }
}

fn disabled_terms_are_not_reported<B: AutodiffBackend>() {
    let mut f = fixture::<B>();
    f.objective.loss = UnoLossConfig::new()
        .with_caption(0.0)
        .with_visual(0.0)
        .init()
        .unwrap();
    let layers = gradient_alignment(&f.model, f.batch(), &PixelCodec, &f.objective).unwrap();
    for layer in layers {
        assert!(layer.flow_norm > 0.0);
        assert_eq!((layer.caption, layer.visual), (None, None));
    }
}

fn gradient_alignment_tests<B: Backend>() {
    alignment_matches_host_cosines::<Autodiff<B>>();
    scaled_copies_are_aligned::<Autodiff<B>>();
    disabled_terms_are_not_reported::<Autodiff<B>>();
}

uno_testing::backend_tests!(gradient_alignment_tests);
