//! Run safety through `train::run` and the tiny BAGEL (issue #14): nothing written before
//! everything is checked, never over a model folder no run wrote, one run per folder,
//! resume refuses changed settings, NaN batches skipped and logged, an exploding learning
//! rate stopped, and SIGTERM leaving a checkpoint whose resumed run equals an
//! uninterrupted one byte for byte.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use uno_core::checkpoint::SaveDtype;
use uno_core::data::SyntheticScenes;
use uno_core::train::{
    BatchFill, ModelSource, PackedBatches, RunConfig, RunError, RunSpec, TrainBatch, TrainData,
    UnoTrainee, run,
};
use uno_core::trainer::{BoxError, DataSource, RunLock, TrainError, TrainRng, Trainer};

use super::{B, batches, config, model_folder, run_dir, setup, weights};

/// The embedded tiny run, small and quiet, writing into `dir`.
pub fn spec(dir: &Path, iterations: u64, overrides: &[&str]) -> RunSpec {
    let mut all = vec![
        format!("iterations={iterations}"),
        format!("output_dir=\"{}\"", dir.display()),
        "metrics.progress=false".into(),
        "metrics.eval_every=0".into(),
        "checkpoint.every=2".into(),
        "data.batch.samples=2".into(),
        "schedule.warmup_steps=1".into(),
    ];
    all.extend(overrides.iter().map(|s| s.to_string()));
    RunSpec {
        config: RunConfig::tiny().with_overrides(&all).unwrap(),
        model: ModelSource::Tiny,
        data: TrainData::Synthetic,
        resume: false,
        allow_config_change: false,
        stop: None,
    }
}

/// Every file under `dir` (recursively) with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.insert(path, bytes);
            }
        }
    }
    out
}

/// Invalid settings and inputs fail before the output folder exists; a BAGEL folder no run
/// wrote is never written into (not even a lock file); a locked folder is refused with the
/// holder's PID before anything is written.
#[test]
fn run_checks_everything_before_writing_anything() {
    let device = Default::default();
    let out = run_dir("safety-invalid");
    // A setting that parses and validates, but not against the model (4 metaqueries).
    let err = run::<B>(spec(&out, 2, &["model.metaqueries=5"]), &device).unwrap_err();
    assert!(matches!(err, RunError::MetaqueryMismatch { .. }), "{err}");
    assert!(!out.exists(), "an invalid run created {}", out.display());
    // Missing data files.
    let mut missing = spec(&out, 2, &[]);
    missing.data = TrainData::Manifest {
        manifest: out.with_extension("missing.jsonl"),
        tokenizer: out.with_extension("missing-tokenizer.json"),
        eval: None,
    };
    let err = run::<B>(missing, &device).unwrap_err();
    assert!(err.to_string().contains("missing-tokenizer.json"), "{err}");
    assert!(!out.exists());

    // A release-like folder: configs and weights, no run record.
    let (release, _) = model_folder("safety-release", 6);
    let before = snapshot(&release);
    for source in [ModelSource::Folder(release.clone()), ModelSource::Tiny] {
        let mut into_release = spec(&release, 2, &[]);
        into_release.model = source;
        into_release.resume = true;
        let err = run::<B>(into_release, &device).unwrap_err();
        assert!(
            matches!(&err, RunError::ForeignFolder { dir, found } if dir == &release && found.contains("llm_config.json")),
            "{err}"
        );
    }
    assert_eq!(snapshot(&release), before, "the release folder was touched");

    // A folder another run holds.
    let locked = run_dir("safety-locked");
    let lock = RunLock::acquire(&locked).unwrap();
    let err = run::<B>(spec(&locked, 2, &[]), &device).unwrap_err();
    let pid = std::process::id();
    assert!(
        matches!(&err, RunError::Trainer(TrainError::Locked { holder: Some(h), .. }) if *h == pid),
        "{err}"
    );
    assert!(err.to_string().contains(&format!("process {pid}")), "{err}");
    let names: Vec<_> = std::fs::read_dir(&locked)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["run.lock"], "nothing but the holder's lock file");
    drop(lock);
    for dir in [release, locked] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// A resume with settings that break exactness (seed, batch size) is refused, listing
/// them, with the folder untouched; an invalid setting is refused before anything is
/// written; `allow_config_change` continues and records the new settings.
#[test]
fn resume_refuses_changed_settings_unless_allowed() {
    let device = Default::default();
    let dir = run_dir("safety-changed");
    run::<B>(spec(&dir, 2, &[]), &device).unwrap();
    let recorded = std::fs::read_to_string(dir.join("run.toml")).unwrap();
    assert_eq!(
        RunConfig::from_toml_str(&recorded, "run.toml").unwrap(),
        spec(&dir, 2, &[]).config,
        "run.toml holds the whole resolved config"
    );
    let before = snapshot(&dir);

    let mut changed = spec(&dir, 2, &["seed=1", "data.batch.samples=3"]);
    changed.resume = true;
    let err = run::<B>(changed.clone(), &device).unwrap_err();
    let RunError::ConfigChanged { changes, .. } = &err else {
        panic!("expected ConfigChanged, got {err}");
    };
    assert_eq!(changes, &["data.batch.samples: 2 -> 3", "seed: 0 -> 1"]);
    assert!(err.to_string().contains("allow-config-change"), "{err}");

    let mut invalid = spec(&dir, 2, &[]);
    invalid.config.loss.caption = f64::NAN;
    invalid.resume = true;
    let err = run::<B>(invalid, &device).unwrap_err();
    assert!(err.to_string().contains("loss.caption"), "{err}");
    assert_eq!(
        snapshot(&dir),
        before,
        "a refused resume wrote into the run"
    );

    changed.allow_config_change = true;
    changed.config.trainer.iterations = 3;
    changed.config = changed
        .config
        .with_overrides(&["schedule.kind=constant"])
        .unwrap();
    let report = run::<B>(changed, &device).unwrap();
    assert_eq!((report.summary.start_step, report.summary.end_step), (2, 3));
    let recorded = std::fs::read_to_string(dir.join("run.toml")).unwrap();
    let recorded = RunConfig::from_toml_str(&recorded, "run.toml").unwrap();
    assert_eq!(
        (recorded.trainer.seed, recorded.data.batch),
        (1, BatchFill::Samples(3))
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The tiny BAGEL's training data with NaN pixels at some positions.
struct Poisoned {
    inner: PackedBatches<SyntheticScenes, B>,
    bad: Vec<u64>,
}

impl DataSource for Poisoned {
    type Batch = TrainBatch<B>;

    fn batch(&mut self, position: u64, rng: &mut TrainRng) -> Result<TrainBatch<B>, BoxError> {
        let mut batch = self.inner.batch(position, rng)?;
        if self.bad.contains(&position) {
            for image in &mut batch.images {
                *image = image.clone().mul_scalar(f32::NAN);
            }
        }
        Ok(batch)
    }

    fn sample_ids(&self, position: u64) -> Vec<String> {
        self.inner.sample_ids(position)
    }
}

/// NaN pixels reach the trainer's guard (the loss no longer errors on them): the step is
/// skipped and logged with its sample ids; two in a row abort with a checkpoint of the last
/// good state, which a resume continues.
#[test]
fn nan_pixels_are_skipped_then_abort_with_the_last_good_state() {
    let dir = run_dir("safety-nan");
    let (data, model_config, model) = setup(7);
    let objective = model_config.objective().unwrap();
    let settings = [
        "guards.max_consecutive_skips=2",
        "checkpoint.every=0",
        "schedule.warmup_steps=1",
    ];
    let mut trainer = Trainer::new(
        config(&dir, 10, &settings),
        UnoTrainee::new(model, objective.clone()),
        Default::default(),
    )
    .unwrap();
    let mut poisoned = Poisoned {
        inner: batches(data.clone(), &model_config),
        bad: vec![1, 3, 4],
    };
    let err = trainer.fit(&mut poisoned, None).unwrap_err();
    let TrainError::TooManySkips {
        skips,
        step,
        checkpoint,
    } = &err
    else {
        panic!("expected TooManySkips, got {err}");
    };
    assert_eq!((*skips, *step), (2, 2));
    assert_eq!(checkpoint, &dir.join("step-000002"));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let skipped: Vec<bool> = lines.iter().map(|l| l["skipped"] == true).collect();
    assert_eq!(skipped, [false, true, false, true, true]);
    // Batch size 4: position 1 holds items 4 to 7.
    assert_eq!(
        lines[1]["sample_ids"],
        serde_json::json!(["item 4", "item 5", "item 6", "item 7"])
    );
    assert_eq!(
        lines[1]["skip_reason"],
        "non-finite loss at data position 1"
    );
    let last_good = weights(&trainer.model().model);
    drop(trainer);
    let resumed = Trainer::resume_or_new(
        config(&dir, 10, &settings),
        UnoTrainee::new(setup(8).2, objective),
        Default::default(),
    )
    .unwrap();
    assert_eq!((resumed.step(), resumed.data_position()), (2, 5));
    assert!(weights(&resumed.model().model) == last_good);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `optimizer.lr = 1e3` explodes the tiny model's loss from step 3 (to ~1e11): the run
/// stops once the running level has settled, naming the setting, without a final model.
#[test]
fn an_exploding_learning_rate_is_stopped() {
    let device = Default::default();
    let dir = run_dir("safety-diverge");
    let s = spec(
        &dir,
        40,
        &[
            "optimizer.lr=1e3",
            "schedule.warmup_steps=20",
            "data.batch.samples=8",
            "checkpoint.every=0",
        ],
    );
    let err = run::<B>(s, &device).unwrap_err();
    let RunError::Trainer(TrainError::Diverged {
        step, level, best, ..
    }) = &err
    else {
        panic!("expected Diverged, got {err}");
    };
    assert_eq!(*step, 10, "caught when the running level settles");
    assert!(*level > 1e6 * best, "{err}");
    assert!(err.to_string().contains("optimizer.lr"), "{err}");
    assert!(!dir.join("model.safetensors").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A real SIGTERM mid-run: the run finishes its step, writes a checkpoint and returns
/// `Interrupted`; resumed, it ends with model and EMA files identical, byte for byte, to
/// an uninterrupted run's.
#[test]
fn sigterm_leaves_a_checkpoint_that_resumes_exactly() {
    use uno_core::trainer::install_stop_signals;

    let device = Default::default();
    let (straight, split) = (run_dir("safety-straight"), run_dir("safety-sigterm"));
    // Both runs start from one folder's weights.
    let (source, _) = model_folder("safety-sigterm-source", 12);
    let settings = ["checkpoint.every=0"];
    let spec = |dir: &Path| RunSpec {
        model: ModelSource::Folder(source.clone()),
        ..spec(dir, 8, &settings)
    };
    run::<B>(spec(&straight), &device).unwrap();

    let mut interrupted = spec(&split);
    interrupted.stop = Some(install_stop_signals().unwrap());
    let metrics = split.join("metrics.jsonl");
    let watcher = std::thread::spawn(move || {
        // Signal once two steps are logged, as a scheduler would at any moment.
        let lines = || std::fs::read_to_string(&metrics).map_or(0, |t| t.lines().count());
        while lines() < 2 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let status = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    });
    let err = run::<B>(interrupted, &device).unwrap_err();
    watcher.join().unwrap();
    let RunError::Trainer(TrainError::Interrupted { step, checkpoint }) = &err else {
        panic!("expected Interrupted, got {err}");
    };
    assert!((2..8).contains(step), "{err}");
    assert_eq!(checkpoint, &split.join(format!("step-{step:06}")));
    assert!(!split.join("model.safetensors").exists());

    let mut resume = spec(&split);
    resume.resume = true;
    let report = run::<B>(resume, &device).unwrap();
    assert_eq!(
        (report.summary.start_step, report.summary.end_step),
        (*step, 8)
    );
    for file in ["model.safetensors", "ema.safetensors"] {
        let (a, b) = (
            std::fs::read(straight.join(file)).unwrap(),
            std::fs::read(split.join(file)).unwrap(),
        );
        assert!(
            a == b,
            "{file}: the resumed run differs from an uninterrupted one"
        );
    }
    let steps: Vec<u64> = std::fs::read_to_string(split.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, (1..=8).collect::<Vec<_>>(), "each step logged once");
    for dir in [straight, split, source] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// A folder whose weights are NaN (a diverged run's) generates no PNG: the error names the
/// folder, the prompt and the seed.
#[test]
fn generate_refuses_to_write_images_from_nan_weights() {
    use uno_core::generate::{GenerateError, GridSpec, SamplerConfig, sample_grid};

    let dir = run_dir("safety-nan-weights");
    std::fs::create_dir_all(&dir).unwrap();
    let (_, model_config, model) = setup(10);
    model_config.save_folder(&dir).unwrap();
    let weights = dir.join("ema.safetensors");
    model.save_safetensors(&weights, SaveDtype::F32).unwrap();
    // Every f32 of the data section becomes a NaN (the header is 8 bytes of length, then
    // JSON).
    let mut bytes = std::fs::read(&weights).unwrap();
    let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    for value in bytes[header..].chunks_exact_mut(4) {
        value.copy_from_slice(&f32::NAN.to_le_bytes());
    }
    std::fs::write(&weights, bytes).unwrap();
    let grid = GridSpec {
        model_dir: dir.clone(),
        tokenizer: None,
        prompts: vec!["a red circle".into()],
        seeds: vec![3],
        size: 16,
        source: None,
        sampler: SamplerConfig {
            steps: 2,
            ..SamplerConfig::default()
        },
        caption: None,
        out: None,
    };
    let err = sample_grid::<uno_core::backend::Flex>(&grid, &Default::default()).unwrap_err();
    assert!(
        matches!(&err, GenerateError::NonFinite { model_dir, prompt, seed: 3, count } if model_dir == &dir && prompt == "a red circle" && *count > 0),
        "{err}"
    );
    assert!(!dir.join("samples.png").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// What `inspect_checkpoint` checks (and fails on): weights whose shapes disagree with the
/// folder's configs, read from the headers only.
#[test]
fn weights_that_disagree_with_the_configs_are_listed() {
    use uno_core::bagel::{Bagel, BagelConfig};
    use uno_core::checkpoint::WeightReader;

    let (dir, model_config) = model_folder("safety-inspect", 11);
    let reader = WeightReader::open(dir.join("ema.safetensors")).unwrap();
    let device = Default::default();
    let described = |dir: &Path| -> Bagel<B> {
        BagelConfig::from_folder(dir)
            .unwrap()
            .init::<B>(&device)
            .unwrap()
    };
    assert_eq!(
        described(&dir).weight_mismatches(&reader),
        Vec::<String>::new()
    );
    // The configs edited to a wider MLP: every MLP weight now disagrees.
    let mut wider = model_config.clone();
    wider.llm.intermediate_size *= 2;
    wider.save_folder(&dir).unwrap();
    let problems = described(&dir).weight_mismatches(&reader);
    assert_eq!(
        problems.len(),
        3 * 2 * wider.llm.num_hidden_layers,
        "{problems:#?}"
    );
    assert!(
        problems[0].contains("mlp") && problems[0].contains("in the config"),
        "{problems:#?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A same-size byte flip in the newest checkpoint: the resume passes it over (and says so
/// in the report), continues from the previous one, and ends byte for byte where the
/// uninterrupted run ended. When no checkpoint verifies, the resume is refused and the
/// folder is left as it was.
#[test]
fn a_corrupt_checkpoint_is_passed_over_and_the_run_still_ends_exactly() {
    let device = Default::default();
    let dir = run_dir("safety-flip");
    run::<B>(spec(&dir, 4, &[]), &device).unwrap();
    let straight = std::fs::read(dir.join("model.safetensors")).unwrap();
    let flip = |path: PathBuf| {
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
    };
    flip(dir.join("step-000004").join("optimizer.mpk"));
    let mut resume = spec(&dir, 4, &[]);
    resume.resume = true;
    let report = run::<B>(resume.clone(), &device).unwrap();
    let [(path, reason)] = report.rejected_checkpoints.as_slice() else {
        panic!("{:?}", report.rejected_checkpoints);
    };
    assert_eq!(path, &dir.join("step-000004"));
    assert!(
        reason.contains("optimizer.mpk") && reason.contains("checksum"),
        "{reason}"
    );
    assert_eq!((report.summary.start_step, report.summary.end_step), (2, 4));
    assert!(
        std::fs::read(dir.join("model.safetensors")).unwrap() == straight,
        "the run resumed from step 2 differs from the uninterrupted one"
    );
    // The corrupt one was set aside (kept, never resumed or counted), the new one written.
    assert!(dir.join("step-000004.rejected").is_dir());
    let steps: Vec<u64> = uno_core::trainer::checkpoint::list_checkpoints(&dir)
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(steps, [2, 4]);

    for step in ["step-000002", "step-000004"] {
        flip(dir.join(step).join("ema.safetensors"));
    }
    let before = snapshot(&dir);
    let err = run::<B>(resume, &device).unwrap_err();
    assert!(
        matches!(&err, RunError::Trainer(TrainError::NoUsableCheckpoint { reasons, .. }) if reasons.len() == 2),
        "{err}"
    );
    assert_eq!(
        snapshot(&dir),
        before,
        "a refused resume wrote into the run"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
