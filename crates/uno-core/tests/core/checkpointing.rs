//! Per-layer activation checkpointing of the UNO forward (`Bagel::uno_forward_taped`,
//! `LayerTape::gradients`, `UnoTrainee::with_layer_checkpointing`): the same losses and the
//! same gradient of every trained parameter as the plain forward's backward, with UNO's
//! frozen understanding expert and with every weight trained; and the trainer's loss
//! (`loss_with_gradients`) carries those gradients.

use burn::backend::Autodiff;
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Tensor, TensorData};
use uno_core::bagel::{Bagel, BagelConfig, LossNormalization, UnoBatch, UnoObjective};
use uno_core::data::{Dataset, SyntheticConfig, SyntheticScenes};
use uno_core::packing::PackedSequence;
use uno_core::train::{TrainBatch, UnoTrainee};
use uno_core::trainer::{StepContext, TrainStep};
use uno_core::vae::PixelCodec;
use uno_testing::{assert_close, to_vec};

/// Every trained parameter's gradient (`None` when it got none), in visit order.
struct Grads<'a> {
    grads: &'a GradientsParams,
    out: Vec<(ParamId, Option<Vec<f32>>)>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Grads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if param.val().is_require_grad() {
            let grad = self.grads.get::<B::InnerBackend, D>(param.id).map(to_vec);
            self.out.push((param.id, grad));
        }
    }
}

fn grads_of<B: AutodiffBackend, M: Module<B>>(
    module: &M,
    grads: &GradientsParams,
) -> Vec<(ParamId, Option<Vec<f32>>)> {
    let mut visitor = Grads {
        grads,
        out: Vec::new(),
    };
    module.visit(&mut visitor);
    visitor.out
}

/// The same parameters reached, with gradients within `tol` (relative to the largest).
fn assert_same_grads(
    got: &[(ParamId, Option<Vec<f32>>)],
    want: &[(ParamId, Option<Vec<f32>>)],
    tol: f32,
) -> usize {
    assert_eq!(got.len(), want.len());
    let mut reached = 0;
    for ((id, got), (_, want)) in got.iter().zip(want) {
        match (got, want) {
            (Some(got), Some(want)) => {
                let scale = want.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
                assert_close(got, want, tol * scale, tol);
                reached += 1;
            }
            (None, None) => {}
            _ => panic!(
                "parameter {id}: a gradient checkpointed {}, plain {}",
                got.is_some(),
                want.is_some()
            ),
        }
    }
    reached
}

/// The tiny model (llm2vae given values: BAGEL zero-initialises it, which would cut the
/// flow gradient), three synthetic samples with both supervision splits, their pack.
fn fixture<B: Backend>() -> (Bagel<B>, BagelConfig, PackedSequence, Vec<Tensor<B, 3>>) {
    let set = SyntheticScenes::new(SyntheticConfig {
        len: 3,
        image_size: 16,
        max_shapes: 3,
        seed: 5,
    })
    .unwrap();
    let config = BagelConfig::tiny(set.tokenizer().vocab_size(), set.special_tokens());
    let device = Default::default();
    let mut model = config.init::<B>(&device).unwrap();
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
    let pack = PackedSequence::pack(&samples, &config.packing()).unwrap();
    (model, config, pack, images)
}

fn taped_gradients_match<B: AutodiffBackend>() {
    let (model, config, pack, images) = fixture::<B>();
    let mut objective = config.objective().unwrap();
    objective.loss = uno_core::objectives::UnoLossConfig::new()
        .with_text(1.0)
        .init()
        .unwrap();
    let batch = || UnoBatch {
        pack: &pack,
        images: &images,
        vit_targets: &images,
        noise_seed: 17,
        normalization: LossNormalization::PerPack,
    };
    uno_testing::materialise(&model);
    for model in [model.clone().freeze_for_uno(), model.train_all()] {
        let plain = model.uno_forward(batch(), &PixelCodec, &objective).unwrap();
        let plain_loss = to_vec(plain.loss.total.clone());
        let plain_grads = GradientsParams::from_grads(plain.loss.total.backward(), &model);
        let want = grads_of(&model, &plain_grads);

        let (taped, tape) = model
            .uno_forward_taped(batch(), &PixelCodec, &objective)
            .unwrap();
        assert_close(&to_vec(taped.loss.total.clone()), &plain_loss, 1e-6, 1e-6);
        assert_close(
            &to_vec(taped.hidden.clone()),
            &to_vec(plain.hidden),
            1e-6,
            1e-5,
        );
        let grads = tape.gradients(&model, taped.loss.total).unwrap();
        let reached = assert_same_grads(&grads_of(&model, &grads), &want, 1e-5);
        // Both experts' layers (under train_all), the heads and the embeddings.
        assert!(reached > 20, "{reached} parameters reached");
    }
}

/// The trainee with checkpointing on (every pack: above 0 tokens) returns a loss whose
/// value and gradients are the plain trainee's.
fn trainee_checkpointing_matches<B: AutodiffBackend>() {
    let (model, config, pack, images) = fixture::<B>();
    // The trainee is cloned below: its lazily initialised weights are drawn first.
    uno_testing::materialise(&model);
    let objective: UnoObjective = config.objective().unwrap();
    let batch = || TrainBatch {
        pack: pack.clone(),
        images: images.clone(),
        vit_targets: images.clone(),
        skipped: 0,
    };
    let ctx = StepContext {
        step: 0,
        micro_batch: 0,
        data_position: 0,
        seed: 23,
        step_counts: Vec::new(),
    };
    let plain = UnoTrainee::new(model, objective);
    let taped = plain.clone().with_layer_checkpointing(Some(0));
    let run = |trainee: &UnoTrainee<B>| {
        let out = trainee.forward_step(batch(), &ctx).unwrap();
        let loss = to_vec(out.loss.clone());
        let components: Vec<f32> = out
            .components
            .iter()
            .flat_map(|(_, c)| to_vec(c.clone()))
            .collect();
        let grads = GradientsParams::from_grads(out.loss.backward(), trainee);
        (loss, components, grads_of(trainee, &grads))
    };
    let (loss, components, want) = run(&plain);
    let (got_loss, got_components, got) = run(&taped);
    assert_close(&got_loss, &loss, 1e-6, 1e-6);
    assert_close(&got_components, &components, 1e-6, 1e-6);
    let reached = assert_same_grads(&got, &want, 1e-5);
    assert!(reached > 10, "{reached} parameters reached");
}

fn checkpointing_tests<B: Backend>() {
    taped_gradients_match::<Autodiff<B>>();
    trainee_checkpointing_matches::<Autodiff<B>>();
}

uno_testing::backend_tests!(checkpointing_tests);
