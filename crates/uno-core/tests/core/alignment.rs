//! Gradient alignment (the paper's Figure 8) on the tiny model. The reference cosines are
//! computed here on the host, from each parameter's gradient read off a plain backward and
//! listed field by field, not through the library's visitor.

use burn::backend::Autodiff;
use burn::module::Param;
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use uno_core::bagel::{Bagel, BagelConfig, LossNormalization, UnoBatch, UnoObjective};
use uno_core::data::SyntheticScenes;
use uno_core::objectives::ConditionDropoutConfig;
use uno_core::objectives::{UnoLossConfig, UnoLossOutput};
use uno_core::packing::PackedSequence;
use uno_core::train::{
    BatchFill, ExpertGradients, HeldOut, PackedBatches, UnoTrainee, gradient_alignment,
};
use uno_core::trainer::{DataSource, TrainRng};
use uno_core::vae::{Codec, PixelCodec};
use uno_testing::to_vec;

use crate::scenes::{gradient_scenes, gradient_set};

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
    B::seed(&Default::default(), 9);
    let s = gradient_scenes::<B>();
    Fixture {
        model: s.model.freeze_for_uno(),
        objective: s.config.objective().unwrap(),
        pack: s.pack,
        images: s.images,
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

/// The evaluation hook's figures (`diagnostics.alignment`): [`gradient_alignment`] of the
/// held-out set's first batch (packed as the data source packs it, under the set's noise
/// seed) with the joint terms on, named per layer; a run that trains neither term (SFT)
/// gets the same figures as a joint run.
fn held_out_alignment_measures_the_joint_terms<B: AutodiffBackend>() {
    let f = fixture::<B>();
    // The model is cloned below: its lazily initialised weights are drawn first.
    uno_testing::materialise(&f.model);
    let set = || SyntheticScenes::new(gradient_set()).unwrap();
    let config = BagelConfig::tiny(set().tokenizer().vocab_size(), set().special_tokens());
    let device = B::Device::default();
    let (fill, seed) = (BatchFill::Samples(3), 23);
    let held_out =
        HeldOut::<B>::new(set(), 1, fill, config.packing(), device.clone(), seed).unwrap();
    let sft = UnoLossConfig::new().with_caption(0.0).with_visual(0.0);
    let trainee = |loss: UnoLossConfig| {
        let objective = UnoObjective {
            loss: loss.init().unwrap(),
            ..f.objective.clone()
        };
        UnoTrainee::new(f.model.clone(), objective).with_codec(Codec::pixel())
    };
    let got = held_out.alignment(&trainee(sft), "align_").unwrap();
    let joint = held_out
        .alignment(&trainee(UnoLossConfig::new()), "align_")
        .unwrap();
    // The same figures, up to the summation order of two backwards (ndarray's differ by
    // about 1e-7); cosines live in [-1, 1], so the tolerance is absolute for them.
    assert_eq!(got.len(), joint.len());
    for ((name, a), (joint_name, b)) in got.iter().zip(&joint) {
        assert_eq!(name, joint_name);
        assert!(
            (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
            "{name}: {a} vs {b}"
        );
    }

    let no_dropout = ConditionDropoutConfig::new()
        .with_text(0.0)
        .with_vit(0.0)
        .with_vae(0.0);
    let batch = PackedBatches::<_, B>::new(set(), fill, config.packing(), no_dropout, device)
        .batch(0, &mut TrainRng::new(0))
        .unwrap();
    let want = gradient_alignment(
        &f.model,
        UnoBatch {
            pack: &batch.pack,
            images: &batch.images,
            vit_targets: &batch.vit_targets,
            noise_seed: seed,
            normalization: LossNormalization::PerPack,
        },
        &PixelCodec,
        &f.objective,
    )
    .unwrap();
    let mut names = Vec::new();
    for layer in &want {
        let i = layer.layer;
        let value = |name: &str| {
            got.iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("no {name} in {got:?}"))
                .1
        };
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * (1.0 + b.abs());
        let flow = value(&format!("align_flow_norm_l{i}"));
        assert!(close(flow, layer.flow_norm), "layer {i}: {flow}");
        for (term, figures) in [("caption", layer.caption), ("visual", layer.visual)] {
            let cosine = figures.and_then(|t| t.cosine).unwrap();
            let logged = value(&format!("align_{term}_l{i}"));
            assert!(
                close(logged, cosine),
                "layer {i} {term}: {logged} vs {cosine}"
            );
        }
        names.extend(["flow_norm", "caption", "visual"].map(|n| format!("align_{n}_l{i}")));
    }
    let mut logged: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    logged.sort();
    names.sort();
    assert_eq!(logged, names);
}

fn gradient_alignment_tests<B: Backend>() {
    alignment_matches_host_cosines::<Autodiff<B>>();
    scaled_copies_are_aligned::<Autodiff<B>>();
    disabled_terms_are_not_reported::<Autodiff<B>>();
    held_out_alignment_measures_the_joint_terms::<Autodiff<B>>();
}

uno_testing::backend_tests!(gradient_alignment_tests);
