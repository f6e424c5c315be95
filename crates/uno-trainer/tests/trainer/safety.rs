//! Run safety on the toy model: the folder lock, skipped steps logged with their sample
//! ids, divergence, checksums with fallback, leftovers of killed writes, metrics cut back on
//! resume, and a stop request that resumes exactly.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::backend::{Autodiff, Flex};
use uno_trainer::checkpoint::list_checkpoints;
use uno_trainer::{BoxError, DataSource, RunLock, StepMetrics, TrainError, TrainRng, Trainer};

use crate::test_config;
use crate::toy::{self, ToyBatch};

type Ad = Autodiff<Flex>;

/// The checkpoint tests' data, as a data source that names its samples (`sample-<i>`) and
/// poisons the positions in `poison` (NaN loss); `stop` is set when `stop_at` is read.
struct ToyData {
    poison: Vec<u64>,
    scale_from: Option<(u64, f32)>,
    stop: Option<(u64, Arc<AtomicBool>)>,
}

impl ToyData {
    fn clean() -> Self {
        Self {
            poison: Vec::new(),
            scale_from: None,
            stop: None,
        }
    }
}

impl DataSource for ToyData {
    type Batch = ToyBatch;

    fn batch(&mut self, position: u64, rng: &mut TrainRng) -> Result<ToyBatch, BoxError> {
        let mut b = toy::batch(position * 2, 2, 0.1, rng);
        b.poison = self.poison.contains(&position);
        if let Some((from, scale)) = self.scale_from
            && position >= from
        {
            b.y.iter_mut().for_each(|y| *y *= scale);
        }
        if let Some((at, flag)) = &self.stop
            && *at == position
        {
            flag.store(true, Ordering::SeqCst);
        }
        Ok(b)
    }

    fn sample_ids(&self, position: u64) -> Vec<String> {
        vec![
            format!("sample-{}", position * 2),
            format!("sample-{}", position * 2 + 1),
        ]
    }
}

fn lines(dir: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A second run on a locked folder is refused, naming the holder's PID; the lock goes with
/// its holder.
#[test]
fn a_locked_folder_refuses_a_second_run() {
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let lock = RunLock::acquire(dir.path()).unwrap();
    let mut t = Trainer::new(test_config(dir.path()), toy::toy::<Ad>(1, &device), device).unwrap();
    let err = t.fit(&mut ToyData::clean(), None).unwrap_err();
    let pid = std::process::id();
    assert!(
        matches!(&err, TrainError::Locked { dir: d, holder: Some(h) } if d == dir.path() && *h == pid),
        "{err}"
    );
    assert!(err.to_string().contains(&format!("process {pid}")), "{err}");
    assert!(
        list_checkpoints(dir.path()).unwrap().is_empty(),
        "nothing trained"
    );
    drop(lock);
    let summary = t.fit(&mut ToyData::clean(), None).unwrap();
    assert_eq!(summary.end_step, 8);
}

/// Environment variable naming the folder [`lock_holder_child`] locks.
const LOCK_CHILD_DIR: &str = "UNO_TEST_LOCK_CHILD_DIR";

/// Not a test on its own (ignored): the child process of
/// [`a_lock_held_by_another_process_refuses_and_dies_with_it`]. Locks the folder, says so
/// with a `ready` file, and holds the lock until a `release` file appears (or 30 s).
#[test]
#[ignore = "child process of a_lock_held_by_another_process_refuses_and_dies_with_it"]
fn lock_holder_child() {
    let Ok(dir) = std::env::var(LOCK_CHILD_DIR) else {
        return;
    };
    let dir = Path::new(&dir);
    let _lock = RunLock::acquire(dir).unwrap();
    fs::write(dir.join("ready"), b"").unwrap();
    let started = std::time::Instant::now();
    while !dir.join("release").exists() && started.elapsed().as_secs() < 30 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Two processes: while one holds the folder, the other is refused with the holder's PID;
/// once the holder is killed (`kill -9`, no chance to clean up) the folder is free.
#[test]
fn a_lock_held_by_another_process_refuses_and_dies_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "safety::lock_holder_child",
            "--ignored",
            "--quiet",
        ])
        .env(LOCK_CHILD_DIR, dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !dir.path().join("ready").exists() {
        assert!(started.elapsed().as_secs() < 20, "the child never locked");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let err = RunLock::acquire(dir.path()).unwrap_err();
    let pid = child.id();
    assert!(
        matches!(&err, TrainError::Locked { holder: Some(h), .. } if *h == pid),
        "{err}"
    );
    assert!(err.to_string().contains(&format!("process {pid}")), "{err}");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let lock = RunLock::acquire(dir.path()).unwrap();
    assert_eq!(lock.dir(), dir.path());
    assert_eq!(
        fs::read_to_string(dir.path().join("run.lock"))
            .unwrap()
            .trim(),
        std::process::id().to_string(),
        "the new holder's PID"
    );
}

/// Non-finite steps are skipped and logged with their reason and the ids of the samples
/// read; N in a row abort with a checkpoint of the last good state.
#[test]
fn nan_steps_are_logged_with_sample_ids_then_abort() {
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let config = test_config(dir.path())
        .with_overrides(&["guards.max_consecutive_skips=2", "grad_accumulation=2"])
        .unwrap();
    let mut t = Trainer::new(config, toy::toy::<Ad>(4, &device), device).unwrap();
    // Steps read positions (0,1), (2,3), (4,5), ...: step 2's second micro-batch and all
    // of steps 3 and 4 are bad.
    let mut data = ToyData {
        poison: vec![3, 4, 5, 6, 7],
        ..ToyData::clean()
    };
    let err = t.fit(&mut data, None).unwrap_err();
    let TrainError::TooManySkips {
        skips,
        step,
        checkpoint,
    } = &err
    else {
        panic!("expected TooManySkips, got {err}");
    };
    assert_eq!((*skips, *step), (2, 1));
    assert_eq!(checkpoint, &dir.path().join("step-000001"));
    let l = lines(dir.path());
    assert_eq!(l.len(), 3);
    let typed: Vec<StepMetrics> = l
        .iter()
        .map(|v| serde_json::from_value(v.clone()).unwrap())
        .collect();
    assert!(!typed[0].skipped && typed[0].sample_ids.is_empty());
    assert_eq!(typed[1].data_position, Some(2));
    assert_eq!(
        typed[1].skip_reason.as_deref(),
        Some("non-finite loss at data position 3")
    );
    assert_eq!(
        typed[1].sample_ids,
        ["sample-4", "sample-5", "sample-6", "sample-7"]
    );
    // Step 3 stopped at its first micro-batch (position 4): only what was read is named.
    assert_eq!(typed[2].sample_ids, ["sample-8", "sample-9"]);
    assert_eq!(typed[2].data_position, Some(4));
}

/// A loss that explodes and stays up stops the run with a clear message, without writing
/// the diverged weights as a checkpoint.
#[test]
fn a_diverging_loss_stops_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let config = test_config(dir.path())
        .with_overrides(&[
            "iterations=60",
            "checkpoint.every=10",
            "guards.divergence_window=10",
        ])
        .unwrap();
    let mut t = Trainer::new(config.clone(), toy::toy::<Ad>(6, &device), device).unwrap();
    // From position 25 the targets are 1000x larger: the loss jumps ~1e5-fold and stays.
    let mut data = ToyData {
        scale_from: Some((25, 1000.0)),
        ..ToyData::clean()
    };
    let err = t.fit(&mut data, None).unwrap_err();
    let TrainError::Diverged {
        step,
        level,
        best,
        factor,
        last_checkpoint,
    } = &err
    else {
        panic!("expected Diverged, got {err}");
    };
    assert_eq!(*step, 26, "caught at the first exploded step");
    assert!(*level > 100.0 * best && *factor == 100.0, "{err}");
    assert_eq!(
        last_checkpoint.as_deref(),
        Some(&*dir.path().join("step-000020"))
    );
    let msg = err.to_string();
    assert!(
        msg.contains("diverged at step 26") && msg.contains("guards.divergence_factor"),
        "{msg}"
    );
    let steps: Vec<u64> = list_checkpoints(dir.path())
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(steps, [10, 20]);

    // The same data with the check off trains to the end.
    let other = tempfile::tempdir().unwrap();
    let mut off = config
        .with_overrides(&["guards.divergence_factor=0"])
        .unwrap();
    off.output_dir = other.path().to_path_buf();
    let mut t = Trainer::new(off, toy::toy::<Ad>(6, &device), device).unwrap();
    let mut data = ToyData {
        scale_from: Some((25, 1000.0)),
        ..ToyData::clean()
    };
    assert_eq!(t.fit(&mut data, None).unwrap().end_step, 60);
}

/// One flipped byte (same size) in the newest checkpoint's optimizer state: resume passes
/// it over for the previous checkpoint and says why; when none verifies, it refuses.
#[test]
fn a_flipped_byte_is_detected_and_resume_falls_back() {
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let config = test_config(dir.path())
        .with_overrides(&["iterations=4", "checkpoint.every=2"])
        .unwrap();
    let mut t = Trainer::new(config.clone(), toy::toy::<Ad>(7, &device), device).unwrap();
    let mut data = ToyData::clean();
    for _ in 0..2 {
        t.train_step(&mut data).unwrap();
    }
    t.save_checkpoint().unwrap();
    let at_2 = toy::all(t.model());
    for _ in 0..2 {
        t.train_step(&mut data).unwrap();
    }
    let newest = t.save_checkpoint().unwrap();
    drop(t);

    for (file, offset) in [("optimizer.mpk", 40usize), ("model.mpk", 100)] {
        let path = newest.join(file);
        let mut bytes = fs::read(&path).unwrap();
        let original = bytes.clone();
        bytes[offset] ^= 0x10;
        fs::write(&path, &bytes).unwrap();
        let resumed =
            Trainer::resume_or_new(config.clone(), toy::toy::<Ad>(70, &device), device).unwrap();
        assert_eq!(resumed.step(), 2, "{file}: fell back to step 2");
        assert_eq!(toy::all(resumed.model()), at_2);
        let [(path, reason)] = resumed.rejected_checkpoints() else {
            panic!("{:?}", resumed.rejected_checkpoints());
        };
        assert_eq!(path, &newest);
        assert!(
            reason.contains(file) && reason.contains("checksum"),
            "{reason}"
        );
        fs::write(newest.join(file), original).unwrap();
    }
    // A flipped digit in the state itself: the step-4 state claims another data position.
    let state_path = newest.join("trainer_state.json");
    let original = fs::read_to_string(&state_path).unwrap();
    let flipped = original.replace("\"data_position\": 4", "\"data_position\": 5");
    assert_ne!(flipped, original);
    fs::write(&state_path, flipped).unwrap();
    let resumed =
        Trainer::resume_or_new(config.clone(), toy::toy::<Ad>(70, &device), device).unwrap();
    assert_eq!(resumed.step(), 2);
    let [(_, reason)] = resumed.rejected_checkpoints() else {
        panic!("{:?}", resumed.rejected_checkpoints());
    };
    assert!(
        reason.contains("trainer_state.json has checksum"),
        "{reason}"
    );
    fs::write(&state_path, original).unwrap();

    // Intact again: the newest loads.
    let resumed =
        Trainer::resume_or_new(config.clone(), toy::toy::<Ad>(70, &device), device).unwrap();
    assert_eq!(resumed.step(), 4);
    assert!(resumed.rejected_checkpoints().is_empty());

    // Every checkpoint corrupt: an error listing them, not a silent fresh start.
    for (_, ckpt) in list_checkpoints(dir.path()).unwrap() {
        let path = ckpt.join("ema.mpk");
        let mut bytes = fs::read(&path).unwrap();
        bytes[10] ^= 1;
        fs::write(&path, bytes).unwrap();
    }
    let err = match Trainer::resume_or_new(config, toy::toy::<Ad>(70, &device), device) {
        Err(e) => e,
        Ok(_) => panic!("no checkpoint verifies"),
    };
    let msg = err.to_string();
    assert!(
        matches!(&err, TrainError::NoUsableCheckpoint { reasons, .. } if reasons.len() == 2),
        "{msg}"
    );
    assert!(
        msg.contains("step-000004") && msg.contains("step-000002") && msg.contains("ema.mpk"),
        "{msg}"
    );
}

/// Leftovers of killed writes whose writer is dead are removed when a run starts; those of
/// a live process stay; a folder holding only leftovers is not a run with checkpoints.
#[test]
fn stale_leftovers_are_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    // A PID that was alive and is not any more.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let live = std::process::id();
    let stale = [
        format!("step-000004.tmp-{dead}"),
        format!("step-000002.old-{dead}"),
    ];
    for name in &stale {
        fs::create_dir(dir.path().join(name)).unwrap();
        fs::write(dir.path().join(name).join("model.mpk"), b"partial").unwrap();
    }
    fs::write(
        dir.path().join(format!(".uno_config.json.tmp-{dead}-0")),
        b"{",
    )
    .unwrap();
    let alive = format!("step-000009.tmp-{live}");
    fs::create_dir(dir.path().join(&alive)).unwrap();
    assert!(list_checkpoints(dir.path()).unwrap().is_empty());
    let config = test_config(dir.path())
        .with_overrides(&["iterations=2"])
        .unwrap();
    let mut t = Trainer::resume_or_new(config, toy::toy::<Ad>(8, &device), device).unwrap();
    assert_eq!(t.step(), 0, "leftovers are not checkpoints");
    t.fit(&mut ToyData::clean(), None).unwrap();
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["metrics.jsonl", "run.lock", "step-000002", alive.as_str()]
    );
}

/// A run that died after its step-4 checkpoint, during step 6's line: resume cuts
/// metrics.jsonl back to step 4 (and drops the torn line), so every step and evaluation
/// appears once; the evaluation of a checkpoint step precedes the checkpoint.
#[test]
fn metrics_are_cut_back_to_the_checkpoint_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let config = test_config(dir.path())
        .with_overrides(&["iterations=6", "checkpoint.every=2", "metrics.eval_every=2"])
        .unwrap();
    let mut hook =
        |step: u64, _m: &toy::Toy<Ad>, _e: &toy::Toy<Ad>| -> Result<Vec<(String, f64)>, BoxError> {
            Ok(vec![("score".into(), step as f64)])
        };
    let mut t = Trainer::new(config.clone(), toy::toy::<Ad>(9, &device), device).unwrap();
    t.fit(&mut ToyData::clean(), Some(&mut hook)).unwrap();
    let straight = fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    assert_eq!(straight.lines().count(), 9, "6 steps + 3 evaluations");
    drop(t);
    // The crash: the step-6 checkpoint never landed; half of a line was being written.
    fs::remove_dir_all(dir.path().join("step-000006")).unwrap();
    let torn = format!("{}{{\"step\": 7, \"lr\"", straight);
    fs::write(dir.path().join("metrics.jsonl"), torn).unwrap();

    let mut resumed = Trainer::resume_or_new(config, toy::toy::<Ad>(90, &device), device).unwrap();
    assert_eq!(resumed.step(), 4);
    resumed.fit(&mut ToyData::clean(), Some(&mut hook)).unwrap();
    let after = lines(dir.path());
    let steps: Vec<u64> = after
        .iter()
        .filter(|l| l.get("eval").is_none())
        .map(|l| l["step"].as_u64().unwrap())
        .collect();
    let evals: Vec<u64> = after
        .iter()
        .filter(|l| l.get("eval").is_some())
        .map(|l| l["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2, 3, 4, 5, 6]);
    assert_eq!(evals, [2, 4, 6]);
    // Lines before the checkpoint are the first run's, byte for byte.
    let text = fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    let kept: String = straight.lines().take(6).map(|l| format!("{l}\n")).collect();
    assert!(text.starts_with(&kept), "{text}");
}

/// A stop request (what SIGTERM sets) finishes the current step, checkpoints and returns
/// `Interrupted`; the resumed run ends with weights and EMA identical, bit for bit, to an
/// uninterrupted run's (the toy's mpk files embed parameter ids, which differ between
/// models, so the files themselves are compared in the BAGEL test, whose safetensors do
/// not).
#[test]
fn a_stop_request_checkpoints_and_resumes_exactly() {
    let device = Default::default();
    let straight_dir = tempfile::tempdir().unwrap();
    let config = |dir: &Path| {
        test_config(dir)
            .with_overrides(&["iterations=6", "checkpoint.every=4"])
            .unwrap()
    };
    let mut straight = Trainer::new(
        config(straight_dir.path()),
        toy::toy::<Ad>(12, &device),
        device,
    )
    .unwrap();
    straight.fit(&mut ToyData::clean(), None).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let flag = Arc::new(AtomicBool::new(false));
    let mut first = Trainer::new(config(dir.path()), toy::toy::<Ad>(12, &device), device).unwrap();
    first.set_stop_flag(Arc::clone(&flag));
    // The "signal" arrives while step 3 reads its batch (position 2).
    let mut data = ToyData {
        stop: Some((2, flag)),
        ..ToyData::clean()
    };
    let err = first.fit(&mut data, None).unwrap_err();
    let TrainError::Interrupted { step, checkpoint } = &err else {
        panic!("expected Interrupted, got {err}");
    };
    assert_eq!(*step, 3, "the step in progress was finished");
    assert_eq!(checkpoint, &dir.path().join("step-000003"));
    drop(first);

    let mut resumed =
        Trainer::resume_or_new(config(dir.path()), toy::toy::<Ad>(55, &device), device).unwrap();
    assert_eq!(resumed.step(), 3);
    resumed.fit(&mut ToyData::clean(), None).unwrap();
    assert_eq!(toy::all(resumed.model()), toy::all(straight.model()));
    assert_eq!(toy::all(resumed.ema()), toy::all(straight.ema()));
    assert_eq!(resumed.rng_state(), straight.rng_state());
    assert_eq!(resumed.data_position(), straight.data_position());
}
