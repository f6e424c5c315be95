//! One optimizer step: frozen parameters, optimizer state, EMA math, global clipping,
//! gradient accumulation, the non-finite guard.

use std::collections::HashSet;

use burn::backend::{Autodiff, Flex};
use burn::module::ParamId;
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use uno_trainer::clip::{CLIP_EPS, clip_global_norm};
use uno_trainer::{BoxError, TrainRng, TrainableParams, Trainer};

use crate::test_config;
use crate::toy::{self, SelfGrads, Toy, ToyBatch};

type Ad = Autodiff<Flex>;

fn data(rows: usize, noise: f32) -> impl FnMut(u64, &mut TrainRng) -> Result<ToyBatch, BoxError> {
    move |pos, rng| Ok(toy::batch(pos * rows as u64, rows, noise, rng))
}

fn frozen_params_bit_identical_trainable_change<B: AutodiffBackend>() {
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let model = toy::toy::<B>(1, &device);
    let (inp0, frozen0, head0) = toy::all(&model);
    let mut trainer = Trainer::new(test_config(dir.path()), model, device).unwrap();
    assert_eq!(trainer.trainable().len(), 4, "inp and head weight + bias");
    let mut data = data(4, 0.05);
    for _ in 0..3 {
        let m = trainer.train_step(&mut data).unwrap();
        assert!(
            !m.skipped && m.loss.is_finite() && m.grad_norm > 0.0,
            "{m:?}"
        );
    }
    assert_eq!(trainer.step(), 3);
    let (inp, frozen, head) = toy::all(trainer.model());
    assert_eq!(frozen, frozen0, "frozen weights must be bit-identical");
    assert_ne!(inp, inp0, "trainable `inp` must change");
    assert_ne!(head, head0, "trainable `head` must change");
    let (_, ema_frozen, ema_head) = toy::all(trainer.ema());
    assert_eq!(ema_frozen, frozen0, "EMA of a frozen weight is the weight");
    assert_ne!(ema_head, head0);
}

fn optimizer_state_only_for_trainable<B: AutodiffBackend>() {
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let model = toy::toy::<B>(2, &device);
    let frozen: HashSet<ParamId> = [
        model.frozen.weight.id,
        model.frozen.bias.as_ref().unwrap().id,
    ]
    .into();
    let trainable: HashSet<ParamId> = [
        model.inp.weight.id,
        model.inp.bias.as_ref().unwrap().id,
        model.head.weight.id,
        model.head.bias.as_ref().unwrap().id,
    ]
    .into();
    let mut trainer = Trainer::new(test_config(dir.path()), model, device).unwrap();
    assert_eq!(
        trainer.optimizer_record().len(),
        0,
        "no state before the first step"
    );
    let mut data = data(4, 0.0);
    trainer.train_step(&mut data).unwrap();
    trainer.train_step(&mut data).unwrap();
    let keys: HashSet<ParamId> = trainer.optimizer_record().keys().copied().collect();
    assert_eq!(
        keys, trainable,
        "Adam state exactly for the trainable params"
    );
    assert!(
        keys.is_disjoint(&frozen),
        "no Adam moments for frozen params"
    );
}

/// `ema = d * ema + (1 - d) * param`, checked against a host computation for two steps.
fn ema_matches_hand_computation<B: AutodiffBackend>() {
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let config = test_config(dir.path())
        .with_overrides(&["schedule.warmup_steps=0", "ema.decay=0.9"])
        .unwrap();
    let model = toy::toy::<B>(3, &device);
    let (inp0, _, head0) = toy::all(&model);
    let mut trainer = Trainer::new(config, model, device).unwrap();
    let mut data = data(4, 0.05);
    let d = 0.9f64;
    let blend = |ema: &[f64], p: &[f32]| -> Vec<f64> {
        ema.iter()
            .zip(p)
            .map(|(e, p)| d * e + (1.0 - d) * f64::from(*p))
            .collect()
    };
    let widen = |v: &[f32]| v.iter().map(|x| f64::from(*x)).collect::<Vec<_>>();
    let (mut e_inp, mut e_head) = (widen(&inp0), widen(&head0));
    for _ in 0..2 {
        trainer.train_step(&mut data).unwrap();
        let (inp, _, head) = toy::all(trainer.model());
        e_inp = blend(&e_inp, &inp);
        e_head = blend(&e_head, &head);
        let (ema_inp, _, ema_head) = toy::all(trainer.ema());
        let narrow = |v: &[f64]| v.iter().map(|x| *x as f32).collect::<Vec<_>>();
        uno_testing::assert_close(&ema_inp, &narrow(&e_inp), 1e-6, 1e-6);
        uno_testing::assert_close(&ema_head, &narrow(&e_head), 1e-6, 1e-6);
        // The EMA lags: it is not the model.
        assert_ne!(ema_head, head);
    }
}

fn register<B: AutodiffBackend, const D: usize>(
    grads: &mut GradientsParams,
    id: ParamId,
    seed: u64,
    shape: [usize; D],
    device: &B::Device,
) -> Vec<f32> {
    let n = shape.iter().product();
    let v: Vec<f32> = toy::values(seed, n).iter().map(|x| x * 4.0).collect();
    let t = Tensor::<B::InnerBackend, D>::from_data(TensorData::new(v.clone(), shape), device);
    grads.register::<B::InnerBackend, D>(id, t);
    v
}

fn grad_of<B: AutodiffBackend, const D: usize>(grads: &GradientsParams, id: ParamId) -> Vec<f32> {
    uno_testing::to_vec(grads.get::<B::InnerBackend, D>(id).unwrap())
}

/// Global clipping: norm over all trainable grads; all scaled by max/(norm+1e-6) when
/// over; untouched (bitwise) when under; frozen grads neither counted nor scaled.
fn global_clipping_scales_all_grads_together<B: AutodiffBackend>() {
    let device: B::Device = Default::default();
    let model: Toy<B> = toy::toy(4, &device);
    let trainable = TrainableParams::of::<B, _>(&model);
    let ids = [
        model.inp.weight.id,
        model.inp.bias.as_ref().unwrap().id,
        model.head.weight.id,
        model.head.bias.as_ref().unwrap().id,
    ];
    let frozen_id = model.frozen.weight.id;
    let make = || {
        let mut g = GradientsParams::new();
        let mut all = Vec::new();
        all.extend(register::<B, 2>(&mut g, ids[0], 1, [3, 4], &device));
        all.extend(register::<B, 1>(&mut g, ids[1], 2, [4], &device));
        all.extend(register::<B, 2>(&mut g, ids[2], 3, [4, 2], &device));
        all.extend(register::<B, 1>(&mut g, ids[3], 4, [2], &device));
        let frozen = register::<B, 2>(&mut g, frozen_id, 5, [4, 4], &device);
        (g, all, frozen)
    };
    let (grads, all, frozen) = make();
    let hand = all
        .iter()
        .map(|x| f64::from(*x).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!(hand > 1.0);

    // Over the limit: everything scaled by the same factor.
    let max = hand / 3.0;
    let (clipped, norm) = clip_global_norm::<B, _>(&model, grads, &trainable, max);
    assert!(
        (norm - hand).abs() <= 1e-5 * hand,
        "norm {norm} vs hand {hand}"
    );
    let coef = max / (hand + CLIP_EPS);
    let mut got = grad_of::<B, 2>(&clipped, ids[0]);
    got.extend(grad_of::<B, 1>(&clipped, ids[1]));
    got.extend(grad_of::<B, 2>(&clipped, ids[2]));
    got.extend(grad_of::<B, 1>(&clipped, ids[3]));
    let want: Vec<f32> = all.iter().map(|x| (f64::from(*x) * coef) as f32).collect();
    uno_testing::assert_close(&got, &want, 1e-6, 1e-5);
    let clipped_norm = got
        .iter()
        .map(|x| f64::from(*x).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!(
        (clipped_norm - max).abs() <= 1e-5 * max,
        "{clipped_norm} vs {max}"
    );
    assert_eq!(
        grad_of::<B, 2>(&clipped, frozen_id),
        frozen,
        "frozen grad untouched"
    );

    // Under the limit: bit-identical.
    let (grads, _, _) = make();
    let (kept, norm) = clip_global_norm::<B, _>(&model, grads, &trainable, hand * 2.0);
    assert!((norm - hand).abs() <= 1e-5 * hand);
    let mut got = grad_of::<B, 2>(&kept, ids[0]);
    got.extend(grad_of::<B, 1>(&kept, ids[1]));
    got.extend(grad_of::<B, 2>(&kept, ids[2]));
    got.extend(grad_of::<B, 1>(&kept, ids[3]));
    assert_eq!(got, all);
}

/// K micro-batches of 2 rows, averaged, equal one step on the 4-row batch.
fn grad_accumulation_equals_full_batch<B: AutodiffBackend>() {
    let run = |k: u32, rows: usize| {
        let dir = tempfile::tempdir().unwrap();
        let device = Default::default();
        let config = test_config(dir.path())
            .with_overrides(&[
                format!("grad_accumulation={k}"),
                "schedule.warmup_steps=0".into(),
                "optimizer.lr=0.001".into(),
            ])
            .unwrap();
        let mut trainer = Trainer::new(config, toy::toy::<B>(5, &device), device).unwrap();
        let mut data = data(rows, 0.0);
        let mut log = Vec::new();
        for _ in 0..3 {
            let m = trainer.train_step(&mut data).unwrap();
            log.push((m.loss, m.grad_norm, m.samples_per_s > 0.0));
        }
        let (inp, _, head) = toy::all(trainer.model());
        assert_eq!(trainer.data_position(), 3 * u64::from(k));
        (log, inp, head)
    };
    let (full_log, full_inp, full_head) = run(1, 4);
    let (acc_log, acc_inp, acc_head) = run(2, 2);
    for ((l1, n1, _), (l2, n2, _)) in full_log.iter().zip(&acc_log) {
        assert!((l1 - l2).abs() <= 1e-6, "loss {l1} vs {l2}");
        assert!(
            (n1 - n2).abs() <= 1e-6 * n1.max(1.0),
            "grad norm {n1} vs {n2}"
        );
    }
    uno_testing::assert_close(&acc_inp, &full_inp, 1e-6, 1e-6);
    uno_testing::assert_close(&acc_head, &full_head, 1e-6, 1e-6);
}

/// A model that hands the trainer the gradients of its loss ([`StepOutput::grads`]) trains
/// like one the trainer differentiates: with 2 averaged micro-batches (the gradients scaled
/// by 1/2 as the loss would be) and with a NaN micro-batch skipping its step.
fn self_computed_gradients_are_scaled_like_the_loss<B: AutodiffBackend>() {
    let run = |self_grads: bool| {
        let dir = tempfile::tempdir().unwrap();
        let device = Default::default();
        let config = test_config(dir.path())
            .with_overrides(&["grad_accumulation=2", "schedule.warmup_steps=0"])
            .unwrap();
        let mut data = |p: u64, rng: &mut TrainRng| -> Result<ToyBatch, BoxError> {
            let mut batch = toy::batch(p * 2, 2, 0.0, rng);
            batch.poison = p == 3;
            Ok(batch)
        };
        let toy = toy::toy::<B>(5, &device);
        let (weights, skipped) = if self_grads {
            let mut trainer = Trainer::new(config, SelfGrads { toy }, device).unwrap();
            let skipped: Vec<bool> = (0..4)
                .map(|_| trainer.train_step(&mut data).unwrap().skipped)
                .collect();
            (toy::all(&trainer.model().toy), skipped)
        } else {
            let mut trainer = Trainer::new(config, toy, device).unwrap();
            let skipped: Vec<bool> = (0..4)
                .map(|_| trainer.train_step(&mut data).unwrap().skipped)
                .collect();
            (toy::all(trainer.model()), skipped)
        };
        (weights, skipped)
    };
    let ((inp, _, head), skipped) = run(false);
    let ((self_inp, _, self_head), self_skipped) = run(true);
    assert_eq!(skipped, [false, true, false, false]);
    assert_eq!(self_skipped, skipped);
    uno_testing::assert_close(&self_inp, &inp, 1e-7, 1e-6);
    uno_testing::assert_close(&self_head, &head, 1e-7, 1e-6);
    assert_ne!(
        inp,
        toy::all(&toy::toy::<B>(5, &Default::default())).0,
        "it trained"
    );
}

/// Token-weighted: micro-batches of 1 and 3 rows, each normalised by the step's 4 rows and
/// summed, give the step of the one 4-row batch; the mean of their means does not.
fn token_weighted_accumulation_equals_full_batch<B: AutodiffBackend>() {
    let run = |k: u32, sizes: &'static [usize], weighted: bool| {
        let dir = tempfile::tempdir().unwrap();
        let device = Default::default();
        let config = test_config(dir.path())
            .with_overrides(&[
                format!("grad_accumulation={k}"),
                "schedule.warmup_steps=0".into(),
                "optimizer.lr=0.01".into(),
            ])
            .unwrap();
        let mut trainer = Trainer::new(config, toy::toy::<B>(5, &device), device).unwrap();
        let n = sizes.len() as u64;
        let mut data = move |pos: u64, rng: &mut TrainRng| -> Result<ToyBatch, BoxError> {
            let j = (pos % n) as usize;
            let first = (pos / n) * 4 + sizes[..j].iter().sum::<usize>() as u64;
            let mut b = toy::batch(first, sizes[j], 0.0, rng);
            b.weighted = weighted;
            Ok(b)
        };
        let losses: Vec<f64> = (0..3)
            .map(|_| trainer.train_step(&mut data).unwrap().loss)
            .collect();
        let (inp, _, head) = toy::all(trainer.model());
        (losses, inp, head)
    };
    let (full_losses, full_inp, full_head) = run(1, &[4], true);
    let (losses, inp, head) = run(2, &[1, 3], true);
    for (a, b) in losses.iter().zip(&full_losses) {
        assert!((a - b).abs() <= 1e-6, "step loss {a} vs {b}");
    }
    uno_testing::assert_close(&inp, &full_inp, 1e-6, 1e-5);
    uno_testing::assert_close(&head, &full_head, 1e-6, 1e-5);
    let (_, mean_inp, _) = run(2, &[1, 3], false);
    let off = mean_inp
        .iter()
        .zip(&full_inp)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(off > 1e-4, "the mean of means is off by {off} only");
}

/// A NaN loss skips the step: no update of weights, EMA or optimizer; the next good batch
/// trains normally.
fn non_finite_loss_skips_the_step<B: AutodiffBackend>() {
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let mut trainer =
        Trainer::new(test_config(dir.path()), toy::toy::<B>(6, &device), device).unwrap();
    let mut data = |pos: u64, rng: &mut TrainRng| -> Result<ToyBatch, BoxError> {
        let mut b = toy::batch(pos * 4, 4, 0.05, rng);
        b.poison = pos == 2;
        Ok(b)
    };
    for _ in 0..2 {
        assert!(!trainer.train_step(&mut data).unwrap().skipped);
    }
    let before = (toy::all(trainer.model()), toy::all(trainer.ema()));
    let m = trainer.train_step(&mut data).unwrap();
    assert!(m.skipped && m.loss.is_nan(), "{m:?}");
    assert_eq!(m.step, 3, "a skipped line names the step it attempted");
    assert_eq!(trainer.step(), 2, "no optimizer step was applied");
    assert_eq!(trainer.data_position(), 3, "the bad batch is consumed");
    assert_eq!((toy::all(trainer.model()), toy::all(trainer.ema())), before);
    let m = trainer.train_step(&mut data).unwrap();
    assert!(!m.skipped);
    assert_eq!(trainer.step(), 3);
    assert_ne!(toy::all(trainer.model()), before.0);
}

autodiff_tests!(
    frozen_params_bit_identical_trainable_change,
    ema_matches_hand_computation,
    global_clipping_scales_all_grads_together,
    grad_accumulation_equals_full_batch,
    token_weighted_accumulation_equals_full_batch,
    non_finite_loss_skips_the_step,
    self_computed_gradients_are_scaled_like_the_loss,
);

#[test]
fn optimizer_record_has_state_only_for_trainable_params() {
    optimizer_state_only_for_trainable::<Ad>();
}

#[test]
fn learning_rate_follows_the_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let mut trainer =
        Trainer::new(test_config(dir.path()), toy::toy::<Ad>(7, &device), device).unwrap();
    let schedule = *trainer.schedule();
    let mut data = data(4, 0.0);
    let lrs: Vec<f64> = (0..8)
        .map(|_| trainer.train_step(&mut data).unwrap().lr)
        .collect();
    let want: Vec<f64> = (0..8).map(|s| schedule.lr_at(s)).collect();
    assert_eq!(lrs, want);
    // Warmup of 2 steps from 0 to 0.05, then cosine down towards 0.001 at step 8.
    assert_eq!(lrs[0], 0.0);
    assert_eq!(lrs[1], 0.025);
    assert_eq!(lrs[2], 0.05);
    assert!(lrs[7] < lrs[3] && lrs[7] > 0.001);
}
