//! Per-layer activation checkpointing of the UNO forward (`Bagel::uno_forward_taped`,
//! `LayerTape::gradients`, `UnoTrainee::with_layer_checkpointing`): the same losses and the
//! same gradient of every trained parameter as the plain forward's backward, with UNO's
//! frozen understanding expert and with every weight trained; and the trainee hands the
//! trainer those gradients (`StepOutput::grads`).

use burn::backend::Autodiff;
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use uno_core::bagel::{LossNormalization, UnoBatch, UnoObjective};
use uno_core::train::{TrainBatch, UnoTrainee};
use uno_core::trainer::{StepContext, TrainStep};
use uno_core::vae::PixelCodec;
use uno_testing::{assert_close, assert_same_grads, to_vec, trained_grads};

use crate::scenes::{Scenes, gradient_scenes};

fn taped_gradients_match<B: AutodiffBackend>() {
    let Scenes {
        model,
        config,
        pack,
        images,
        ..
    } = gradient_scenes::<B>();
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
        let want = trained_grads(&model, &plain_grads);

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
        let reached = assert_same_grads(&trained_grads(&model, &grads), &want, 1e-5);
        // Both experts' layers (under train_all), the heads and the embeddings.
        assert!(reached > 20, "{reached} parameters reached");
    }
}

/// The trainee with checkpointing on (every pack: above 0 tokens) returns the plain
/// trainee's loss and components, and as its own gradients the plain loss's.
fn trainee_checkpointing_matches<B: AutodiffBackend>() {
    let Scenes {
        model,
        config,
        pack,
        images,
        ..
    } = gradient_scenes::<B>();
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
        let own = out.grads.is_some();
        let grads = match out.grads {
            Some(grads) => grads,
            None => GradientsParams::from_grads(out.loss.backward(), trainee),
        };
        (loss, components, own, trained_grads(trainee, &grads))
    };
    let (loss, components, plain_own, want) = run(&plain);
    let (got_loss, got_components, taped_own, got) = run(&taped);
    assert_eq!((plain_own, taped_own), (false, true), "who differentiated");
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
