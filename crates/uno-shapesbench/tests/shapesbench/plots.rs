//! The plots write SVG files that carry their series, read from hand-written metrics.

use uno_core::data::shapes::{BenchScores, Category};
use uno_core::train::{LayerAlignment, TermAlignment};
use uno_shapesbench::{
    AlignmentRecord, Arm, ArmScores, BenchReport, Phase, Series, alignment_series, metric_series,
    plot_alignment, plot_alignment_training, plot_loss_curves, plot_scores, training_alignment,
};

#[test]
fn metric_series_reads_loss_components_and_eval_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    std::fs::write(
        &path,
        concat!(
            r#"{"step":1,"lr":0.1,"loss":2.5,"components":{"flow":2.0,"caption":5.0}}"#,
            "\n",
            r#"{"step":2,"lr":0.1,"loss":null,"components":{"flow":1.5}}"#,
            "\n",
            r#"{"step":2,"eval":{"eval_flow":1.75}}"#,
            "\n",
        ),
    )
    .unwrap();
    assert_eq!(metric_series(&path, "loss").unwrap(), [(1.0, 2.5)]);
    assert_eq!(
        metric_series(&path, "flow").unwrap(),
        [(1.0, 2.0), (2.0, 1.5)]
    );
    assert_eq!(metric_series(&path, "eval_flow").unwrap(), [(2.0, 1.75)]);
    std::fs::write(&path, "{\"step\":1}\nnot json\n").unwrap();
    let err = metric_series(&path, "loss").unwrap_err();
    assert!(err.to_string().contains(":2:"), "{err}");
}

/// The cosines logged at evaluations, averaged over layers by hand: step 2 (0.5 + 0.25) /
/// 2; step 4 (-0.5 + 0.0) / 2; a step where one layer's cosine is missing is left out.
#[test]
fn training_alignment_averages_the_layers_per_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    std::fs::write(
        &path,
        concat!(
            r#"{"step":1,"lr":0.1,"loss":2.5,"components":{"flow":2.0}}"#,
            "\n",
            r#"{"step":2,"eval":{"align_caption_l0":0.5,"align_caption_l1":0.25,"align_visual_l0":0.1}}"#,
            "\n",
            r#"{"step":4,"eval":{"align_caption_l0":-0.5,"align_caption_l1":0.0,"align_visual_l0":0.3,"align_visual_l1":0.5}}"#,
            "\n",
        ),
    )
    .unwrap();
    let series = training_alignment(&path, "joint").unwrap();
    assert_eq!(
        series,
        [
            Series {
                label: "joint: caption".into(),
                points: vec![(2.0, 0.375), (4.0, -0.25)],
            },
            Series {
                label: "joint: visual".into(),
                points: vec![(4.0, 0.4)],
            },
        ]
    );
    let svg = dir.path().join("during.svg");
    plot_alignment_training(&series, &svg).unwrap();
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("joint: caption") && text.contains("during training"));
    std::fs::write(&path, "{\"step\":1,\"loss\":1.0}\n").unwrap();
    assert!(training_alignment(&path, "sft").unwrap().is_empty());
}

#[test]
fn plots_are_svg_with_their_series() {
    let dir = tempfile::tempdir().unwrap();
    let curves = [
        Series {
            label: "SFT (seed 0)".into(),
            points: vec![(1.0, 1.0), (2.0, 0.5), (3.0, 0.25)],
        },
        Series {
            label: "joint (UNO) (seed 0)".into(),
            points: vec![(1.0, 1.2), (2.0, 0.0), (3.0, 0.3)],
        },
    ];
    let loss = dir.path().join("loss.svg");
    plot_loss_curves(&curves, "losses", &loss).unwrap();
    let svg = std::fs::read_to_string(&loss).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
    for label in ["SFT (seed 0)", "joint (UNO) (seed 0)", "log10 loss"] {
        assert!(svg.contains(label), "{label} missing");
    }

    let mut scores = BenchScores::default();
    scores.record(Category::Colors, true);
    let report = BenchReport::new(
        "hand",
        scores.clone(),
        None,
        vec![ArmScores {
            arm: Arm::Visual,
            seed: 0,
            scores,
            non_finite: 0,
        }],
    );
    let bars = dir.path().join("scores.svg");
    plot_scores(&report, &bars).unwrap();
    let svg = std::fs::read_to_string(&bars).unwrap();
    for label in [
        "+ visual",
        "ground truth (judge)",
        "overall (mean over seeds)",
    ] {
        assert!(svg.contains(label), "{label} missing");
    }

    let layer = |layer, cosine| LayerAlignment {
        layer,
        flow_norm: 1.0,
        caption: Some(TermAlignment { cosine, norm: 0.5 }),
        visual: None,
    };
    let records: Vec<AlignmentRecord> = [(0, Some(0.5)), (1, Some(-0.25))]
        .into_iter()
        .map(|(l, c)| AlignmentRecord {
            arm: Some(Arm::Joint),
            seed: Some(1),
            phase: Phase::End,
            layer: layer(l, c),
        })
        .collect();
    let series = alignment_series(&records);
    // No visual term: one line, the caption cosines per layer.
    assert_eq!(
        series,
        [Series {
            label: "joint (UNO) (seed 1): caption".into(),
            points: vec![(0.0, 0.5), (1.0, -0.25)],
        }]
    );
    let cosines = dir.path().join("alignment.svg");
    plot_alignment(&series, &cosines).unwrap();
    let svg = std::fs::read_to_string(&cosines).unwrap();
    assert!(svg.contains("joint (UNO) (seed 1): caption"));
}
