//! The whole benchmark on the micro preset (the tiny model, a handful of steps, one seed,
//! two arms, one prompt per category): every stage runs and leaves its files, the report
//! holds what was judged, and the ground truth scores 100 %.
//!
//! On the default CPU backend only: it checks the orchestration, whose numerics are
//! uno-core's and tested there on every backend (and on a software GPU it would take
//! minutes of CI).

use burn::backend::{Autodiff, Flex};
use uno_core::data::shapes::Category;
use uno_shapesbench::{Arm, BenchPreset, BenchReport, run_benchmark};

#[test]
fn micro_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench");
    let preset = BenchPreset::micro();
    let mut stages = Vec::new();
    let report = run_benchmark::<Autodiff<Flex>>(&preset, &out, &Default::default(), &mut |p| {
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
    let timeless = |r: &BenchReport| BenchReport {
        wall_time_s: None,
        ..r.clone()
    };
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
    let err = run_benchmark::<Autodiff<Flex>>(&preset, &out, &Default::default(), &mut |_| {})
        .unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
}
