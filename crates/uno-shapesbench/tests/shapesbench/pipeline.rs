//! The whole benchmark on the micro preset (the tiny model, a handful of steps, one seed,
//! two arms, one prompt per category): every stage runs and leaves its files, the report
//! holds what was judged, and the ground truth scores 100 %.
//!
//! A benchmark that stopped resumes to the report an uninterrupted run writes, without
//! training or judging again what had finished.
//!
//! On the default CPU backend only: it checks the orchestration, whose numerics are
//! uno-core's and tested there on every backend (and on a software GPU it would take
//! minutes of CI).

use burn::backend::{Autodiff, Flex};
use std::path::Path;
use std::time::SystemTime;
use uno_core::data::shapes::Category;

use uno_shapesbench::{
    Arm, BenchError, BenchPreset, BenchReport, StageSettings, resume_benchmark, run_benchmark,
};

type B = Autodiff<Flex>;

/// The report without its wall time, which no two runs share.
fn timeless(r: &BenchReport) -> BenchReport {
    BenchReport {
        wall_time_s: None,
        ..r.clone()
    }
}

#[test]
fn micro_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench");
    let preset = BenchPreset::micro();
    let mut stages = Vec::new();
    let report = run_benchmark::<B>(&preset, &out, &Default::default(), &mut |p| {
        stages.push((p.done, p.total, p.stage))
    })
    .unwrap();
    // Stage 1, two arms under one seed, the report.
    assert_eq!(
        stages.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(),
        [(0, 4), (1, 4), (2, 4), (3, 4)]
    );
    assert_eq!(stages[1].2, "SFT (seed 0)");

    assert_eq!(
        report.rows.iter().map(|r| r.arm).collect::<Vec<_>>(),
        [Arm::Sft, Arm::Joint]
    );
    for run in &report.runs {
        // One prompt per category, one image each.
        for c in Category::ALL {
            assert_eq!(run.scores.per_category[&c].1, 1, "{:?} {c:?}", run.arm);
        }
    }
    assert_eq!(report.ground_truth.overall(), Some(1.0));
    let caption = report.caption.unwrap();
    assert_eq!(caption.captions, preset.caption_scenes);
    assert!(report.wall_time_s.unwrap() > 0.0);

    for file in [
        "init/ema.safetensors",
        "stage1/ema.safetensors",
        "stage1/metrics.jsonl",
        "stage1/captions.json",
        "ground_truth.png",
        "arms/sft/seed-0/metrics.jsonl",
        "arms/sft/seed-0/samples.png",
        "arms/sft/seed-0/alignment.jsonl",
        "arms/joint/seed-0/ema.safetensors",
        "loss_curves.svg",
        "scores.svg",
        "alignment.svg",
        "alignment.jsonl",
        "alignment_training.svg",
        "results.md",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let json = std::fs::read_to_string(out.join("results.json")).unwrap();
    let back: BenchReport = serde_json::from_str(&json).unwrap();
    // serde_json's default float parser may miss the last bit of an arbitrary f64 (the
    // wall time); every other figure here reads back exactly.
    let (wall, back_wall) = (report.wall_time_s.unwrap(), back.wall_time_s.unwrap());
    assert!(
        (wall - back_wall).abs() <= 1e-12 * wall,
        "{wall} vs {back_wall}"
    );
    assert_eq!(timeless(&back), timeless(&report));
    // Start (stage 1) and end, one line per decoder layer each.
    let lines = std::fs::read_to_string(out.join("arms/joint/seed-0/alignment.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 2 * preset.model.layers);
    assert!(lines.contains("\"phase\":\"start\"") && lines.contains("\"phase\":\"end\""));
    // And during training, at each evaluation, also for the arm that trains neither term.
    let metrics = std::fs::read_to_string(out.join("arms/sft/seed-0/metrics.jsonl")).unwrap();
    for layer in 0..preset.model.layers {
        assert!(
            metrics.contains(&format!("\"align_caption_l{layer}\"")),
            "{metrics}"
        );
        assert!(
            metrics.contains(&format!("\"align_visual_l{layer}\"")),
            "{metrics}"
        );
    }

    // A second run never mixes with the first.
    let err = run_benchmark::<B>(&preset, &out, &Default::default(), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
}

#[test]
fn a_stopped_benchmark_resumes_to_the_same_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench");
    let preset = BenchPreset::micro();
    let device = Default::default();
    let straight = run_benchmark::<B>(&preset, &out, &device, &mut |_| {}).unwrap();
    let (sft, joint) = (out.join("arms/sft/seed-0"), out.join("arms/joint/seed-0"));
    let weights = |dir: &Path| std::fs::read(dir.join("ema.safetensors")).unwrap();
    let stage1 = out.join("stage1");
    let (stage1_weights, sft_weights, joint_weights) =
        (weights(&stage1), weights(&sft), weights(&joint));
    let modified = |file: &str| -> SystemTime {
        std::fs::metadata(out.join(file))
            .unwrap()
            .modified()
            .unwrap()
    };
    let metrics = |dir: &Path| std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let steps = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.contains("\"lr\""))
            .map(String::from)
            .collect()
    };
    let joint_steps = steps(&metrics(&joint));
    assert_eq!(joint_steps.len(), 2);
    // What a stop leaves: stage 1 stopped after its checkpoint at step 2 of 3, the joint
    // arm after step 1 of 2 (no final weights, no scores); the SFT arm stopped before its
    // first checkpoint (its run record and metrics, nothing else); no report.
    let remove = |path: &Path| match path.is_dir() {
        true => std::fs::remove_dir_all(path).unwrap(),
        false => std::fs::remove_file(path).unwrap(),
    };
    for file in [
        "step-000002",
        "ema.safetensors",
        "model.safetensors",
        "arm.json",
    ] {
        remove(&joint.join(file));
    }
    for file in [
        "step-000001",
        "step-000002",
        "ema.safetensors",
        "model.safetensors",
        "arm.json",
        "samples.png",
    ] {
        remove(&sft.join(file));
    }
    for file in ["step-000003", "ema.safetensors", "model.safetensors"] {
        remove(&stage1.join(file));
    }
    assert!(sft.join("metrics.jsonl").is_file());
    for file in ["results.json", "results.md", "scores.svg"] {
        remove(&out.join(file));
    }

    let mut stages = Vec::new();
    let resumed =
        resume_benchmark::<B>(&preset, &out, &device, &mut |p| stages.push(p.stage)).unwrap();
    assert_eq!(timeless(&resumed), timeless(&straight));
    // Continued from a checkpoint, or trained again from the start: the same weights.
    assert_eq!(weights(&stage1), stage1_weights);
    assert_eq!(weights(&joint), joint_weights);
    assert_eq!(weights(&sft), sft_weights);
    // The joint arm continued after step 1 (its line, wall time included, is the first
    // run's); the SFT arm started over (its old lines cut: one line per step).
    let (joint_again, sft_again) = (steps(&metrics(&joint)), steps(&metrics(&sft)));
    assert_eq!(joint_again[0], joint_steps[0]);
    assert_ne!(joint_again[1], joint_steps[1]);
    assert_eq!(sft_again.len(), 2);
    for file in [
        "results.json",
        "results.md",
        "scores.svg",
        "arms/sft/seed-0/samples.png",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    assert_eq!(stages.len(), 4, "{stages:?}");

    // More seeds: the finished runs and seed 0's judged arms are kept as they are (not
    // trained or judged again), seed 1's arms are run.
    let kept = [
        "stage1/ema.safetensors",
        "arms/sft/seed-0/ema.safetensors",
        "arms/sft/seed-0/arm.json",
        "arms/joint/seed-0/arm.json",
    ];
    let kept_times: Vec<SystemTime> = kept.iter().map(|f| modified(f)).collect();
    let two_seeds = BenchPreset {
        seeds: vec![0, 1],
        ..preset.clone()
    };
    let extended = resume_benchmark::<B>(&two_seeds, &out, &device, &mut |_| {}).unwrap();
    assert_eq!(
        kept.iter().map(|f| modified(f)).collect::<Vec<_>>(),
        kept_times
    );
    assert_eq!(
        extended
            .runs
            .iter()
            .map(|r| (r.arm, r.seed))
            .collect::<Vec<_>>(),
        [
            (Arm::Sft, 0),
            (Arm::Joint, 0),
            (Arm::Sft, 1),
            (Arm::Joint, 1)
        ]
    );
    assert_eq!(&extended.runs[..2], &straight.runs[..]);

    // Another preset is refused, naming what differs; so is a folder with no benchmark.
    let longer = BenchPreset {
        stage2: StageSettings {
            iterations: 3,
            ..preset.stage2.clone()
        },
        ..preset.clone()
    };
    let err = resume_benchmark::<B>(&longer, &out, &device, &mut |_| {}).unwrap_err();
    assert!(
        matches!(&err, BenchError::PresetChanged { fields, .. } if fields == &["stage2"]),
        "{err}"
    );
    let empty = dir.path().join("nothing");
    let err = resume_benchmark::<B>(&preset, &empty, &device, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("no benchmark to resume"), "{err}");
}
