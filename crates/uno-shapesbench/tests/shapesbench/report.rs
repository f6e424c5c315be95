//! The report's mean, standard deviation and table on hand-made scores; the expected
//! figures are worked out by hand in the comments.

use uno_core::data::shapes::{BenchScores, Category};
use uno_shapesbench::{Arm, ArmScores, BenchReport, Spread};

fn scores(entries: &[(Category, usize, usize)]) -> BenchScores {
    let mut s = BenchScores::default();
    for &(category, correct, judged) in entries {
        s.per_category.insert(category, (correct, judged));
    }
    s
}

fn run(arm: Arm, seed: u64, entries: &[(Category, usize, usize)]) -> ArmScores {
    ArmScores {
        arm,
        seed,
        scores: scores(entries),
        non_finite: 0,
    }
}

#[test]
fn spread_is_mean_and_sample_std() {
    // mean 2, squared deviations 1 + 0 + 1 = 2, over n - 1 = 2: std 1.
    assert_eq!(
        Spread::of(&[1.0, 2.0, 3.0]),
        Some(Spread {
            mean: 2.0,
            std: 1.0,
            n: 3
        })
    );
    assert_eq!(
        Spread::of(&[0.4]).map(|s| (s.mean, s.std)),
        Some((0.4, 0.0))
    );
    assert_eq!(Spread::of(&[]), None);
}

#[test]
fn rows_aggregate_seeds_per_arm_and_the_table_shows_them() {
    use Category::{Colors, SingleObject};
    let runs = vec![
        // Joint is listed first but reported after SFT (Arm::ALL order).
        run(Arm::Joint, 0, &[(SingleObject, 2, 2), (Colors, 2, 2)]),
        // SFT seed 0: 0.5 and 1.0, overall 0.75; seed 1: 0.0 and 0.5, overall 0.25.
        run(Arm::Sft, 0, &[(SingleObject, 1, 2), (Colors, 2, 2)]),
        run(Arm::Sft, 1, &[(SingleObject, 0, 2), (Colors, 1, 2)]),
    ];
    let ground_truth = scores(&[(SingleObject, 4, 4), (Colors, 3, 4)]);
    let report = BenchReport::new("hand", ground_truth, None, runs);
    assert_eq!(
        report.rows.iter().map(|r| r.arm).collect::<Vec<_>>(),
        [Arm::Sft, Arm::Joint]
    );
    let sft = &report.rows[0];
    // Two values 0.25 apart from their mean: std = sqrt(2 * 0.25^2 / 1) = 0.35355.
    let std = (2.0f64 * 0.25 * 0.25).sqrt();
    let single = sft.per_category[&SingleObject];
    assert!((single.mean - 0.25).abs() < 1e-12 && (single.std - std).abs() < 1e-12);
    let colors = sft.per_category[&Colors];
    assert!((colors.mean - 0.75).abs() < 1e-12 && (colors.std - std).abs() < 1e-12);
    assert!((sft.overall.mean - 0.5).abs() < 1e-12 && (sft.overall.std - std).abs() < 1e-12);
    assert_eq!(sft.overall.n, 2);
    assert_eq!(
        (report.rows[1].overall.mean, report.rows[1].overall.std),
        (1.0, 0.0)
    );

    let table = report.to_markdown();
    assert!(
        table.contains("| ground truth (judge) | 100.0 | - | - | 75.0 | - | - | 87.5 |"),
        "{table}"
    );
    assert!(
        table.contains("| SFT | 25.0 ± 35.4 | - | - | 75.0 ± 35.4 | - | - | 50.0 ± 35.4 |"),
        "{table}"
    );
    assert!(
        table.contains("| joint (UNO) | 100.0 ± 0.0 | - | - | 100.0 ± 0.0 | - | - | 100.0 ± 0.0 |"),
        "{table}"
    );
    assert!(table.contains("over 2 seed(s)"), "{table}");

    let json: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
    assert_eq!(json["rows"][0]["arm"], "sft");
    assert_eq!(json["rows"][0]["overall"]["mean"], 0.5);
    let back: BenchReport = serde_json::from_value(json).unwrap();
    assert_eq!(back, report);
}
