//! The loop around the step: checkpoints, exact resume, interrupted writes, keep-last-N,
//! the skip guard, metrics.jsonl, the summary and the eval hook.

use std::fs;
use std::path::Path;

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::AutodiffBackend;
use uno_trainer::checkpoint::{STATE_FILE, list_checkpoints};
use uno_trainer::{BoxError, TrainError, TrainRng, Trainer};

use crate::test_config;
use crate::toy::{self, ToyBatch};

type Ad = Autodiff<Flex>;

fn noisy(pos: u64, rng: &mut TrainRng) -> Result<ToyBatch, BoxError> {
    Ok(toy::batch(pos * 2, 2, 0.1, rng))
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// 2N steps straight == N steps, checkpoint, a new process-like trainer from a DIFFERENTLY
/// initialised model resuming, N more steps: identical losses and weights, bit for bit.
fn resume_continues_exactly<B: AutodiffBackend>() {
    const N: usize = 3;
    let overrides = ["grad_accumulation=2", "iterations=6"];
    let device: B::Device = Default::default();

    let straight_dir = tempfile::tempdir().unwrap();
    let config = test_config(straight_dir.path())
        .with_overrides(&overrides)
        .unwrap();
    let mut straight = Trainer::new(config, toy::toy::<B>(11, &device), device.clone()).unwrap();
    let straight_losses: Vec<f64> = (0..2 * N)
        .map(|_| straight.train_step(&mut noisy).unwrap().loss)
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path()).with_overrides(&overrides).unwrap();
    let mut first =
        Trainer::new(config.clone(), toy::toy::<B>(11, &device), device.clone()).unwrap();
    let mut losses: Vec<f64> = (0..N)
        .map(|_| first.train_step(&mut noisy).unwrap().loss)
        .collect();
    let saved = first.save_checkpoint().unwrap();
    assert_eq!(saved, dir.path().join("step-000003"));
    drop(first);

    // Fresh model with other weights: everything must come from the checkpoint.
    let mut resumed = Trainer::resume_or_new(config, toy::toy::<B>(99, &device), device).unwrap();
    assert_eq!(resumed.step(), N as u64);
    assert_eq!(resumed.data_position(), 2 * N as u64);
    losses.extend((0..N).map(|_| resumed.train_step(&mut noisy).unwrap().loss));

    assert_eq!(losses, straight_losses, "losses must match bit for bit");
    assert_eq!(toy::all(resumed.model()), toy::all(straight.model()));
    assert_eq!(toy::all(resumed.ema()), toy::all(straight.ema()));
    assert_eq!(resumed.rng_state(), straight.rng_state());
    assert_eq!(resumed.optimizer_record().len(), 4);
}

autodiff_tests!(resume_continues_exactly);

#[test]
fn checkpoint_directory_layout() {
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let mut t = Trainer::new(test_config(dir.path()), toy::toy::<Ad>(1, &device), device).unwrap();
    t.train_step(&mut noisy).unwrap();
    let ckpt = t.save_checkpoint().unwrap();
    assert_eq!(
        names(&ckpt),
        [
            "ema.mpk",
            "model.mpk",
            "optimizer.mpk",
            "trainer_state.json"
        ]
    );
    let state: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(ckpt.join(STATE_FILE)).unwrap()).unwrap();
    assert_eq!(state["step"], 1);
    assert_eq!(state["data_position"], 1);
    assert_eq!(state["rng_state"], t.rng_state());
    assert_eq!(state["files"].as_object().unwrap().len(), 3);
    assert_eq!(
        state["trainable_paths"],
        serde_json::json!(["inp.weight", "inp.bias", "head.weight", "head.bias"])
    );
    // No temporary directory left behind.
    assert_eq!(names(dir.path()), ["step-000001"]);
}

/// A write killed half-way leaves `step-XXXXXX.tmp-<pid>/` with partial files: resume
/// ignores it and loads the previous complete checkpoint. A final-named directory whose
/// files do not match the recorded sizes is refused, never loaded: resume falls back to the
/// newest one that verifies and says which it passed over.
#[test]
fn interrupted_checkpoint_write_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let config = test_config(dir.path());
    let mut t = Trainer::new(config.clone(), toy::toy::<Ad>(2, &device), device).unwrap();
    for _ in 0..2 {
        t.train_step(&mut noisy).unwrap();
    }
    let good = t.save_checkpoint().unwrap();
    let weights_at_2 = toy::all(t.model());
    t.train_step(&mut noisy).unwrap();
    t.train_step(&mut noisy).unwrap();

    // Simulate a kill during the step-4 write: partial files, no state file, tmp name.
    let partial = dir.path().join("step-000004.tmp-4242");
    fs::create_dir(&partial).unwrap();
    fs::write(partial.join("model.mpk"), b"\x85\xa4trun").unwrap();
    fs::write(partial.join("optimizer.mpk"), b"").unwrap();
    // And a kill during a deletion or replacement.
    fs::create_dir(dir.path().join("step-000005.old-4242")).unwrap();

    let resumed =
        Trainer::resume_or_new(config.clone(), toy::toy::<Ad>(50, &device), device).unwrap();
    assert_eq!(resumed.step(), 2);
    assert_eq!(resumed.last_checkpoint(), Some(good.as_path()));
    assert_eq!(toy::all(resumed.model()), weights_at_2);

    // A final-named checkpoint with a truncated file is refused with a clear error.
    let corrupt = dir.path().join("step-000009");
    fs::create_dir(&corrupt).unwrap();
    for name in names(&good) {
        fs::copy(good.join(&name), corrupt.join(&name)).unwrap();
    }
    let model_file = corrupt.join("model.mpk");
    let len = fs::metadata(&model_file).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&model_file)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let resumed = Trainer::resume_or_new(config, toy::toy::<Ad>(50, &device), device).unwrap();
    assert_eq!(resumed.step(), 2, "fell back past the truncated checkpoint");
    assert_eq!(toy::all(resumed.model()), weights_at_2);
    let [(path, reason)] = resumed.rejected_checkpoints() else {
        panic!("{:?}", resumed.rejected_checkpoints());
    };
    assert_eq!(path, &corrupt);
    assert!(
        reason.contains("model.mpk") && reason.contains("bytes"),
        "{reason}"
    );
}

#[test]
fn keep_last_n_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let config = test_config(dir.path())
        .with_overrides(&[
            "iterations=5",
            "checkpoint.every=1",
            "checkpoint.keep_last=2",
        ])
        .unwrap();
    let mut t = Trainer::new(config, toy::toy::<Ad>(3, &device), device).unwrap();
    let summary = t.fit(&mut noisy, None).unwrap();
    let steps: Vec<u64> = list_checkpoints(dir.path())
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(steps, [4, 5]);
    assert_eq!(
        names(dir.path()),
        ["metrics.jsonl", "run.lock", "step-000004", "step-000005"]
    );
    assert_eq!(
        summary.last_checkpoint,
        Some(dir.path().join("step-000005"))
    );
}

/// N non-finite steps in a row: a checkpoint of the last good state, then an error.
#[test]
fn consecutive_skips_abort_after_saving() {
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let config = test_config(dir.path())
        .with_overrides(&["guards.max_consecutive_skips=3", "iterations=20"])
        .unwrap();
    let mut t = Trainer::new(config.clone(), toy::toy::<Ad>(4, &device), device).unwrap();
    let mut poisoned_from_4 = |pos: u64, rng: &mut TrainRng| -> Result<ToyBatch, BoxError> {
        let mut b = toy::batch(pos * 2, 2, 0.1, rng);
        b.poison = pos >= 4 || pos == 1;
        Ok(b)
    };
    let err = t.fit(&mut poisoned_from_4, None).unwrap_err();
    // Positions 0, 2, 3 train (1 is a lone skip), 4, 5, 6 are skipped: abort at step 3.
    let TrainError::TooManySkips {
        skips,
        step,
        checkpoint,
    } = &err
    else {
        panic!("expected TooManySkips, got {err}");
    };
    assert_eq!((*skips, *step), (3, 3));
    assert_eq!(checkpoint, &dir.path().join("step-000003"));
    let last_good = toy::all(t.model());
    let mut resumed = Trainer::resume_or_new(config, toy::toy::<Ad>(77, &device), device).unwrap();
    assert_eq!(toy::all(resumed.model()), last_good);
    assert_eq!(
        resumed.data_position(),
        7,
        "resume does not replay the bad batches"
    );
    // The resumed run gets a fresh skip budget: one bad batch does not abort it.
    let mut one_bad = |pos: u64, rng: &mut TrainRng| -> Result<ToyBatch, BoxError> {
        let mut b = toy::batch(pos * 2, 2, 0.1, rng);
        b.poison = pos == 7;
        Ok(b)
    };
    let summary = resumed.fit(&mut one_bad, None).unwrap();
    assert_eq!(
        (summary.start_step, summary.end_step, summary.skipped),
        (3, 20, 1)
    );

    let lines: Vec<serde_json::Value> = fs::read_to_string(dir.path().join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let skipped: Vec<bool> = lines
        .iter()
        .map(|l| l["skipped"].as_bool().unwrap())
        .collect();
    // The first run's 7 lines, then the resumed run's 18 (its first one skipped).
    assert_eq!(skipped[..7], [false, true, false, false, true, true, true]);
    assert_eq!(lines.len(), 7 + 18);
    assert_eq!(lines[7]["step"], 4);
    assert!(skipped[7] && !skipped[8..].iter().any(|s| *s));
    assert!(lines[1]["loss"].is_null(), "a NaN loss is logged as null");
}

/// Every step writes a metrics line with all fields; the loss goes down on the toy; the
/// summary and the eval hook.
#[test]
fn fit_writes_metrics_summary_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let config = test_config(dir.path())
        .with_overrides(&[
            "iterations=30",
            "optimizer.lr=0.02",
            "schedule.warmup_steps=0",
            "metrics.summary_window=5",
            "metrics.eval_every=10",
        ])
        .unwrap();
    let mut t = Trainer::new(config, toy::toy::<Ad>(5, &device), device).unwrap();
    let mut evals = Vec::new();
    let mut hook =
        |step: u64, _m: &toy::Toy<Ad>, _e: &toy::Toy<Ad>| -> Result<Vec<(String, f64)>, BoxError> {
            evals.push(step);
            Ok(vec![("score".into(), step as f64)])
        };
    let summary = t.fit(&mut noisy, Some(&mut hook)).unwrap();
    assert_eq!(evals, [10, 20, 30]);
    assert_eq!(
        (summary.start_step, summary.end_step, summary.skipped),
        (0, 30, 0)
    );
    let (first, last) = (
        summary.first_window_loss.unwrap(),
        summary.last_window_loss.unwrap(),
    );
    assert!(last < first * 0.8, "loss should go down: {first} -> {last}");
    assert!(summary.wall_time_s > 0.0 && summary.tokens_per_s > 0.0);
    assert!(summary.to_string().contains("0 -> 30"), "{summary}");

    let text = fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 33, "30 steps + 3 evals");
    let steps: Vec<&serde_json::Value> = lines.iter().filter(|l| l.get("eval").is_none()).collect();
    for (i, l) in steps.iter().enumerate() {
        assert_eq!(l["step"], i as u64 + 1);
        for key in [
            "lr",
            "loss",
            "grad_norm",
            "tokens_per_s",
            "samples_per_s",
            "step_time_s",
        ] {
            assert!(l[key].as_f64().is_some(), "line {i} lacks {key}: {l}");
        }
        assert_eq!(l["skipped"], false);
        assert!(
            l["components"]["mse"].as_f64().is_some() && l["components"]["l1"].as_f64().is_some()
        );
        // The typed form parses back.
        let typed: uno_trainer::StepMetrics = serde_json::from_value((*l).clone()).unwrap();
        assert_eq!(typed.step, i as u64 + 1);
    }
    let evals: Vec<&serde_json::Value> = lines.iter().filter(|l| l.get("eval").is_some()).collect();
    assert_eq!(evals[1]["eval"]["score"], 20.0);
    assert_eq!(evals[1]["step"], 20);
    // Finished: one final checkpoint.
    assert_eq!(
        names(dir.path()),
        ["metrics.jsonl", "run.lock", "step-000030"]
    );
}
